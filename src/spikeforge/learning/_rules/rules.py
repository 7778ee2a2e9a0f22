"""Local plasticity rules: each a frozen dataclass with a trace state and a per-step update.

A rule sees one time step of one synapse layer at a time: the presynaptic activity ``pre``
``(N, in)`` (the ``nn.Linear``'s input), the postsynaptic spikes ``post`` ``(N, out)`` (the
output of the neuron layer after it) and, for rules that ask for it, the postsynaptic
membrane ``v`` ``(N, out)`` as it was *before* the step. ``N`` is the batch (every leading
dimension but time, flattened). ``init(pre, post)`` makes the rest state (all traces zero);
``step(state, pre, post, v)`` returns ``(state, dw)`` with ``dw`` of the weight's shape
``(out, in)``, summed over the batch. ``run(state, pre, post, v)`` does the same on ``T``
steps at once (``(T, N, ...)``, time first; the learner's sequence path): the traces are
scanned step by step (elementwise) and the update is one matrix product over all ``T * N``
rows. A rule with a third factor also has ``reward(state, r) -> dw``.

Every trace is a leaky integrator updated once per step of length ``dt`` (same time unit
as the ``tau``s): ``x <- x * exp(-dt / tau) + s``. Traces are "all-to-all": each spike adds
1, so every earlier spike of the other side counts, weighted by its exponential. A
pre and a post spike in the *same* step see each other (the traces are updated before
the weight update), so such a pair gives both ``a_plus`` and ``-a_minus``.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = ["PairSTDP", "TripletSTDP", "RewardSTDP", "VDSP", "Trigger"]


class Trigger(Enum):
    """When ``VDSP`` updates and whose membrane it reads."""

    PRE = "pre"     # at a presynaptic spike, from the postsynaptic membrane (spikeforge issue 12's wording)
    POST = "post"   # at a postsynaptic spike, from the presynaptic neuron's membrane (Garg et al. 2022)


def _check_fields(rule, positive: tuple[str, ...], nonneg: tuple[str, ...] = ()) -> None:
    for name in positive + nonneg:
        v = getattr(rule, name)
        ok = isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
        if not ok or (name in positive and v <= 0) or (name in nonneg and v < 0):
            kind = "a positive" if name in positive else "a non-negative"
            raise ValueError(f"{type(rule).__name__}: {name} must be {kind} finite number, got {v!r}")


def _decay(rule, tau: float) -> float:
    return math.exp(-rule.dt / tau)


def _outer(post_side: Tensor, pre_side: Tensor) -> Tensor:
    """``sum_n post_side[n, i] * pre_side[n, j]`` over all leading dims: an ``(out, in)`` update."""
    return post_side.reshape(-1, post_side.shape[-1]).transpose(0, 1) @ pre_side.reshape(-1, pre_side.shape[-1])


def _scan(x: Tensor, s: Tensor, decay: float) -> Tensor:
    """The leaky trace ``x <- x * decay + s[t]`` at every step of ``s`` ``(T, ...)``, from ``x``."""
    out = torch.empty_like(s)
    for t in range(s.shape[0]):
        x = torch.add(s[t], x, alpha=decay, out=out[t])
    return out


def _before(x0: Tensor, scanned: Tensor, decay: float) -> Tensor:
    """A trace at ``t - eps``: decayed from the previous step, this step's spike not yet added."""
    return torch.cat([x0.unsqueeze(0), scanned[:-1]]) * decay


class PairState(NamedTuple):
    x_pre: Tensor    # (N, in)
    x_post: Tensor   # (N, out)


