"""The default classifier: input layer -> spiking hidden layer -> LI readout, and its losses.

``Classifier(n_in, n_classes, cfg)`` maps static features (B, F) or input sequences
(T, B, F) to the readout membrane (T, B, C). Static features under ``Encoding.CURRENT``
are projected once and held as a constant current for ``cfg.steps`` steps; under
``Encoding.LATENCY`` they become one spike each, which reach the hidden neurons through
current-based synapses (``cfg.input_tau``).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import neurons
from .. import nn as snn
from .. import surrogate as sg
from .config import ConfigError, Encoding, Loss, TrainConfig, neuron_kwargs

__all__ = ["Classifier", "latency_encode", "synaptic_trace", "loss_and_logits", "make_surrogate"]


def make_surrogate(name: str, alpha: float | None) -> sg.Surrogate:
    cls = getattr(sg, name, None)
    if not (isinstance(cls, type) and issubclass(cls, sg.Surrogate)) or cls is sg.Surrogate:
        choices = ", ".join(c.__name__ for c in sg.BUILTIN)
        raise ConfigError(f"unknown surrogate {name!r}; choose one of {choices}")
    try:
        return cls() if alpha is None else cls(alpha=alpha)
    except ValueError as e:
        raise ConfigError(str(e)) from e


def latency_encode(x: Tensor, steps: int) -> Tensor:
    """Features in [0, 1] (B, F) to spikes (T, B, F + 1): feature ``v`` spikes once at step
    ``round((1 - v) * (3T/4 - 1))`` (larger is earlier); the extra channel is a bias spike at
    step 0. The last quarter of the window leaves time for the answer."""
    last = max(3 * steps // 4 - 1, 0)
    t = torch.round((1.0 - x.clamp(0.0, 1.0)) * last).long()
    t = torch.cat([t, torch.zeros_like(t[:, :1])], dim=1)
    out = torch.zeros(steps, *t.shape, dtype=x.dtype, device=x.device)
    return out.scatter_(0, t.unsqueeze(0), 1.0)


def synaptic_trace(s: Tensor, tau: float | None) -> Tensor:
    """Input spikes (T, B, F) through current-based synapses: ``i_t = a * i_{t-1} + s_t`` with
    ``a = exp(-1/tau)``; ``tau=None``: the synapses do not decay (each spike adds a step current)."""
    if tau is None:
        return torch.cumsum(s, dim=0)
    a, i, out = math.exp(-1.0 / tau), torch.zeros_like(s[0]), []
    for s_t in s.unbind(0):
        i = a * i + s_t
        out.append(i)
    return torch.stack(out)


class Classifier(nn.Module):
    """``fc_in -> hidden neurons -> fc_out -> LI``; ``forward`` returns the readout
    membrane (T, B, C) and, with ``return_spikes=True``, the hidden spikes (T, B, H)."""

    def __init__(self, n_in: int, n_classes: int, cfg: TrainConfig) -> None:
        super().__init__()
        if cfg.neuron not in neurons.REGISTRY or not neurons.REGISTRY[cfg.neuron].spiking:
            names = ", ".join(n for n, s in neurons.REGISTRY.items() if s.spiking)
            raise ConfigError(f"unknown spiking neuron {cfg.neuron!r}; choose one of {names}")
        self.steps, self.encoding, self.input_tau = cfg.steps, cfg.encoding, cfg.input_tau
        extra = 1 if cfg.encoding is Encoding.LATENCY else 0
        self.fc_in = nn.Linear(n_in + extra, cfg.hidden)
        kw = neuron_kwargs(cfg)
        options = neurons.REGISTRY[cfg.neuron].options()
        kw.update({k: getattr(cfg, k) for k in ("reset", "detach_reset") if k in options})
        surrogate = make_surrogate(cfg.surrogate, cfg.surrogate_alpha)
        try:
            self.hidden = snn.MODULES[cfg.neuron](surrogate=surrogate, backend=cfg.backend, **kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"neuron {cfg.neuron} with {kw}: {e}") from e
        self.fc_out = nn.Linear(cfg.hidden, n_classes)
        self.readout = snn.LI(tau=cfg.tau_out, backend=cfg.backend)
        with torch.no_grad():
            self.fc_in.weight.mul_(cfg.input_scale)
            self.fc_in.bias.mul_(cfg.input_scale)

    def current(self, x: Tensor) -> Tensor:
        """The hidden layer's input current (T, B, H)."""
        if x.dim() == 3:                           # a sequence already (events)
            return self.fc_in(x)
        if self.encoding is Encoding.LATENCY:
            return self.fc_in(synaptic_trace(latency_encode(x, self.steps), self.input_tau))
        i = self.fc_in(x)
        return i.expand(self.steps, *i.shape)      # constant current: project once

    def forward(self, x: Tensor, return_spikes: bool = False):
        z = self.hidden(self.current(x))
        v = self.readout(self.fc_out(z))
        return (v, z) if return_spikes else v


def loss_and_logits(v: Tensor, target: Tensor, loss: Loss) -> tuple[Tensor, Tensor]:
    """The loss of readout membranes ``v`` (T, B, C) and the logits used for prediction."""
    if loss is Loss.MAX_MEMBRANE:
        logits = v.amax(0)
        return nn.functional.cross_entropy(logits, target), logits
    # first spike: the readout "fires" when its membrane first reaches 1; the number of steps
    # before that (T if never) is differentiable through the surrogate of each crossing.
    z = sg.spike(v - 1.0, _FIRST_SPIKE_SURROGATE)
    waiting = torch.cumprod(1.0 - z, dim=0).sum(0)
    logits = -waiting
    tie_break = 1e-3 * v.detach().amax(0)          # among equal times, the larger membrane wins
    return nn.functional.cross_entropy(logits, target), logits + tie_break


_FIRST_SPIKE_SURROGATE = sg.ATan()
