"""Classification losses on time-first outputs ``(T, B, C)`` and class targets ``(B,)``.

| loss              | output read as                                    | use with                 |
|-------------------|---------------------------------------------------|--------------------------|
| ``rate_ce``       | logits = spike counts ``sum_t z[t]``              | spiking output layer     |
| ``max_membrane_ce``| logits = ``max_t v[t]``                          | ``LI`` readout           |
| ``count_mse``     | spike counts vs. target counts                    | spiking output layer     |
| ``first_spike_ce``| logits = ``-first_spike_times(z) / tau``          | time-to-first-spike nets |
| ``ttfs_ce``       | logits = ``-times / tau0`` on first-spike *times* ``(B, C)``, plus ``alpha (exp(t_target / tau1) - 1)`` | EventProp (exact times) or BPTT |
| ``integral_ce``   | logits = ``dt * sum_t exp(-t / tau) v[t]`` (a shaped integral)        | ``LI`` readout, EventProp or BPTT |

All losses average over the batch. Scores for ``accuracy``: ``spike_counts(z)``,
``v.amax(0)`` or ``first_spike_scores(z)`` (``-first_spike_times(z)``, optionally with a
tie-break among classes that fire at the same step).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor
from torch.nn import functional as F

__all__ = [
    "rate_ce", "max_membrane_ce", "count_mse", "first_spike_ce",
    "ttfs_ce", "integral_ce", "spike_counts", "first_spike_times", "first_spike_scores", "accuracy",
]


def _check_output(x, name: str) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}; convert it with .float()")
    if x.dim() != 3 or x.shape[0] < 1:
        raise ValueError(f"{name} must have shape (T, B, C) with T >= 1, got shape {tuple(x.shape)}")
    return x


def _check_target(target, batch: int, classes: int) -> Tensor:
    if not isinstance(target, Tensor) or target.is_floating_point() or target.dtype == torch.bool:
        got = target.dtype if isinstance(target, Tensor) else type(target).__name__
        raise TypeError(f"target must be an integer tensor of class indices, got {got}")
    if tuple(target.shape) != (batch,):
        raise ValueError(f"target must have shape (B,) = ({batch},), got shape {tuple(target.shape)}")
    if target.numel() and (int(target.min()) < 0 or int(target.max()) >= classes):
        raise ValueError(f"target must hold class indices in [0, {classes}), got values in "
                         f"[{int(target.min())}, {int(target.max())}]")
    return target


def _check_rate(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{name} must be a spike rate in [0, 1], got {value!r}")
    return float(value)


def spike_counts(spikes: Tensor) -> Tensor:
    """Spikes per neuron over time: ``(T, B, C) -> (B, C)``."""
    return _check_output(spikes, "spikes").sum(0)


def first_spike_times(spikes: Tensor) -> Tensor:
    """A differentiable first-spike time per neuron, ``(T, B, C) -> (B, C)``.

    With ``f[t] = z[t] * prod_{u<t} (1 - z[u])`` (1 exactly at the first spike),
    ``time = sum_t t * f[t] + T * prod_t (1 - z[t])``: the step of the first spike, or
    ``T`` for a silent neuron. Through surrogate spikes the gradient pulls earlier steps
    up (``d time / d z[k] = k - time`` for ``k`` up to the first spike) and later ones not
    at all.
    """
    _check_output(spikes, "spikes")
    steps = spikes.shape[0]
    silent_through = torch.cumprod(1.0 - spikes, dim=0)            # no spike in 0..t
    silent_before = torch.cat((torch.ones_like(spikes[:1]), silent_through[:-1]))
    first = spikes * silent_before
    t = torch.arange(steps, dtype=spikes.dtype, device=spikes.device).view(-1, 1, 1)
    return (first * t).sum(0) + steps * silent_through[-1]


def first_spike_scores(spikes: Tensor, tie_break: Tensor | None = None) -> Tensor:
    """Scores for ``accuracy`` under a first-spike code, ``(T, B, C) -> (B, C)``: minus the
    first spike step, so the earliest class wins.

    Several classes often fire at the same step (or all stay silent). ``tie_break`` (B, C),
    e.g. each readout's peak membrane, decides among them: the larger value wins, and the
    order between different steps is never changed (each class gets ``r / C`` added, ``r``
    the number of classes with a smaller ``tie_break``, which stays below one step). Exact
    for 0/1 spikes; remaining ties go to the lowest index. No gradient flows through it.
    """
    times = first_spike_times(spikes).detach()
    if tie_break is None:
        return -times
    if not isinstance(tie_break, Tensor) or tuple(tie_break.shape) != tuple(times.shape):
        got = tuple(tie_break.shape) if isinstance(tie_break, Tensor) else type(tie_break).__name__
        raise ValueError(f"tie_break must be a tensor of shape (B, C) = {tuple(times.shape)}, got {got}")
    tb = tie_break.detach()
    rank = (tb.unsqueeze(-1) > tb.unsqueeze(-2)).sum(-1).to(times.dtype)   # classes below each one
    return -times + rank / times.shape[-1]


def rate_ce(spikes: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy with the spike counts as logits: the target class should fire most."""
    counts = spike_counts(spikes)
    return F.cross_entropy(counts, _check_target(target, *counts.shape))


