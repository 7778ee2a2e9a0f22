"""Encoders: turn static values or sampled signals into time-first spike trains.

Each encoder is a pure function; a frozen dataclass of the same name in CamelCase holds
its settings and calls it (for dataset transforms). Static inputs of any shape ``(B, ...)``
become ``(T, B, ...)``; encoders of signals (``delta``, ``ternary``) keep the time axis
of their ``(T, ...)`` input. Randomness comes only from the ``generator`` argument
(``None`` = torch's global generator). Encoders compose: ``rate(population(x, 8), 20)``.

| encoder      | input                      | output                                      |
|--------------|----------------------------|---------------------------------------------|
| ``rate``     | probabilities in [0, 1]    | Bernoulli spikes ``(T, ...)``               |
| ``latency``  | intensities in [0, 1]      | at most one spike per input, larger earlier |
| ``delta``    | signal ``(T, ...)``        | +1/-1 on up/down crossings (or two channels)|
| ``population``| values over ``[low, high]``| Gaussian receptive-field responses ``(..., n)`` |
| ``ternary``  | signed signal              | -1/0/+1 by threshold                        |
| ``direct``   | any values                 | the input repeated over ``T`` (current)     |
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import Tensor

__all__ = [
    "rate", "latency", "latency_times", "delta", "population", "ternary", "direct",
    "LatencyMode", "DeltaOutput",
    "Rate", "Latency", "Delta", "Population", "Ternary", "Direct",
]


class LatencyMode(enum.Enum):
    """How ``latency`` maps an intensity to a spike time (1 fires at step 0 in both)."""

    LINEAR = "linear"   # t = (T - 1) * (1 - x) / (1 - threshold)
    LOG = "log"         # t = (T - 1) * ln(x) / ln(threshold)


class DeltaOutput(enum.Enum):
    """The layout of ``delta``'s spikes."""

    SIGNED = "signed"   # one tensor like the input: +1 up, -1 down, 0 none
    ON_OFF = "on_off"   # a new last dim of size 2: [..., 0] up (ON), [..., 1] down (OFF)


# -- argument checks ---------------------------------------------------------------------
def _check_tensor(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}; convert it with .float()")
    return x


def _check_int(value, name: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value!r}")
    return value


def _check_number(value, name: str, low: float, high: float, closed: str = "()") -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    lo_ok = value >= low if closed[0] == "[" else value > low
    hi_ok = value <= high if closed[1] == "]" else value < high
    if not (lo_ok and hi_ok):
        raise ValueError(f"{name} must lie in {closed[0]}{low}, {high}{closed[1]}, got {value!r}")
    return float(value)


def _check_range(x: Tensor, name: str, what: str) -> None:
    if x.numel() and not bool(((x >= 0) & (x <= 1)).all()):
        lo, hi = x.min().item(), x.max().item()
        raise ValueError(f"{name} must lie in [0, 1] ({what}), got values in [{lo:.4g}, {hi:.4g}]")


def _check_generator(generator) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")


def _check_enum(value, enum_type: type[enum.Enum], name: str):
    if not isinstance(value, enum_type):
        choices = ", ".join(f"{enum_type.__name__}.{m.name}" for m in enum_type)
        raise TypeError(f"{name} must be one of {choices}, got {value!r}")
    return value


# -- encoders ----------------------------------------------------------------------------
def rate(x: Tensor, num_steps: int, *, gain: float = 1.0, generator: torch.Generator | None = None) -> Tensor:
    """Poisson (Bernoulli) rate code: at every step each input spikes with probability
    ``gain * x``, independently. Returns ``(num_steps, *x.shape)`` of 0/1 in ``x.dtype``."""
    _check_tensor(x, "x")
    _check_int(num_steps, "num_steps", 1)
    _check_number(gain, "gain", 0.0, math.inf, "[)")
    _check_generator(generator)
    p = x * gain if gain != 1.0 else x
    _check_range(p, "x * gain" if gain != 1.0 else "x", "spike probabilities")
    return torch.bernoulli(p.detach().unsqueeze(0).expand(num_steps, *p.shape), generator=generator)


