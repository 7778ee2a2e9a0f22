"""Synaptic delays on time-first sequences ``(T, B, ...)``: integer, or learned.

A delay of ``d`` steps moves a signal later in time: ``y[t] = x[t - d]``, zeros for
``t < d``; the sequence keeps its length, so whatever is shifted past the last step is
dropped. Integer delays are buffers. Learned delays (``Delay(..., learn_delays=True)``) are
real numbers in ``[0, max_delay]`` read through an interpolation kernel over the integer
delays ``0..max_delay`` while training (linear: ``y = (1 - f) x[t - lo] + f x[t - lo - 1]``
with ``lo = floor(d)``, ``f = d - lo``; Gaussian: weights ``softmax_k(-(k - d)^2 / (2
sigma^2))``, as in DCLS, Hammouamri et al. 2023), and rounded to whole steps in ``eval()``.
"""
from __future__ import annotations

import enum
import math

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .stream import detached_dict

__all__ = ["DelayPer", "DelayInterpolation", "Delay", "shift", "delay", "delayed_linear", "delay_kernel"]


class DelayPer(enum.Enum):
    """What carries its own delay."""

    NEURON = "neuron"     # one delay per channel (axonal delay)
    SYNAPSE = "synapse"   # one delay per weight of a linear map (dendritic/synaptic delay)


class DelayInterpolation(enum.Enum):
    """How a real-valued delay reads the integer delays around it (see ``delay_kernel``)."""

    LINEAR = "linear"       # the two neighbouring steps, weights 1 - f and f
    GAUSSIAN = "gaussian"   # every step 0..max_delay, a normalised Gaussian of width sigma


def _check_delays(delays, name: str = "delays", max_delay: int | None = None, real: bool = False) -> Tensor:
    if not isinstance(delays, Tensor) or delays.is_complex() or delays.dtype == torch.bool \
            or (delays.is_floating_point() and not real):
        got = delays.dtype if isinstance(delays, Tensor) else type(delays).__name__
        kind = "a real (floating or integer) tensor" if real else "an integer tensor"
        raise TypeError(f"{name} must be {kind}, got {got}")
    if delays.is_floating_point() and not bool(torch.isfinite(delays).all()):
        raise ValueError(f"{name} must be finite, got {delays[~torch.isfinite(delays)].flatten()[0].item()}")
    if delays.numel() and delays.min().item() < 0:
        raise ValueError(f"{name} must be >= 0, got a minimum of {delays.min().item()}")
    if max_delay is not None and delays.numel() and delays.max().item() > max_delay:
        raise ValueError(f"{name} must be <= max_delay={max_delay}, got a maximum of {delays.max().item()}")
    return delays


def _check_max_delay(max_delay, low: int = 0) -> int:
    if isinstance(max_delay, bool) or not isinstance(max_delay, int) or max_delay < low:
        raise ValueError(f"max_delay must be an int >= {low}, got {max_delay!r}")
    return max_delay


def _check_sigma(sigma) -> float:
    if isinstance(sigma, bool) or not isinstance(sigma, (int, float)) or not math.isfinite(sigma) or sigma <= 0:
        raise ValueError(f"sigma must be a finite number > 0 (the Gaussian kernel's width in steps), got {sigma!r}")
    return float(sigma)


def shift(x: Tensor, steps: int) -> Tensor:
    """Delay a whole sequence ``(T, ...)`` by ``steps >= 0``: zeros first, same length."""
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 0:
        raise ValueError(f"steps must be an int >= 0, got {steps!r}")
    if steps == 0:
        return x
    if steps >= x.shape[0]:
        return torch.zeros_like(x)
    return torch.cat((x.new_zeros((steps,) + x.shape[1:]), x[:-steps]))


def delay_kernel(delays: Tensor, max_delay: int, interpolation: DelayInterpolation = DelayInterpolation.LINEAR,
                 sigma: float = 1.0) -> Tensor:
    """Weights ``(*delays.shape, max_delay + 1)`` of each integer delay ``0..max_delay`` for the
    real ``delays`` (in ``[0, max_delay]``): a delay reads ``sum_k w[k] x[t - k]``. Linear: ``1 - f``
    at ``lo = floor(d)`` and ``f = d - lo`` at ``lo + 1`` (at ``d = max_delay``, ``lo = max_delay - 1``,
    ``f = 1``), so whole delays give one-hot weights and the derivative in ``d`` is the one from the
    right. Gaussian: ``softmax_k(-(k - d)^2 / (2 sigma^2))``; it tends to rounding as ``sigma -> 0``."""
    _check_max_delay(max_delay)
    _check_delays(delays, max_delay=max_delay, real=True)
    if not isinstance(interpolation, DelayInterpolation):
        raise TypeError(f"interpolation must be a DelayInterpolation, got {interpolation!r}")
    d = delays if delays.is_floating_point() else delays.to(torch.get_default_dtype())
    k = torch.arange(max_delay + 1, device=d.device, dtype=d.dtype)
    if interpolation is DelayInterpolation.GAUSSIAN:
        return torch.softmax(-(k - d.unsqueeze(-1)).square() / (2 * _check_sigma(sigma) ** 2), dim=-1)
    if max_delay == 0:
        return torch.ones(d.shape + (1,), dtype=d.dtype, device=d.device)
    lo = d.detach().floor().clamp(max=max_delay - 1)
    f = (d - lo).unsqueeze(-1)
    lo = lo.unsqueeze(-1)
    return (1 - f) * (k == lo).to(d.dtype) + f * (k == lo + 1).to(d.dtype)


