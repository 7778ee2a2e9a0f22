"""SynSense Xylo's integer neuron, bit for bit as the ``xylosim`` simulator computes it, and
the relation that maps the float neurons onto it (used by ``spikeforge.quant``).

The state is integer: 16-bit signed synaptic current ``i_syn`` and membrane ``v_mem``,
held in floating tensors (every value and intermediate is an integer below 2^24, exact in
float32 and float64), so the spec runs on every backend and fused kernel like the others.
Parameters (integers too): ``dash_syn``, ``dash_mem`` (bit-shift decays, 0..15),
``threshold`` (1..32767) and ``bias`` (16-bit; Xylo core v2). ``x`` is the step's synaptic
input: the sum over presynaptic channels of event count x (int8 weight << weight shift).

One step, in xylosim's order (``sat`` clamps to [-32768, 32767], ``decay(u, d)`` is
``u >> d``, i.e. ``floor(u / 2^d)``, replaced by +-1 where that is 0 and u is not)::

    i = sat(i + x)                            # delivery (see XyloLayer for per-event order)
    i = i - decay(i, dash_syn)
    V2: dv = sat(i + neg(decay(v, dash_mem))); dv = sat(dv + bias); v = sat(v + dv)
    V1: v = sat(v - decay(v, dash_mem) + i + bias)       (V1 has no bias register: bias = 0)
    n = min(floor(v / threshold), cap) where v >= threshold, else 0;  v = v - n * threshold

``neg`` is negation in 16 bits, as xylosim v2 computes it: ``-(-32768)`` wraps to -32768 (the
decay is -32768 only for ``v = -32768`` with ``dash_mem = 0``).
``cap`` is 31 spikes per step for the HIDDEN population and 1 for OUTPUT neurons. The
output is the spike count ``n``. Gradients (for quantisation-aware training): the first
spike goes through the surrogate of ``(v - threshold) / threshold``; each ``floor`` has
torch's derivative 0, or passes its argument's gradient with ``straight_through=True``.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass

import torch
from torch import Tensor

from ._spec import NeuronSpec, NotExpressible, Param, Reset, register_neuron
from .cuba import CubaLI, CubaLIF
from .lif import IF, LI, LIF

__all__ = ["XyloLIF", "XyloCore", "XyloPopulation", "XyloForm", "xylo_form", "dash_of", "XYLO_FORMS",
           "STATE_MIN", "STATE_MAX", "DASH_MAX"]

STATE_MIN, STATE_MAX = -32768.0, 32767.0   # 16-bit signed state
DASH_MAX = 15                               # dash fields are 4 bits


class XyloCore(enum.Enum):
    """Which xylosim core: ``V2`` (``xylosim.v2``: Xylo Audio 2, SYNS61201, the one Rockpool's
    ``XyloSim`` runs; membrane increment saturated on its own, bias) or ``V1`` (``xylosim.v1``)."""

    V2 = "v2"
    V1 = "v1"


class XyloPopulation(enum.Enum):
    """Where the neuron sits on the chip, which sets its spikes-per-step cap."""

    HIDDEN = "hidden"   # at most 31 spikes per step
    OUTPUT = "output"   # at most 1 spike per step

    @property
    def cap(self) -> float:
        return 31.0 if self is XyloPopulation.HIDDEN else 1.0


def _sat(u: Tensor) -> Tensor:
    return torch.clamp(u, STATE_MIN, STATE_MAX)


def _floor(u: Tensor, straight_through: bool) -> Tensor:
    f = torch.floor(u)
    return u + (f - u).detach() if straight_through else f


def _shift_factor(dash: Tensor) -> Tensor:
    """``2^-dash`` for ``dash`` in 0..15 (rounded to the nearest integer), as four selects on
    its bits: exact, and printable by every kernel backend."""
    out, d = 1.0, torch.floor(dash + 0.5)
    for bit in (8, 4, 2, 1):
        on = d >= bit
        out = out * torch.where(on, 2.0 ** -bit, 1.0)
        d = torch.where(on, d - bit, d)
    return out


def floor_quotient(v: Tensor, rth: Tensor, straight_through: bool) -> Tensor:
    """``floor(v / th)`` for integers ``v`` (``|v| < 2^21``) and ``th >= 1`` from ``rth = 1 / th``
    (correctly rounded, or a few ulps off as Triton's float32 division on GPUs is): ``(v + 0.5) / th``
    lies at least ``0.5 / th`` from every integer, further than the rounding of ``(v + 0.5) * rth``
    (about ``(v + 0.5) / th * 2^-22``), so its floor is exact: one addition where a correction step
    of the quotient ``v * rth`` took eight operations (RESULTS §19m). With ``straight_through`` the
    gradient is ``v * rth``'s, as for ``_floor``. (For a ``v`` that is not an integer, outside the
    neuron's domain, this is ``floor((v + 0.5) / th)``.)"""
    f = torch.floor((v + 0.5) * rth)
    if not straight_through:
        return f
    u = v * rth
    return u + (f - u).detach()


def _decay(u: Tensor, dash: Tensor, straight_through: bool) -> Tensor:
    """xylosim's ``decay``: ``u >> dash``, or the sign of ``u`` where that is 0. The shift is 0
    only where ``u >= 0`` (the floor of a negative number is -1 or less), so that sign is
    ``u > 0``: 5 instead of 8 vector instructions in the fused kernels; same values and gradients."""
    d = _floor(u * _shift_factor(dash), straight_through)
    return torch.where(d == 0, (u > 0).to(u.dtype), d)


@register_neuron
@dataclass(frozen=True)
class XyloLIF(NeuronSpec):
    """Xylo's integer leaky integrate-and-fire neuron (see the module docstring for the step)."""

    core: XyloCore = XyloCore.V2
    population: XyloPopulation = XyloPopulation.HIDDEN
    straight_through: bool = False

    state = ("i_syn", "v_mem")
    params = {
        # register ranges (a non-integer dash rounds to the nearest integer: _shift_factor)
        "dash_syn": Param(2.0, "bit shift", low=0, high=15),
        "dash_mem": Param(4.0, "bit shift", low=0, high=15),
        "threshold": Param(64.0, "state units", positive=True, low=1, high=32767),
        "bias": Param(0.0, "state units", low=-32768, high=32767),
    }

    def step(self, x, s, p, fire):
        st = self.straight_through
        i, v = s
        i = _sat(i + x)
        i = i - _decay(i, p.dash_syn, st)
        if self.core is XyloCore.V2:
            d = _decay(v, p.dash_mem, st)
            dv = _sat(_sat(i + torch.where(d == STATE_MIN, d, -d)) + p.bias)
            v = _sat(v + dv)
        else:
            v = _sat(v - _decay(v, p.dash_mem, st) + i + p.bias)
        th, rth = p.threshold, 1.0 / p.threshold   # no division per step (neuron alone 80 -> 72 ms, RESULTS §19i)
        z = fire((v - th) * rth)
        n = z * torch.clamp(floor_quotient(v, rth, st), 1.0, self.population.cap)
        return n, (i, v - n * th)


# -- the relation float neuron -> Xylo neuron ---------------------------------------------
@dataclass(frozen=True)
class XyloForm:
    """A float neuron layer written as Xylo's two-stage dynamics, per neuron, per step::

        i' = (1 - a) i + a_in x          (a = a_in = 1: no synaptic filter of its own)
        v' = (1 - b) v + c i' + e        (b = 0: no leak)

    then ``z = H(v - v_threshold)`` with a reset by subtraction (``v_threshold`` is None for
    a non-spiking readout). ``spikeforge.quant`` turns it into ``XyloLIF`` parameters:
    ``dash = round(log2(1 / a))`` (1 without a filter, 15 without a leak) and input, bias
    and threshold scales that keep the float model's steady-state gains."""

    a: Tensor | None
    a_in: Tensor
    b: Tensor
    c: Tensor
    e: Tensor
    v_threshold: Tensor | None

    @property
    def spiking(self) -> bool:
        return self.v_threshold is not None

    def with_synapse(self, a: Tensor, a_in: Tensor, where: str) -> "XyloForm":
        """This neuron behind a separate synaptic filter (an ``LI`` layer on its input)."""
        if self.a is not None:
            raise NotExpressible(where, "synapse", "has a synaptic filter of its own and the LI before it adds a "
                                 "second one in series; a Xylo synapse is one filter")
        return XyloForm(a, a_in, self.b, self.c, self.e, self.v_threshold)


def _soft_reset(spec, where: str) -> None:
    if spec.reset is not Reset.SOFT:
        raise NotExpressible(where, "reset", f"{spec.reset} has no Xylo equivalent (Xylo resets by subtracting "
                             f"the threshold); train with reset='soft'")


def _leaky(spec, p: dict, spiking: bool) -> XyloForm:
    b = spec.dt / p["tau"]
    c = b * p["r"] if getattr(spec, "decay_input", True) else p["r"]
    one = torch.ones_like(b)
    return XyloForm(None, one, b, c, b * p["v_leak"], p["v_threshold"] if spiking else None)


def _cuba(spec, p: dict, spiking: bool) -> XyloForm:
    a, b = spec.dt / p["tau_syn"], spec.dt / p["tau_mem"]
    return XyloForm(a, a, b, b * p["r"], b * p["v_leak"], p["v_threshold"] if spiking else None)


def _if(spec, p: dict, spiking: bool) -> XyloForm:
    one = torch.ones_like(p["r"])
    return XyloForm(None, one, 0.0 * one, spec.dt * p["r"], 0.0 * one, p["v_threshold"])


#: float spec type -> its Xylo form; a subclass (PLIF) uses its base's entry
XYLO_FORMS = {CubaLIF: _cuba, CubaLI: _cuba, LIF: _leaky, LI: _leaky, IF: _if}


def xylo_form(spec: NeuronSpec, p: dict, where: str) -> XyloForm:
    """The Xylo form of float neuron ``spec`` with parameters ``p`` (name -> tensor);
    ``where`` names the layer in errors (``NotExpressible``)."""
    fn = next((XYLO_FORMS[t] for t in type(spec).__mro__ if t in XYLO_FORMS), None)
    if fn is None:
        raise NotExpressible(where, "neuron", f"{type(spec).__name__} has no Xylo counterpart (Xylo neurons are "
                             f"current-based LIFs: use {', '.join(t.__name__ for t in XYLO_FORMS)})")
    if spec.spiking:
        _soft_reset(spec, where)
    form = fn(spec, {k: torch.as_tensor(v, dtype=torch.float64) for k, v in p.items()}, spec.spiking)
    for name in ("a", "b"):
        value = getattr(form, name)
        if value is not None and not bool(((value >= 0) & (value < 1)).all()):
            raise NotExpressible(where, "tau", f"a decay per step of {_show(value)} (dt / tau) is outside [0, 1): "
                                 f"Xylo's decays need tau > dt")
    return form


def _show(t: Tensor) -> str:
    t = torch.as_tensor(t)
    return f"{t.item():.4g}" if t.numel() == 1 else f"{t.min().item():.4g}..{t.max().item():.4g}"


def dash_of(decay: Tensor | None, default: int) -> Tensor:
    """``round(log2(1 / decay))`` (the dash whose ``2^-dash`` is nearest the decay per step in
    log scale); ``default`` where there is no such decay (None, or 0: no leak)."""
    if decay is None:
        return torch.tensor(float(default), dtype=torch.float64)
    d = torch.as_tensor(decay, dtype=torch.float64)
    safe = torch.where(d > 0, d, torch.ones_like(d))
    return torch.where(d > 0, torch.round(-torch.log2(safe)), torch.full_like(d, float(default)))