def latency_times(x: Tensor, num_steps: int, *, mode: LatencyMode = LatencyMode.LINEAR,
                  threshold: float = 0.01, window: int | None = None, rounded: bool = True) -> Tensor:
    """The step at which ``latency`` makes each input spike (as floats, ``inf`` where the
    input is ``<= threshold`` and stays silent). Same shape as ``x``. ``rounded=False``
    gives the exact (real-valued) times, for event-based simulation (EventProp).

    The times span the first ``window`` steps (default: all ``num_steps``): 1 fires at step
    0 and values just above ``threshold`` at step ``window - 1``; the steps after the window
    stay silent (time for a network to answer after its input has ended)."""
    _check_tensor(x, "x")
    _check_int(num_steps, "num_steps", 1)
    window = num_steps if window is None else _check_int(window, "window", 1)
    if window > num_steps:
        raise ValueError(f"window must be <= num_steps = {num_steps}, got {window}")
    _check_enum(mode, LatencyMode, "mode")
    _check_number(threshold, "threshold", 0.0, 1.0, "[)" if mode is LatencyMode.LINEAR else "()")
    _check_range(x, "x", "intensities")
    last = window - 1
    fires = x > threshold
    safe = torch.where(fires, x, torch.ones_like(x))
    if mode is LatencyMode.LINEAR:
        t = last * (1.0 - safe) / (1.0 - threshold)
    else:
        t = last * torch.log(safe) / math.log(threshold)
    if not isinstance(rounded, bool):
        raise TypeError(f"rounded must be True or False, got {rounded!r}")
    t = (torch.round(t) if rounded else t).clamp(0, last)
    return torch.where(fires, t, torch.full_like(t, math.inf)).detach()


def latency(x: Tensor, num_steps: int, *, mode: LatencyMode = LatencyMode.LINEAR,
            threshold: float = 0.01, window: int | None = None) -> Tensor:
    """Time-to-first-spike code: each input in [0, 1] spikes at most once, at step
    ``latency_times(x, ...)``; 1 fires at step 0, values near ``threshold`` fire near step
    ``window - 1`` (default ``num_steps - 1``), values ``<= threshold`` never. Returns
    ``(num_steps, *x.shape)``. A constant input of 1 makes a bias (reference) spike at step 0."""
    t = latency_times(x, num_steps, mode=mode, threshold=threshold, window=window)
    steps = torch.arange(num_steps, device=x.device, dtype=x.dtype).view(-1, *([1] * x.dim()))
    return (steps == t.unsqueeze(0)).to(x.dtype)


def delta(x: Tensor, threshold: float = 0.1, *, output: DeltaOutput = DeltaOutput.SIGNED) -> Tensor:
    """Send-on-delta code of a signal ``x`` of shape ``(T, ...)``.

    Each element keeps a reference level, starting at ``x[0]`` (so step 0 is silent).
    At step t an UP spike is sent where ``x[t] - ref >= threshold``, a DOWN spike where
    ``x[t] - ref <= -threshold``, and after a spike the reference jumps to ``x[t]``; slow
    drifts therefore accumulate until they cross. ``output`` selects +1/-1 in one tensor
    (``SIGNED``) or a new last dim ``[ON, OFF]`` of 0/1 (``ON_OFF``).
    """
    _check_tensor(x, "x")
    if x.dim() < 1 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (T, ...) with T >= 1, got shape {tuple(x.shape)}")
    _check_number(threshold, "threshold", 0.0, math.inf)
    _check_enum(output, DeltaOutput, "output")
    x = x.detach()
    ref = x[0]
    out = [torch.zeros_like(ref)]
    for x_t in x[1:]:
        d = x_t - ref
        s = (d >= threshold).to(x.dtype) - (d <= -threshold).to(x.dtype)
        ref = torch.where(s != 0, x_t, ref)
        out.append(s)
    s = torch.stack(out)
    if output is DeltaOutput.ON_OFF:
        return torch.stack(((s > 0).to(x.dtype), (s < 0).to(x.dtype)), dim=-1)
    return s


def population(x: Tensor, num_neurons: int, *, low: float = 0.0, high: float = 1.0,
               sigma: float | None = None) -> Tensor:
    """Gaussian receptive fields: ``num_neurons`` neurons per input with centres spread
    evenly over ``[low, high]`` and width ``sigma`` (default: the centre spacing, or
    ``high - low`` for one neuron). Returns responses ``exp(-(x - mu)^2 / (2 sigma^2))``
    in (0, 1] of shape ``(*x.shape, num_neurons)``; use them as currents (``direct``) or
    as spike probabilities (``rate``) or intensities (``latency``)."""
    _check_tensor(x, "x")
    _check_int(num_neurons, "num_neurons", 1)
    _check_number(low, "low", -math.inf, math.inf)
    _check_number(high, "high", low, math.inf)
    span = high - low
    if sigma is None:
        sigma = span / (num_neurons - 1) if num_neurons > 1 else span
    _check_number(sigma, "sigma", 0.0, math.inf)
    if num_neurons > 1:
        mu = torch.linspace(low, high, num_neurons, dtype=x.dtype, device=x.device)
    else:
        mu = torch.full((1,), (low + high) / 2, dtype=x.dtype, device=x.device)
    d = x.unsqueeze(-1) - mu
    return torch.exp(-(d * d) / (2.0 * sigma * sigma))