def _taps(delays: Tensor, max_delay: int, interpolation: DelayInterpolation) -> list[int]:
    """The integer delays a kernel can weigh (linear: ``lo`` and ``lo + 1`` of every delay)."""
    if interpolation is DelayInterpolation.GAUSSIAN or max_delay == 0:
        return list(range(max_delay + 1))
    lo = delays.detach().floor().clamp(max=max_delay - 1).long()
    return torch.unique(torch.cat((lo.flatten(), lo.flatten() + 1))).tolist()


def _mix(x: Tensor, kernel: Tensor) -> Tensor:
    """``y[t, b, ..., n] = sum_k kernel[..., n, k] x[t - k, b, ..., n]``: one depthwise causal convolution."""
    steps, batch, feats = x.shape[0], x.shape[1], tuple(x.shape[2:])
    taps = kernel.shape[-1]
    w = kernel.to(x.dtype).expand(*feats, taps).reshape(-1, 1, taps).flip(-1)
    xs = F.pad(x.reshape(steps, batch, -1).permute(1, 2, 0), (taps - 1, 0))
    return F.conv1d(xs, w, groups=w.shape[0]).permute(2, 0, 1).reshape(x.shape)


def _check_feature_shape(x: Tensor, delays: Tensor) -> None:
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


def _real_delays(delays: Tensor, max_delay: int | None, x: Tensor) -> None:
    if max_delay is None:
        raise ValueError("floating delays need max_delay (the length of the interpolation kernel), got None")
    if not x.is_floating_point():
        raise TypeError(f"x must be a floating tensor for floating delays, got {x.dtype}")


def delay(x: Tensor, delays: Tensor, *, max_delay: int | None = None,
          interpolation: DelayInterpolation = DelayInterpolation.LINEAR, sigma: float = 1.0) -> Tensor:
    """Per-neuron delays: ``y[t, b, ..., n] = x[t - delays[..., n], b, ..., n]``, with
    ``delays`` broadcasting to ``x.shape[2:]``. Integer delays shift exactly; floating delays
    (in ``[0, max_delay]``, ``max_delay`` required) read ``delay_kernel`` and are differentiable
    in ``x`` and ``delays``; at whole values the linear kernel equals the integer shift."""
    _check_delays(delays, max_delay=max_delay, real=True)
    _check_feature_shape(x, delays)
    delays = delays.to(x.device)
    if delays.is_floating_point():
        _real_delays(delays, max_delay, x)
        return _mix(x, delay_kernel(delays, max_delay, interpolation, sigma))
    top = int(delays.max()) if delays.numel() else 0
    steps, rest = x.shape[0], x.dim() - 1
    padded = torch.cat((x.new_zeros((top,) + x.shape[1:]), x))
    t = torch.arange(steps, device=x.device).view(steps, *([1] * rest))
    index = (t + top - delays.view((1, 1) + tuple(delays.shape))).expand(x.shape)
    return padded.gather(0, index)


def _weighted_sum(read, weight: Tensor, parts) -> Tensor:
    """``sum_k F.linear(read(k), weight * w_k)`` over ``parts`` = ``[(k, w_k), ...]``."""
    y = None
    for k, w in parts:
        part = F.linear(read(k), weight * w.to(weight.dtype))
        y = part if y is None else y + part
    return y


def delayed_linear(x: Tensor, weight: Tensor, delays: Tensor, bias: Tensor | None = None, *,
                   max_delay: int | None = None, interpolation: DelayInterpolation = DelayInterpolation.LINEAR,
                   sigma: float = 1.0) -> Tensor:
    """Linear map with a delay per synapse: ``y[t, b, j] = sum_i weight[j, i] *
    x[t - delays[j, i], b, i] + bias[j]`` for ``x`` of shape ``(T, B, in)``. Integer delays cost
    one matrix product per distinct value; floating delays (in ``[0, max_delay]``, ``max_delay``
    required) one per integer delay their ``delay_kernel`` weighs, differentiable in ``delays``."""
    _check_delays(delays, max_delay=max_delay, real=True)
    if delays.shape != weight.shape:
        raise ValueError(f"delays must have the weight's shape {tuple(weight.shape)}, got {tuple(delays.shape)}")
    if delays.is_floating_point():
        _real_delays(delays, max_delay, x)
        kernel = delay_kernel(delays, max_delay, interpolation, sigma)
        parts = [(k, kernel[..., k]) for k in _taps(delays, max_delay, interpolation)]
    else:
        parts = [(k, delays == k) for k in torch.unique(delays).tolist()]
    y = _weighted_sum(lambda k: shift(x, int(k)), weight, parts)
    return y if bias is None else y + bias