@dataclass(frozen=True)
class PairSTDP:
    """Pair-based STDP in trace form (e.g. Morrison, Diesmann & Gerstner 2008, eq. 3-4):

    ``x_pre <- x_pre * exp(-dt/tau_pre) + pre``, ``x_post <- x_post * exp(-dt/tau_post) + post``,
    ``dw[i, j] = a_plus * x_pre[j] * post[i] - a_minus * x_post[i] * pre[j]``.

    A pre spike ``k`` steps before a post spike gives ``+a_plus * exp(-k dt / tau_pre)``
    (LTP); ``k`` steps after, ``-a_minus * exp(-k dt / tau_post)`` (LTD)."""

    a_plus: float = 0.01
    a_minus: float = 0.0105
    tau_pre: float = 20.0
    tau_post: float = 20.0
    dt: float = 1.0
    needs_v = False

    def __post_init__(self) -> None:
        _check_fields(self, ("tau_pre", "tau_post", "dt"), ("a_plus", "a_minus"))

    def init(self, pre: Tensor, post: Tensor) -> PairState:
        return PairState(torch.zeros_like(pre), torch.zeros_like(post))

    def step(self, s: PairState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        x_pre = s.x_pre * _decay(self, self.tau_pre) + pre
        x_post = s.x_post * _decay(self, self.tau_post) + post
        dw = self.a_plus * _outer(post, x_pre) - self.a_minus * _outer(x_post, pre)
        return PairState(x_pre, x_post), dw

    def run(self, s: PairState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        x_pre = _scan(s.x_pre, pre, _decay(self, self.tau_pre))
        x_post = _scan(s.x_post, post, _decay(self, self.tau_post))
        dw = self.a_plus * _outer(post, x_pre) - self.a_minus * _outer(x_post, pre)
        return PairState(x_pre[-1], x_post[-1]), dw


class TripletState(NamedTuple):
    r1: Tensor   # pre, tau_plus   (N, in)
    r2: Tensor   # pre, tau_x      (N, in)
    o1: Tensor   # post, tau_minus (N, out)
    o2: Tensor   # post, tau_y     (N, out)


@dataclass(frozen=True)
class TripletSTDP:
    """Triplet STDP, all-to-all trace form of Pfister & Gerstner (2006, J. Neurosci. 26:9673):

    at a post spike ``dw[i, j] += r1[j] * (a2_plus + a3_plus * o2[i](t - eps))``; at a pre spike
    ``dw[i, j] -= o1[i] * (a2_minus + a3_minus * r2[j](t - eps))``. ``r1, r2`` (pre) and
    ``o1, o2`` (post) are leaky traces with ``tau_plus, tau_x, tau_minus, tau_y``; ``r1, o1``
    include the current step's spikes, ``r2, o2`` are read before the current spike is added
    (the ``t - eps`` of the paper). The paper's *minimal* model is ``a3_minus = 0`` (the
    default). Time constants default to the paper's visual-cortex all-to-all fit (ms);
    the amplitudes are placeholders to tune."""

    a2_plus: float = 5e-3
    a3_plus: float = 6e-3
    a2_minus: float = 7e-3
    a3_minus: float = 0.0
    tau_plus: float = 16.8
    tau_minus: float = 33.7
    tau_x: float = 101.0
    tau_y: float = 125.0
    dt: float = 1.0
    needs_v = False

    def __post_init__(self) -> None:
        _check_fields(self, ("tau_plus", "tau_minus", "tau_x", "tau_y", "dt"),
                      ("a2_plus", "a3_plus", "a2_minus", "a3_minus"))

    def init(self, pre: Tensor, post: Tensor) -> TripletState:
        zp, zq = torch.zeros_like(pre), torch.zeros_like(post)
        return TripletState(zp, zp.clone(), zq, zq.clone())

    def step(self, s: TripletState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        r1 = s.r1 * _decay(self, self.tau_plus) + pre
        o1 = s.o1 * _decay(self, self.tau_minus) + post
        r2 = s.r2 * _decay(self, self.tau_x)      # t - eps: before this step's spike
        o2 = s.o2 * _decay(self, self.tau_y)
        dw = (_outer(post * (self.a2_plus + self.a3_plus * o2), r1)
              - _outer(o1, pre * (self.a2_minus + self.a3_minus * r2)))
        return TripletState(r1, r2 + pre, o1, o2 + post), dw

    def run(self, s: TripletState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        r1 = _scan(s.r1, pre, _decay(self, self.tau_plus))
        o1 = _scan(s.o1, post, _decay(self, self.tau_minus))
        r2s = _scan(s.r2, pre, _decay(self, self.tau_x))
        o2s = _scan(s.o2, post, _decay(self, self.tau_y))
        r2, o2 = _before(s.r2, r2s, _decay(self, self.tau_x)), _before(s.o2, o2s, _decay(self, self.tau_y))
        dw = (_outer(post * (self.a2_plus + self.a3_plus * o2), r1)
              - _outer(o1, pre * (self.a2_minus + self.a3_minus * r2)))
        return TripletState(r1[-1], r2s[-1], o1[-1], o2s[-1]), dw


class RewardState(NamedTuple):
    inner: tuple
    e: Tensor    # eligibility (out, in), summed over the batch


@dataclass(frozen=True)
class RewardSTDP:
    """Reward-modulated STDP with an eligibility trace (Izhikevich 2007; Florian 2007):
    the STDP update of ``stdp`` (any rule here, e.g. ``PairSTDP``) is not applied but fed
    into an eligibility trace ``e <- e * exp(-dt/tau_e) + dw_stdp`` (one per synapse,
    summed over the batch); a reward ``r`` (``Learner.reward(r)``) adds ``r * e`` (the
    eligibility at that moment) to the pending update, which ``Learner.apply(lr)``
    scales by ``lr``: ``dw = lr * r * e``."""

    stdp: object = PairSTDP()
    tau_e: float = 200.0
    dt: float = 1.0

    def __post_init__(self) -> None:
        _check_fields(self, ("tau_e", "dt"))
        if not callable(getattr(self.stdp, "step", None)) or hasattr(self.stdp, "reward"):
            raise TypeError(f"RewardSTDP: stdp must be an STDP rule without its own reward (e.g. PairSTDP()), "
                            f"got {self.stdp!r}")

    @property
    def needs_v(self) -> bool:
        return self.stdp.needs_v

    @property
    def reads_pre(self) -> bool:
        """Whether the inner rule reads the presynaptic neurons' membrane (``VDSP`` with ``Trigger.POST``)."""
        return getattr(self.stdp, "reads_pre", False)

    @property
    def state(self) -> str:
        """The neuron state variable the inner rule reads (when ``needs_v``)."""
        return getattr(self.stdp, "state", "v")

    def init(self, pre: Tensor, post: Tensor) -> RewardState:
        e = pre.new_zeros(post.shape[-1], pre.shape[-1])
        return RewardState(self.stdp.init(pre, post), e)

    def step(self, s: RewardState, pre: Tensor, post: Tensor, v: Tensor | None = None):
        inner, dw = self.stdp.step(s.inner, pre, post, v)
        e = s.e * math.exp(-self.dt / self.tau_e) + dw
        return RewardState(inner, e), None

    def reward(self, s: RewardState, r: float) -> Tensor:
        return r * s.e


@dataclass(frozen=True)
class VDSP:
    """Voltage-dependent synaptic plasticity, after Garg et al. (2022, Front. Neurosci.
    16:983950, arXiv:2203.11022): no trace is kept, a neuron's membrane is the memory.
    Two orientations (``trigger``):

    ``Trigger.PRE`` (default; spikeforge issue 12's wording): the update happens at a
    *presynaptic* spike and reads the *postsynaptic* membrane ``v`` just before that step
    (the neuron layer's state ``state``, ``"v"`` by default):
    ``dw[i, j] = pre[j] * (a_plus * max(v[i] - v_rest, 0) - a_minus * max(v_rest - v[i], 0))``.
    A post neuron charged above ``v_rest`` (on its way to fire) potentiates; one below
    ``v_rest`` (just reset after firing: post before pre) depresses. Choose ``v_rest`` above
    the neuron's reset value (a LIF with ``v_reset=0``: e.g. ``v_rest=0.1``).

    ``Trigger.POST`` (the published orientation): the update happens at a *postsynaptic*
    spike and reads the membrane ``u`` of the *presynaptic* neurons at that step (after
    their own spike and reset in it):
    ``dw[i, j] = post[i] * (a_plus * max(v_rest - u[j], 0) - a_minus * max(u[j] - v_rest, 0))``.
    A presynaptic neuron that fired shortly before is still hyperpolarised (reset below its
    rest ``v_rest``): pre before post, potentiation; one charged above rest has not fired
    (yet): depression. So the presynaptic neurons must be spiking neuron layers with a reset
    below ``v_rest``: ``attach`` reads the neuron layer right before each learned Linear (for
    an input layer: input neurons driven by the data, e.g. ``LIF(v_reset=-1)`` fed the pixels
    as a current, as Garg et al.'s input LIF neurons are); sequence and step calls both work.
    Only the neurons that fire update, so in a winner-take-all layer only the winners learn.

    Differences from the paper, stated: the weight dependence is obtained with
    ``Bounds(Bound.SOFT)`` (multiplicative) instead of the paper's exponential factors, and
    the update is linear in the voltage distance."""

    a_plus: float = 0.01
    a_minus: float = 0.01
    v_rest: float = 0.0
    state: str = "v"
    trigger: Trigger = Trigger.PRE
    needs_v = True

    def __post_init__(self) -> None:
        _check_fields(self, (), ("a_plus", "a_minus"))
        if not isinstance(self.v_rest, (int, float)) or isinstance(self.v_rest, bool) or not math.isfinite(self.v_rest):
            raise ValueError(f"VDSP: v_rest must be a finite number, got {self.v_rest!r}")
        if not isinstance(self.state, str) or not self.state:
            raise TypeError(f"VDSP: state must be the name of a neuron state variable, got {self.state!r}")
        if not isinstance(self.trigger, Trigger):
            raise TypeError(f"VDSP: trigger must be Trigger.PRE or Trigger.POST, got {self.trigger!r}")

    @property
    def reads_pre(self) -> bool:
        """``v`` is the presynaptic neurons' membrane ``(N, in)`` (``Trigger.POST``), else the post's ``(N, out)``."""
        return self.trigger is Trigger.POST

    def init(self, pre: Tensor, post: Tensor) -> tuple:
        return ()

    def step(self, s: tuple, pre: Tensor, post: Tensor, v: Tensor | None = None):
        if v is None:
            side = "presynaptic membrane at" if self.reads_pre else "postsynaptic membrane before"
            raise ValueError(f"VDSP.step: v (the {side} the step) is required")
        if self.reads_pre:        # at a post spike, from the pre membrane u
            return (), _outer(post, self.a_plus * (self.v_rest - v).clamp(min=0)
                              - self.a_minus * (v - self.v_rest).clamp(min=0))
        up = (v - self.v_rest).clamp(min=0)
        down = (self.v_rest - v).clamp(min=0)
        return (), _outer(self.a_plus * up - self.a_minus * down, pre)

    run = step   # no trace: the same formula on (T, N, ...) is one matrix product