def ternary(x: Tensor, threshold: float | Sequence[float] = 0.5) -> Tensor:
    """Signed spikes of a signed signal: +1 where ``x >= threshold``, -1 where
    ``x <= -threshold``, 0 otherwise; same shape and time axis as ``x``.

    Several increasing positive ``threshold`` levels give a level code with a new last
    dim, one neuron per level (as used by SNN channel equalisers for received samples).
    """
    _check_tensor(x, "x")
    levels = [threshold] if isinstance(threshold, (int, float)) else list(threshold)
    if not levels:
        raise ValueError("threshold must be a positive number or a non-empty sequence of them, got []")
    for i, th in enumerate(levels):
        _check_number(th, "threshold" if len(levels) == 1 else f"threshold[{i}]", 0.0, math.inf)
    if any(b <= a for a, b in zip(levels, levels[1:])):
        raise ValueError(f"threshold levels must be strictly increasing, got {levels}")
    th = torch.tensor(levels, dtype=x.dtype, device=x.device)
    xs = x.detach().unsqueeze(-1)
    s = (xs >= th).to(x.dtype) - (xs <= -th).to(x.dtype)
    return s.squeeze(-1) if isinstance(threshold, (int, float)) else s


def direct(x: Tensor, num_steps: int) -> Tensor:
    """Direct current injection: ``x`` repeated over ``num_steps`` as ``(num_steps, *x.shape)``.
    The result is a broadcast view (no copy; gradients flow to ``x``): ``.clone()`` it
    before writing into it."""
    _check_tensor(x, "x")
    _check_int(num_steps, "num_steps", 1)
    return x.unsqueeze(0).expand(num_steps, *x.shape)


# -- settings objects (dataset transforms) -----------------------------------------------
@dataclass(frozen=True)
class Rate:
    """``rate(x, num_steps, gain=gain, generator=generator)``."""

    num_steps: int
    gain: float = 1.0
    generator: torch.Generator | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        _check_int(self.num_steps, "num_steps", 1)
        _check_number(self.gain, "gain", 0.0, math.inf, "[)")
        _check_generator(self.generator)

    def __call__(self, x: Tensor) -> Tensor:
        return rate(x, self.num_steps, gain=self.gain, generator=self.generator)


@dataclass(frozen=True)
class Latency:
    """``latency(x, num_steps, mode=mode, threshold=threshold, window=window)``."""

    num_steps: int
    mode: LatencyMode = LatencyMode.LINEAR
    threshold: float = 0.01
    window: int | None = None

    def __post_init__(self) -> None:
        _check_int(self.num_steps, "num_steps", 1)
        _check_enum(self.mode, LatencyMode, "mode")
        if self.window is not None and _check_int(self.window, "window", 1) > self.num_steps:
            raise ValueError(f"window must be <= num_steps = {self.num_steps}, got {self.window}")

    def __call__(self, x: Tensor) -> Tensor:
        return latency(x, self.num_steps, mode=self.mode, threshold=self.threshold, window=self.window)


@dataclass(frozen=True)
class Delta:
    """``delta(x, threshold, output=output)``."""

    threshold: float = 0.1
    output: DeltaOutput = DeltaOutput.SIGNED

    def __post_init__(self) -> None:
        _check_number(self.threshold, "threshold", 0.0, math.inf)
        _check_enum(self.output, DeltaOutput, "output")

    def __call__(self, x: Tensor) -> Tensor:
        return delta(x, self.threshold, output=self.output)


@dataclass(frozen=True)
class Population:
    """``population(x, num_neurons, low=low, high=high, sigma=sigma)``."""

    num_neurons: int
    low: float = 0.0
    high: float = 1.0
    sigma: float | None = None

    def __post_init__(self) -> None:
        _check_int(self.num_neurons, "num_neurons", 1)
        _check_number(self.high, "high", self.low, math.inf)

    def __call__(self, x: Tensor) -> Tensor:
        return population(x, self.num_neurons, low=self.low, high=self.high, sigma=self.sigma)


@dataclass(frozen=True)
class Ternary:
    """``ternary(x, threshold)``; ``threshold`` is a number or a tuple of levels."""

    threshold: float | tuple[float, ...] = 0.5

    def __call__(self, x: Tensor) -> Tensor:
        return ternary(x, self.threshold)


@dataclass(frozen=True)
class Direct:
    """``direct(x, num_steps)``."""

    num_steps: int

    def __post_init__(self) -> None:
        _check_int(self.num_steps, "num_steps", 1)

    def __call__(self, x: Tensor) -> Tensor:
        return direct(x, self.num_steps)