class Delay(nn.Module):
    """Delays of up to ``max_delay`` steps, integer or learned.

    ``per=DelayPer.NEURON``: each of ``num_neurons`` channels (the last dim) is shifted by
    its own delay; no weights. ``per=DelayPer.SYNAPSE``: a ``Linear(num_neurons,
    out_features)`` whose every weight has its own delay (``bias`` used only here).
    ``delays`` (shape ``(num_neurons,)`` or ``(out_features, num_neurons)``) defaults to
    whole values drawn uniformly from ``0..max_delay`` with ``generator``.

    ``learn_delays=False``: ``delays`` is an integer buffer. ``learn_delays=True``
    (``max_delay >= 1``; ``delays`` may be fractional): the parameter ``learned_delays`` is
    trained. In training mode it is read through ``interpolation`` (``DelayInterpolation.LINEAR``
    by default, or ``GAUSSIAN`` of width ``sigma`` steps; anneal it by setting ``module.sigma``),
    values outside ``[0, max_delay]`` acting as the nearest bound while the gradient still
    flows; in ``eval()`` the delays are rounded (``torch.round``, halves to even) and the
    module runs the integer path exactly. ``module.delays`` is always those integer delays
    (what NIR export writes); ``rounded()`` returns an integer-delay copy for deployment.
    """

    def __init__(self, max_delay: int, num_neurons: int, *, per: DelayPer = DelayPer.NEURON,
                 out_features: int | None = None, bias: bool = True, delays: Tensor | None = None,
                 generator: torch.Generator | None = None, batch_first: bool = False, learn_delays: bool = False,
                 interpolation: DelayInterpolation | None = None, sigma: float | None = None) -> None:
        super().__init__()
        for name, flag in (("batch_first", batch_first), ("learn_delays", learn_delays)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.batch_first = batch_first
        self.history: Tensor | None = None   # the last max_delay + 1 step inputs, newest first (step)
        _check_max_delay(max_delay, 1 if learn_delays else 0)
        if isinstance(num_neurons, bool) or not isinstance(num_neurons, int) or num_neurons < 1:
            raise ValueError(f"num_neurons must be an int >= 1, got {num_neurons!r}")
        if not isinstance(per, DelayPer):
            raise TypeError(f"per must be DelayPer.NEURON or DelayPer.SYNAPSE, got {per!r}")
        self.max_delay, self.per = max_delay, per
        self.interpolation, self.sigma = self._kernel_options(learn_delays, interpolation, sigma)
        shape = self._shape(num_neurons, out_features)
        if delays is None:
            delays = torch.randint(0, max_delay + 1, shape, generator=generator)
        _check_delays(delays, max_delay=max_delay, real=learn_delays)
        if tuple(delays.shape) != shape:
            raise ValueError(f"delays must have shape {shape}, got {tuple(delays.shape)}")
        if learn_delays:
            self.learned_delays = nn.Parameter(delays.detach().to(torch.get_default_dtype()).clone())
        else:
            self.learned_delays = None
            self.register_buffer("delays", delays.to(torch.long).clone())
        if per is DelayPer.SYNAPSE:
            self.weight = nn.Parameter(torch.empty(shape))
            self.bias = nn.Parameter(torch.empty(shape[0])) if bias else None
            self._init_weights(num_neurons)

    @staticmethod
    def _kernel_options(learn: bool, interpolation, sigma) -> tuple[DelayInterpolation | None, float | None]:
        if not learn:
            if interpolation is not None or sigma is not None:
                raise ValueError("interpolation and sigma are only used with learn_delays=True, "
                                 f"got interpolation={interpolation!r}, sigma={sigma!r}")
            return None, None
        interpolation = DelayInterpolation.LINEAR if interpolation is None else interpolation
        if not isinstance(interpolation, DelayInterpolation):
            raise TypeError(f"interpolation must be DelayInterpolation.LINEAR or .GAUSSIAN, got {interpolation!r}")
        if interpolation is DelayInterpolation.LINEAR:
            if sigma is not None:
                raise ValueError(f"sigma is only used with interpolation=DelayInterpolation.GAUSSIAN, got {sigma!r}")
            return interpolation, None
        return interpolation, _check_sigma(1.0 if sigma is None else sigma)

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

    @property
    def delays(self) -> Tensor:
        """The integer delays in steps: the buffer, or ``learned_delays`` clamped to
        ``[0, max_delay]`` and rounded (what ``eval()``, ``rounded()`` and NIR export use)."""
        fixed = self._buffers.get("delays")
        if fixed is not None:
            return fixed
        learned = self._parameters.get("learned_delays")
        if learned is None:   # during __init__, before either is registered
            raise AttributeError("delays")
        return learned.detach().clamp(0, self.max_delay).round().long()

    def _bounded(self) -> Tensor:
        d = self.learned_delays
        return d + (d.clamp(0, self.max_delay) - d).detach()

    def _kernel(self) -> tuple[Tensor, list[int]] | None:
        """The interpolation weights ``(*delays.shape, max_delay + 1)`` and the integer delays
        they weigh, or ``None`` when the integer path runs (fixed delays, or eval mode)."""
        if self.learned_delays is None or not self.training:
            return None
        d = self._bounded()
        sigma = 1.0 if self.sigma is None else self.sigma
        return delay_kernel(d, self.max_delay, self.interpolation, sigma), _taps(d, self.max_delay, self.interpolation)

    def forward(self, x: Tensor) -> Tensor:
        if self.batch_first and x.dim() >= 2:
            return self._sequence(x.transpose(0, 1)).transpose(0, 1)
        return self._sequence(x)

    def _sequence(self, x: Tensor) -> Tensor:
        kernel = self._kernel()
        if kernel is None:
            if self.per is DelayPer.NEURON:
                return delay(x, self.delays)
            return delayed_linear(x, self.weight, self.delays, self.bias)
        w, taps = kernel
        if self.per is DelayPer.NEURON:
            _check_feature_shape(x, self.learned_delays)
            return _mix(x, w)
        y = _weighted_sum(lambda k: shift(x, k), self.weight, [(k, w[..., k]) for k in taps])
        return y if self.bias is None else y + self.bias

    def step(self, x: Tensor) -> Tensor:
        """One step ``(B, ..., num_neurons)``: the inputs of the last ``max_delay`` steps are
        kept in ``history`` (from zeros after ``reset()``), so a stream of steps equals the
        sequence call (in training and in eval mode)."""
        for hook in self.__dict__.get("_pre_step_hooks", {}).values():
            hook(self, x)
        if self.history is None:
            self.history = x.new_zeros((self.max_delay + 1, *x.shape))
        elif self.history.shape[1:] != x.shape:
            raise ValueError(f"Delay.step: x has shape {tuple(x.shape)} but the stream so far had "
                             f"{tuple(self.history.shape[1:])}; call reset() before a stream of another shape")
        self.history = torch.cat((x.unsqueeze(0), self.history[:-1]))
        kernel = self._kernel()
        if kernel is not None:
            w, taps = kernel
            if self.per is DelayPer.NEURON:
                w = w.to(x.dtype).movedim(-1, 0)
                w = w.view(w.shape[:1] + (1,) * (self.history.dim() - w.dim()) + w.shape[1:])
                return (w * self.history).sum(0)
            parts = [(k, w[..., k]) for k in taps]
        elif self.per is DelayPer.NEURON:
            index = self.delays.to(x.device).expand(x.shape).unsqueeze(0)
            return self.history.gather(0, index)[0]
        else:
            parts = [(k, self.delays == k) for k in torch.unique(self.delays).tolist()]
        y = _weighted_sum(lambda k: self.history[k], self.weight, parts)
        return y if self.bias is None else y + self.bias

    def rounded(self) -> Delay:
        """A copy with integer delays ``self.delays`` (not learned) and the same weights, bias,
        layout and device: it computes what this module computes in ``eval()``."""
        synapse = self.per is DelayPer.SYNAPSE
        out = Delay(self.max_delay, self.delays.shape[-1], per=self.per, batch_first=self.batch_first,
                    out_features=self.delays.shape[0] if synapse else None,
                    bias=synapse and self.bias is not None, delays=self.delays.clone())
        out.delays = out.delays.to(self.delays.device)
        if synapse:
            out.weight = nn.Parameter(self.weight.detach().clone())
            if self.bias is not None:
                out.bias = nn.Parameter(self.bias.detach().clone())
        return out.train(self.training)

    def reset(self) -> None:
        self.history = None

    def __getstate__(self):
        return detached_dict(self, "history")

    def extra_repr(self) -> str:
        s = f"max_delay={self.max_delay}, per={self.per.name}, delays={tuple(self.delays.shape)}"
        if self.learned_delays is not None:
            s += f", learn_delays=True, interpolation={self.interpolation.name}"
            s += "" if self.sigma is None else f", sigma={self.sigma}"
        return s
