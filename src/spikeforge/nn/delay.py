"""Integer synaptic delays on time-first sequences ``(T, B, ...)``.

A delay of ``d`` steps moves a signal later in time: ``y[t] = x[t - d]``, zeros for
``t < d``; the sequence keeps its length, so whatever is shifted past the last step is
dropped. Delays are integer buffers (not trained).
"""
from __future__ import annotations

import enum
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .stream import detached_dict

__all__ = ["DelayPer", "Delay", "shift", "delay", "delayed_linear"]


class DelayPer(enum.Enum):
    """What carries its own delay."""

    NEURON = "neuron"     # one delay per channel (axonal delay)
    SYNAPSE = "synapse"   # one delay per weight of a linear map (dendritic/synaptic delay)


def _check_delays(delays, name: str = "delays", max_delay: int | None = None) -> Tensor:
    if not isinstance(delays, Tensor) or delays.is_floating_point() or delays.is_complex() \
            or delays.dtype == torch.bool:
        got = delays.dtype if isinstance(delays, Tensor) else type(delays).__name__
        raise TypeError(f"{name} must be an integer tensor, got {got}")
    if delays.numel() and int(delays.min()) < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {int(delays.min())}")
    if max_delay is not None and delays.numel() and int(delays.max()) > max_delay:
        raise ValueError(f"{name} must be <= max_delay={max_delay}, got a maximum of {int(delays.max())}")
    return delays


