"""Desire backpropagation (Gerlinghoff, Luo, Goh & Wong 2023, Neurocomputing 560:126773,
arXiv:2211.05412): supervised training of a multi-layer SNN with local, STDP-like updates.

After a forward pass (spikes only), every neuron gets a ternary **desire**: ``+1`` (it
should spike), ``-1`` (it should stay silent) or ``0`` (ignore it).

1. Output layer: ``+1`` for the label's neuron, ``-1`` for all others.
2. Backwards, layer by layer: a presynaptic neuron ``j`` of a layer with weights ``W``
   ``(out, in)`` sums the desires of its targets through the weights,
   ``s_j = sum_i d_i * W[i, j]`` (``d_i`` is ternary, so this needs no multiplication),
   and is ternarised with the layer's threshold ``theta``: ``d_j = sign(s_j)`` where
   ``|s_j| > theta``, else ``0``.
3. Each neuron's **error** from its desire and its spike rate ``r`` (spikes / ``T``):
   ``d = +1``: ``e = max(0, r_target - r)`` with ``r_target = 1 - margin / T``;
   ``d = -1``: ``e = -r``; ``d = 0``: ``e = 0``.
4. Local update of every layer: ``dW[i, j] = e_i * xbar_j``, with ``xbar_j`` the
   presynaptic spike trace (a leaky integrator, ``tau_trace``) averaged over the ``T``
   steps and ``e_i`` the error of the postsynaptic neuron, summed over the batch.
   Inputs that spiked (recently, often) are strengthened onto neurons that should
   spike more and weakened onto neurons that should spike less: STDP gated by desire.

What is ours, stated: the published thresholds and target margin are hyper-parameters
(defaults below follow the authors' public description: ``theta`` 0.05 for hidden
linear layers and 0.30 for the output layer, a margin of 4 of 20 steps); the exact form
of the error and the trace average above is our reading of the method. Only
``nn.Linear`` synapses chained one after another are supported (the desire of layer
``k``'s inputs is the desire of layer ``k - 1``'s neurons).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import torch
from torch import Tensor

__all__ = ["DesireBackprop", "output_desire", "propagate_desire", "desire_error", "desire_updates"]


def _check_labels(labels) -> None:
    if not isinstance(labels, Tensor) or labels.dim() != 1 or labels.dtype not in (torch.int64, torch.int32):
        raise ValueError(f"labels must be a (B,) integer tensor, got "
                         f"{tuple(labels.shape) if isinstance(labels, Tensor) else type(labels).__name__}"
                         f"{'' if not isinstance(labels, Tensor) else ' ' + str(labels.dtype)}")


def output_desire(labels: Tensor, classes: int) -> Tensor:
    """``(B, classes)``: ``+1`` at each label, ``-1`` elsewhere."""
    _check_labels(labels)
    if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= classes):
        raise ValueError(f"labels must be in [0, {classes - 1}] (the output layer has {classes} neurons), "
                         f"got values in [{int(labels.min())}, {int(labels.max())}]")
    d = torch.full((labels.shape[0], classes), -1.0, device=labels.device)
    d[torch.arange(labels.shape[0], device=labels.device), labels.long()] = 1.0
    return d


def propagate_desire(desire: Tensor, weight: Tensor, threshold: float) -> Tensor:
    """The desire ``(B, in)`` of a layer's inputs from its neurons' desire ``(B, out)`` and
    weights ``(out, in)``: ``sign(desire @ weight)`` where ``|desire @ weight| > threshold``."""
    s = desire.to(weight.dtype) @ weight
    return torch.where(s.abs() > threshold, torch.sign(s), torch.zeros_like(s))


def desire_error(desire: Tensor, rate: Tensor, target_rate: float) -> Tensor:
    """Each neuron's error from its desire and spike rate (both ``(B, n)``), see step 3."""
    up = (target_rate - rate).clamp(min=0)
    return torch.where(desire > 0, up, torch.where(desire < 0, -rate, torch.zeros_like(rate)))