def max_membrane_ce(v: Tensor, target: Tensor) -> Tensor:
    """Cross-entropy with each readout neuron's peak membrane ``max_t v[t]`` as logits
    (for non-spiking ``LI`` readouts)."""
    peak = _check_output(v, "v").amax(0)
    return F.cross_entropy(peak, _check_target(target, *peak.shape))


def count_mse(spikes: Tensor, target: Tensor, correct_rate: float = 1.0, incorrect_rate: float = 0.0) -> Tensor:
    """Mean squared error between spike counts and target counts: ``correct_rate * T``
    spikes for the target class and ``incorrect_rate * T`` for every other class."""
    counts = spike_counts(spikes)
    _check_target(target, *counts.shape)
    hi, lo = _check_rate(correct_rate, "correct_rate"), _check_rate(incorrect_rate, "incorrect_rate")
    steps = spikes.shape[0]
    onehot = F.one_hot(target, counts.shape[1]).to(counts.dtype)
    wanted = steps * (lo + (hi - lo) * onehot)
    return F.mse_loss(counts, wanted)


def first_spike_ce(spikes: Tensor, target: Tensor, tau: float = 1.0) -> Tensor:
    """Cross-entropy with logits ``-first_spike_times(spikes) / tau``: the target class
    should fire first; ``tau`` (in steps) sets how sharply earlier spikes win."""
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not (math.isfinite(tau) and tau > 0):
        raise ValueError(f"tau must be a positive finite number of steps, got {tau!r}")
    times = first_spike_times(spikes)
    return F.cross_entropy(-times / tau, _check_target(target, *times.shape))


def _positive(value, name: str, allow_inf: bool = False) -> float:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value > 0 and \
        (math.isfinite(value) or (allow_inf and value == math.inf))
    if not ok:
        raise ValueError(f"{name} must be a positive{'' if allow_inf else ' finite'} number, got {value!r}")
    return float(value)


def ttfs_ce(times: Tensor, target: Tensor, tau0: float = 0.5, tau1: float = 6.4, alpha: float = 3e-3) -> Tensor:
    """Time-to-first-spike cross-entropy on first-spike times ``(B, C)`` (Wunderlich & Pehle
    2021, eq. 13): ``-log softmax(-t / tau0)[target] + alpha * (exp(t_target / tau1) - 1)``;
    the second term pulls the target's spike earlier, so a silent target still learns.
    ``times`` come from EventProp (``EventRun.first``, exact) or from BPTT
    (``first_spike_times(z) * dt``); a silent neuron's time is the end of the window."""
    if not isinstance(times, Tensor) or times.dim() != 2 or not times.is_floating_point():
        got = tuple(times.shape) if isinstance(times, Tensor) else type(times).__name__
        raise ValueError(f"times must be a floating tensor of first-spike times (B, C), got {got}")
    if not torch.isfinite(times).all():
        raise ValueError("times must be finite (give silent neurons the end of the window, as EventRun.first does)")
    tau0, tau1 = _positive(tau0, "tau0"), _positive(tau1, "tau1")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not (math.isfinite(alpha) and alpha >= 0):
        raise ValueError(f"alpha must be a finite number >= 0, got {alpha!r}")
    _check_target(target, *times.shape)
    t_target = times.gather(1, target.unsqueeze(1)).squeeze(1)
    return F.cross_entropy(-times / tau0, target) + alpha * torch.expm1(t_target / tau1).mean()


def integral_ce(v: Tensor, target: Tensor, dt: float = 1.0, tau: float = math.inf) -> Tensor:
    """Cross-entropy with each readout's weighted membrane integral as logits,
    ``dt * sum_t exp(-t dt / tau) v[t]`` over ``v`` ``(T, B, C)`` sampled every ``dt`` (the
    shaped losses of Nowotny, Turner & Knight: ``tau = inf`` is the plain sum, a finite
    ``tau`` rewards early evidence)."""
    _check_output(v, "v")
    dt, tau = _positive(dt, "dt"), _positive(tau, "tau", allow_inf=True)
    t = torch.arange(v.shape[0], dtype=v.dtype, device=v.device) * dt
    logits = dt * torch.einsum("t,tbc->bc", torch.exp(-t / tau), v)
    return F.cross_entropy(logits, _check_target(target, *logits.shape))


def accuracy(scores: Tensor, target: Tensor) -> float:
    """Fraction of rows of ``scores (B, C)`` whose largest entry is at the target class
    (ties go to the lowest index)."""
    if not isinstance(scores, Tensor) or scores.dim() != 2:
        got = tuple(scores.shape) if isinstance(scores, Tensor) else type(scores).__name__
        raise ValueError(f"scores must be a tensor of shape (B, C), got {got}")
    _check_target(target, *scores.shape)
    if scores.shape[0] == 0:
        return 0.0
    return (scores.argmax(1) == target).float().mean().item()
