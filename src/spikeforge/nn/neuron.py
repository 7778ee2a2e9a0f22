"""Stateful neuron modules, one per registered spec, all built by ``neuron_module``.

``module(x)`` on (T, B, ...) returns the output sequence and starts from rest unless
``carry_state=True``; ``module.step(x_t)`` advances one step and always carries the state
(streaming); ``module.reset()`` or ``spikeforge.reset(net)`` returns to rest.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import functional as F
from ..neurons import REGISTRY, NeuronSpec
from ..surrogate import Surrogate

__all__ = ["Neuron", "neuron_module"]


class Neuron(nn.Module):
    """A layer of neurons of one spec. Keyword arguments: the spec's options (e.g.
    ``reset=Reset.SOFT``), its parameters (scalar or per-neuron tensors), ``learn_<param>``
    flags, ``surrogate``, ``backend`` (``None`` = automatic), ``record`` (keep the per-step
    states in ``.trace``) and ``carry_state``."""

    spec_type: type[NeuronSpec] = NeuronSpec

    def __init__(self, *, surrogate: Surrogate | None = None, backend: str | None = None,
                 record: bool = False, carry_state: bool = False, **kw) -> None:
        super().__init__()
        options, values, learn = F.split_kwargs(self.spec_type, kw)
        self.spec = self.spec_type(**options)
        self.surrogate = F.DEFAULT_SURROGATE if surrogate is None else surrogate
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {surrogate!r}")
        self.backend, self.record, self.carry_state = backend, record, carry_state
        params = F.make_params(self.spec, values, dtype=torch.get_default_dtype())
        for (name, p), t in zip(self.spec_type.params.items(), params):
            t = t.detach().clone()
            if learn.get(name, p.learnable):
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self.state = None          # carried state (a State tuple) or None = rest
        self.trace = None          # per-step states of the last call when record=True
        self.last_backend = None   # name of the backend that ran the last sequence

    def params(self) -> tuple:
        return self.spec_type.Params()(*(getattr(self, n) for n in self.spec_type.params))

    def forward(self, x: Tensor) -> Tensor:
        state = self.state if self.carry_state else None
        z, s, trace, self.last_backend = F.run(self.spec, x, state, self.params(), surrogate=self.surrogate,
                                               backend=self.backend, record=self.record)
        if self.carry_state:
            self.state = s
        self.trace = trace
        return z

    def step(self, x: Tensor) -> Tensor:
        """One time step on (B, ...); the state is carried to the next call."""
        z, self.state = F.step(self.spec, x, self.state, self.params(), surrogate=self.surrogate)
        return z

    def reset(self) -> None:
        self.state = None
        self.trace = None

    def detach_state(self) -> None:
        """Cut the graph through the carried state (truncated BPTT)."""
        if self.state is not None:
            self.state = type(self.state)(*(s.detach() for s in self.state))

    def extra_repr(self) -> str:
        ps = ", ".join(f"{n}={_short(getattr(self, n))}" for n in self.spec_type.params)
        return f"{self.spec.key()}, {ps}, surrogate={self.surrogate!r}"


def _short(t: Tensor) -> str:
    return f"{t.item():.4g}" if t.numel() == 1 else f"tensor{tuple(t.shape)}"


def neuron_module(spec_type: type[NeuronSpec]) -> type[Neuron]:
    """The module class for a spec (named like the spec, docstring from the spec)."""
    return type(spec_type.__name__, (Neuron,), {
        "spec_type": spec_type, "__doc__": spec_type.__doc__, "__module__": __name__,
    })


MODULES: dict[str, type[Neuron]] = {name: neuron_module(cls) for name, cls in REGISTRY.items()}