def desire_updates(weights: Sequence[Tensor], traces: Sequence[Tensor], rates: Sequence[Tensor], labels: Tensor,
                   thresholds: Sequence[float], target_rate: float) -> tuple[list[Tensor], list[Tensor]]:
    """The updates ``dW`` (one per layer, summed over the batch) and the desires of each
    layer's neurons. Layers are in forward order; ``traces[k]`` ``(B, in_k)`` is layer
    ``k``'s mean presynaptic trace, ``rates[k]`` ``(B, out_k)`` its neurons' spike rates,
    ``thresholds[k]`` the threshold used to propagate desire *through* layer ``k`` (to
    layer ``k - 1``'s neurons; ``thresholds[0]`` is unused)."""
    n = len(weights)
    if not (len(traces) == len(rates) == len(thresholds) == n) or n == 0:
        raise ValueError(f"weights, traces, rates and thresholds need one entry per layer, got "
                         f"{len(weights)}, {len(traces)}, {len(rates)}, {len(thresholds)}")
    desires: list[Tensor] = [None] * n
    desires[-1] = output_desire(labels, weights[-1].shape[0]).to(rates[-1])
    for k in range(n - 1, 0, -1):
        desires[k - 1] = propagate_desire(desires[k], weights[k], thresholds[k])
    updates = []
    for k in range(n):
        e = desire_error(desires[k], rates[k], target_rate)
        updates.append(e.transpose(0, 1) @ traces[k].to(e.dtype))
    return updates, desires


class DesireState(NamedTuple):
    trace: Tensor      # presynaptic trace now (N, in)
    trace_sum: Tensor  # its sum over the steps seen (N, in)
    count: Tensor      # postsynaptic spikes (N, out)
    steps: int


@dataclass(frozen=True)
class DesireBackprop:
    """The rule for ``spikeforge.learning.attach``: the forward pass records each learned
    layer's presynaptic trace and its neurons' spike counts (per sample); then
    ``learner.teach(labels)`` runs steps 1-4 above and adds ``dW`` to ``pending``, and
    ``learner.apply(lr)`` applies it. ``hidden_threshold`` ternarises desire through hidden
    layers, ``output_threshold`` through the output layer; ``margin`` (steps) lowers the
    target spike count of a desired neuron to ``T - margin``; ``tau_trace`` is the trace's
    time constant (``exp(-dt / tau_trace)`` per step)."""

    hidden_threshold: float = 0.05
    output_threshold: float = 0.30
    margin: float = 4.0
    tau_trace: float = 3.476   # decay 0.75 per step, as the authors' 2 ** -2 membrane decay
    dt: float = 1.0
    needs_v = False

    def __post_init__(self) -> None:
        for name, positive in (("hidden_threshold", False), ("output_threshold", False), ("margin", False),
                               ("tau_trace", True), ("dt", True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
            if not ok or v < 0 or (positive and v == 0):
                raise ValueError(f"DesireBackprop: {name} must be a {'positive' if positive else 'non-negative'} "
                                 f"finite number, got {v!r}")

    def init(self, pre: Tensor, post: Tensor) -> DesireState:
        return DesireState(torch.zeros_like(pre), torch.zeros_like(pre), torch.zeros_like(post), 0)

    def run(self, s: DesireState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        decay = math.exp(-self.dt / self.tau_trace)
        x, total = s.trace, s.trace_sum.clone()
        for t in range(pre.shape[0]):
            x = x * decay + pre[t]
            total += x
        return DesireState(x, total, s.count + post.sum(0), s.steps + pre.shape[0]), None

    def step(self, s: DesireState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        return self.run(s, pre.unsqueeze(0), post.unsqueeze(0))

    def teach(self, weights: Sequence[Tensor], states: Sequence[DesireState], labels: Tensor) -> list[Tensor]:
        """``dW`` per layer (forward order) from the recorded states and the labels."""
        steps = states[-1].steps
        if steps == 0 or any(s.steps != steps for s in states):
            raise RuntimeError(f"teach: every learned layer must have run the same number of steps since the last "
                               f"apply, got {[s.steps for s in states]}")
        _check_labels(labels)
        if labels.shape[0] != states[-1].count.shape[0]:
            raise ValueError(f"labels has {labels.shape[0]} entries but the forward pass had "
                             f"{states[-1].count.shape[0]} samples")
        thresholds = [self.hidden_threshold] * (len(weights) - 1) + [self.output_threshold]
        traces = [s.trace_sum / steps for s in states]
        rates = [s.count / steps for s in states]
        target = max(0.0, 1.0 - self.margin / steps)
        return desire_updates(weights, traces, rates, labels, thresholds, target)[0]