def shift(x: Tensor, steps: int) -> Tensor:
    """Delay a whole sequence ``(T, ...)`` by ``steps >= 0``: zeros first, same length."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if steps == 0:
        return x
    if steps >= x.shape[0]:
        return torch.zeros_like(x)
    return torch.cat((x.new_zeros((steps,) + x.shape[1:]), x[:-steps]))


def delay(x: Tensor, delays: Tensor) -> Tensor:
    """Per-neuron delays: ``y[t, b, ..., n] = x[t - delays[..., n], b, ..., n]``, with
    ``delays`` an integer tensor that broadcasts to ``x.shape[2:]``."""
    _check_delays(delays)
    if x.dim() < 2:
        raise ValueError(f"x must have shape (T, B, ...), got shape {tuple(x.shape)}")
    feats = tuple(x.shape[2:])
    try:
        ok = delays.dim() <= len(feats) and torch.broadcast_shapes(delays.shape, feats) == feats
    except RuntimeError:
        ok = False
    if not ok:
        raise ValueError(f"delays of shape {tuple(delays.shape)} must broadcast to the feature shape {feats} "
                         f"of x {tuple(x.shape)}")
    delays = delays.to(x.device)
    top = int(delays.max()) if delays.numel() else 0
    steps, rest = x.shape[0], x.dim() - 1
    padded = torch.cat((x.new_zeros((top,) + x.shape[1:]), x))
    t = torch.arange(steps, device=x.device).view(steps, *([1] * rest))
    index = (t + top - delays.view((1, 1) + tuple(delays.shape))).expand(x.shape)
    return padded.gather(0, index)


def delayed_linear(x: Tensor, weight: Tensor, delays: Tensor, bias: Tensor | None = None) -> Tensor:
    """Linear map with a delay per synapse: ``y[t, b, j] = sum_i weight[j, i] *
    x[t - delays[j, i], b, i] + bias[j]`` for ``x`` of shape ``(T, B, in)``. Costs one
    matrix product per distinct delay value."""
    _check_delays(delays)
    if delays.shape != weight.shape:
        raise ValueError(f"delays must have the weight's shape {tuple(weight.shape)}, got {tuple(delays.shape)}")
    y = None
    for d in torch.unique(delays).tolist():
        part = F.linear(shift(x, int(d)), weight * (delays == d).to(weight.dtype))
        y = part if y is None else y + part
    return y if bias is None else y + bias


class Delay(nn.Module):
    """Integer delays of up to ``max_delay`` steps.

    ``per=DelayPer.NEURON``: each of ``num_neurons`` channels (the last dim) is shifted by
    its own delay; no weights. ``per=DelayPer.SYNAPSE``: a ``Linear(num_neurons,
    out_features)`` whose every weight has its own delay (``bias`` used only here).
    ``delays`` (an integer tensor of shape ``(num_neurons,)`` or ``(out_features,
    num_neurons)``) defaults to values drawn uniformly from ``0..max_delay`` with
    ``generator``.
    """

    def __init__(self, max_delay: int, num_neurons: int, *, per: DelayPer = DelayPer.NEURON,
                 out_features: int | None = None, bias: bool = True, delays: Tensor | None = None,
                 generator: torch.Generator | None = None, batch_first: bool = False) -> None:
        super().__init__()
        if not isinstance(batch_first, bool):
            raise TypeError(f"batch_first must be True or False, got {batch_first!r}")
        self.batch_first = batch_first
        self.history: Tensor | None = None   # the last max_delay + 1 step inputs, newest first (step)
        for name, v, low in (("max_delay", max_delay, 0), ("num_neurons", num_neurons, 1)):
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name} must be an int >= {low}, got {v!r}")
        if not isinstance(per, DelayPer):
            raise TypeError(f"per must be DelayPer.NEURON or DelayPer.SYNAPSE, got {per!r}")
        self.max_delay, self.per = max_delay, per
        shape = self._shape(num_neurons, out_features)
        if delays is None:
            delays = torch.randint(0, max_delay + 1, shape, generator=generator)
        _check_delays(delays, max_delay=max_delay)
        if tuple(delays.shape) != shape:
            raise ValueError(f"delays must have shape {shape}, got {tuple(delays.shape)}")
        self.register_buffer("delays", delays.to(torch.long).clone())
        if per is DelayPer.SYNAPSE:
            self.weight = nn.Parameter(torch.empty(shape))
            self.bias = nn.Parameter(torch.empty(shape[0])) if bias else None
            self._init_weights(num_neurons)

    def _shape(self, num_neurons: int, out_features: int | None) -> tuple[int, ...]:
        if self.per is DelayPer.NEURON:
            if out_features is not None:
                raise ValueError(f"out_features is only used with per=DelayPer.SYNAPSE, got {out_features!r}")
            return (num_neurons,)
        if isinstance(out_features, bool) or not isinstance(out_features, int) or out_features < 1:
            raise ValueError(f"out_features must be an int >= 1 with per=DelayPer.SYNAPSE, got {out_features!r}")
        return (out_features, num_neurons)

    def _init_weights(self, fan_in: int) -> None:
        bound = 1.0 / math.sqrt(fan_in)
        nn.init.uniform_(self.weight, -bound, bound)
        if self.bias is not None:
            nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: Tensor) -> Tensor:
        if self.batch_first and x.dim() >= 2:
            return self._sequence(x.transpose(0, 1)).transpose(0, 1)
        return self._sequence(x)

    def _sequence(self, x: Tensor) -> Tensor:
        if self.per is DelayPer.NEURON:
            return delay(x, self.delays)
        return delayed_linear(x, self.weight, self.delays, self.bias)

    def step(self, x: Tensor) -> Tensor:
        """One step ``(B, ..., num_neurons)``: the inputs of the last ``max_delay`` steps are
        kept in ``history`` (from zeros after ``reset()``), so a stream of steps equals the
        sequence call."""
        for hook in self.__dict__.get("_pre_step_hooks", {}).values():
            hook(self, x)
        if self.history is None:
            self.history = x.new_zeros((self.max_delay + 1, *x.shape))
        elif self.history.shape[1:] != x.shape:
            raise ValueError(f"Delay.step: x has shape {tuple(x.shape)} but the stream so far had "
                             f"{tuple(self.history.shape[1:])}; call reset() before a stream of another shape")
        self.history = torch.cat((x.unsqueeze(0), self.history[:-1]))
        if self.per is DelayPer.NEURON:
            index = self.delays.to(x.device).expand(x.shape).unsqueeze(0)
            return self.history.gather(0, index)[0]
        y = None
        for d in torch.unique(self.delays).tolist():
            part = F.linear(self.history[int(d)], self.weight * (self.delays == d).to(self.weight.dtype))
            y = part if y is None else y + part
        return y if self.bias is None else y + self.bias

    def reset(self) -> None:
        self.history = None

    def __getstate__(self):
        return detached_dict(self, "history")

    def extra_repr(self) -> str:
        return f"max_delay={self.max_delay}, per={self.per.name}, delays={tuple(self.delays.shape)}"
