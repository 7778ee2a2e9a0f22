"""Lateral inhibition among the neurons of one layer (winner-take-all competition).

``LateralInhibition(neuron, strength)`` wraps a neuron layer (any ``spikeforge.nn.Neuron``)
and feeds back, one step late, the spikes of the *other* neurons of the same group as an
inhibitory current:

``i_t = x_t - strength * (sum_k z_{t-1}[k] - z_{t-1}[i])``  (``self_inhibition=False``)

The group is the last dimension (the features of a Linear layer; pass ``(T, B, C, H, W)``
to a convolution's neurons and the group is the width only, so flatten first). This is
the direct form of Diehl & Cook's (2015) excitatory-inhibitory pair: each excitatory spike
excites its inhibitory partner, which inhibits every other excitatory neuron; here the
inhibitory population is folded into a fixed ``-strength`` weight with a delay of one
step. The layer runs step by step (the inhibition needs the previous step's spikes), on
the wrapped neuron's ``step`` and backend. ``sf.learning.attach`` learns the synapse that
feeds it (it hooks this layer, and reads membranes from ``.neuron``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .neuron import Neuron

__all__ = ["LateralInhibition"]


class LateralInhibition(nn.Module):
    """``LateralInhibition(neuron, strength, self_inhibition=False, carry_state=False)``.

    ``neuron``: the wrapped layer (its parameters and options are used as they are);
    ``strength`` >= 0: the inhibitory current per spike of another neuron (in the unit of
    the neuron's input); ``self_inhibition=True`` also inhibits the neuron that fired.
    ``forward(x)`` on ``(T, B, ..., n)`` returns the spikes ``(T, B, ..., n)``, starting from
    rest unless ``carry_state``; ``step(x_t)`` advances one step (streaming)."""

    batch_first = False

    def __init__(self, neuron: Neuron, strength: float, *, self_inhibition: bool = False,
                 carry_state: bool = False) -> None:
        super().__init__()
        if not isinstance(neuron, Neuron) or not neuron.spec_type.spiking:
            raise TypeError(f"neuron must be a spiking spikeforge.nn.Neuron layer (e.g. LIF()), got {neuron!r}")
        if neuron.batch_first or neuron.carry_state:
            raise ValueError("neuron: give LateralInhibition a neuron with batch_first=False and carry_state=False "
                             "(set carry_state on LateralInhibition instead)")
        ok = isinstance(strength, (int, float)) and not isinstance(strength, bool) and math.isfinite(strength)
        if not ok or strength < 0:
            raise ValueError(f"strength must be a non-negative finite number, got {strength!r}")
        for name, flag in (("self_inhibition", self_inhibition), ("carry_state", carry_state)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.neuron, self.strength = neuron, float(strength)
        self.self_inhibition, self.carry_state = self_inhibition, carry_state
        self.last_spikes: Tensor | None = None   # z_{t-1} of the stream (None = rest)

    @property
    def state(self):
        """The wrapped neuron's state (``None`` at rest)."""
        return self.neuron.state

    @property
    def _step_hooks(self) -> dict:
        return self.__dict__.setdefault("_step_hooks_dict", {})

    def _inhibition(self, z: Tensor) -> Tensor:
        total = z.sum(-1, keepdim=True)
        return self.strength * (total if self.self_inhibition else total - z)

    def _advance(self, x: Tensor) -> Tensor:
        if self.last_spikes is not None and self.last_spikes.shape != x.shape:
            raise ValueError(f"LateralInhibition: x_t has shape {tuple(x.shape)} but the stream's last spikes have "
                             f"{tuple(self.last_spikes.shape)}; call reset() before a stream of another shape")
        i = x if self.last_spikes is None or self.strength == 0 else x - self._inhibition(self.last_spikes)
        z = self.neuron.step(i)
        self.last_spikes = z
        return z

    def forward(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x must be a (T, B, ..., n) tensor, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        if not self.carry_state:
            self.reset()
        self.neuron.trace = None
        return torch.stack([self._advance(x[t]) for t in range(x.shape[0])])

    def step(self, x: Tensor) -> Tensor:
        new_stream = self.neuron.state is None
        z = self._advance(x)
        for hook in self._step_hooks.values():
            hook(self, x, z, new_stream)
        return z

    def reset(self) -> None:
        self.neuron.reset()
        self.last_spikes = None

    def __getstate__(self):
        """For pickle and deepcopy: the last spikes detached, the learners' step hooks not copied."""
        d = dict(self.__dict__)
        d.pop("_step_hooks_dict", None)
        if d.get("last_spikes") is not None:
            d["last_spikes"] = d["last_spikes"].detach()
        return d

    def extra_repr(self) -> str:
        return f"strength={self.strength:g}, self_inhibition={self.self_inhibition}"
