"""One Xylo population and the weight matrix that feeds it: ``XyloLayer``.

Weights are int8 values, shifted left by the layer's ``shift``; each step's synaptic input
is (event counts) @ (weights << shift), and the neurons are ``XyloLIF`` (``spikeforge.neurons``),
run by the usual neuron module on the usual backends (``layer.neuron.last_backend``).

Delivery order. xylosim adds an event's weight to the synaptic current one event at a time,
saturating to 16 bits after each addition, presynaptic channel by channel in index order. The
sum of a step's input, saturated once, is the same unless a partial sum leaves the 16-bit
range. The layer runs the neurons on the summed input (one sequence call), then checks from
the recorded currents whether the per-event order would have changed any step (only where
``|i_syn| + sum |weight * count|`` exceeds 32767); if so it runs the layer again step by step
with the per-event result, which for one step's events is ``clamp(i + sum, L, H)`` with
``L``/``H`` the sums delivered in order from -32768/32767. ``last_delivery`` says which ran
(``"summed"`` or ``"per-event"``): both give xylosim's numbers.
"""
from __future__ import annotations

import enum

import torch
from torch import Tensor, nn

from ..neurons.xylo import STATE_MAX, STATE_MIN, XyloCore, XyloPopulation
from ..nn.neuron import MODULES
from ._target import XYLO, XyloError, check_integers

__all__ = ["XyloLayer", "Readout"]


class Readout(enum.Enum):
    """What a layer returns: spike counts, or the membrane (a non-spiking readout)."""

    SPIKES = "spikes"
    VMEM = "vmem"


def fake_int8(u: Tensor) -> Tensor:
    """``u`` rounded and saturated to int8 in the forward pass; the backward pass is the
    identity (straight-through over both the rounding and the saturation)."""
    q = torch.clamp(torch.round(u), XYLO.weight_min, XYLO.weight_max)
    return u + (q - u).detach()


class XyloLayer(nn.Module):
    """Weights ``(out, in)`` -> ``out`` Xylo neurons.

    ``weight``: int8 values; or, with ``gain`` (``(out, 1)``), float master weights trained
    through ``fake_int8(weight * gain)`` (quantisation-aware training; the neurons then use
    straight-through floors). ``delay=1`` delivers the input one step late (every layer after
    the first on Xylo). ``out_scale`` turns a ``VMEM`` readout into the float model's units.
    Everything is checked against Xylo's ranges here (``XyloError`` naming ``name``)."""

    def __init__(self, weight: Tensor, shift: int, *, dash_syn, dash_mem, threshold, bias=0.0,
                 population: XyloPopulation = XyloPopulation.HIDDEN, core: XyloCore = XyloCore.V2, delay: int = 0,
                 readout: Readout = Readout.SPIKES, name: str = "layer", gain: Tensor | None = None,
                 out_scale: float = 1.0, surrogate=None, backend: str | None = None) -> None:
        super().__init__()
        self.name, self.population, self.core = name, XyloPopulation(population), XyloCore(core)
        self.readout, self.delay, self.out_scale = Readout(readout), int(delay), float(out_scale)
        if not (isinstance(weight, Tensor) and weight.dim() == 2):
            raise XyloError(f"{name}: weight must be a 2-D tensor (out, in), got {_shape(weight)}")
        self.shift = int(check_integers(name, "weight shift", torch.tensor(shift), 0, XYLO.shift_max))
        n = weight.shape[0]
        params = self._neuron_params(n, dash_syn, dash_mem, threshold, bias)
        if gain is None:
            w = check_integers(name, "weight", weight, XYLO.weight_min, XYLO.weight_max)
            check_integers(name, f"weight << {self.shift}", w * 2.0 ** self.shift, XYLO.state_min, XYLO.state_max)
            self.register_buffer("weight", w.to(torch.int8))
            self.master = None
        else:
            if 128 * 2 ** self.shift > -XYLO.state_min:
                raise XyloError(f"{name}: weight shift {self.shift} > 8 overflows 16 bits for trained int8 weights")
            self.master = nn.Parameter(weight.detach().to(torch.float64).clone())
            self.register_buffer("gain", torch.as_tensor(gain, dtype=torch.float64).reshape(n, 1).clone())
        self.neuron = MODULES["XyloLIF"](core=self.core, population=self.population,
                                         straight_through=gain is not None, record=True, surrogate=surrogate,
                                         backend=backend, **params).double()
        self.last_delivery = None   # "summed" or "per-event" (see the module docstring)
        self.trace = None           # (i_syn, v_mem) after every step of the last call
        self.spikes = None          # its spike counts (also of a VMEM readout)

    def _neuron_params(self, n: int, dash_syn, dash_mem, threshold, bias) -> dict:
        name, full = self.name, (lambda v: torch.as_tensor(v, dtype=torch.float64).expand(n).clone())
        p = {"dash_syn": check_integers(name, "dash_syn", full(dash_syn), 0, XYLO.dash_max),
             "dash_mem": check_integers(name, "dash_mem", full(dash_mem), 0, XYLO.dash_max),
             "threshold": check_integers(name, "threshold", full(threshold), 1, XYLO.state_max),
             "bias": check_integers(name, "bias", full(bias), XYLO.state_min, XYLO.state_max)}
        if self.core is XyloCore.V1 and bool((p["bias"] != 0).any()):
            raise XyloError(f"{name}: Xylo core v1 has no bias; got a nonzero bias (use core v2)")
        return p

    @property
    def in_features(self) -> int:
        return (self.weight if self.master is None else self.master).shape[1]

    @property
    def out_features(self) -> int:
        return (self.weight if self.master is None else self.master).shape[0]

    def int_weight(self) -> Tensor:
        """The int8 weight values (float64; with QAT, straight-through from the master weights)."""
        return self.weight.to(torch.float64) if self.master is None else fake_int8(self.master * self.gain)

    def frozen(self) -> "XyloLayer":
        """An integer copy (QAT master weights rounded and saturated); an integer layer: itself."""
        if self.master is None:
            return self
        p = self.neuron
        return XyloLayer(self.int_weight().detach(), self.shift, dash_syn=p.dash_syn, dash_mem=p.dash_mem,
                         threshold=p.threshold, bias=p.bias, population=self.population, core=self.core,
                         delay=self.delay, readout=self.readout, name=self.name, out_scale=self.out_scale,
                         surrogate=p.surrogate, backend=p.backend)

    # -- running ---------------------------------------------------------------------------
    def forward(self, s: Tensor) -> Tensor:
        """Event counts (T, B, in) -> spike counts or membrane (T, B, out), float64."""
        s = self._input(s)
        w = self.int_weight() * 2.0 ** self.shift
        a = s @ w.t()
        z = self.neuron(a)
        i_syn, v = self.neuron.trace
        self.last_delivery = "summed"
        bounds = self._order_matters(s, w, a, torch.cat([torch.zeros_like(i_syn[:1]), i_syn[:-1]]))
        if bounds is not None:
            z, (i_syn, v) = self._per_event(a, *bounds)
            self.last_delivery = "per-event"
        self.trace, self.spikes = self.neuron.spec.State(i_syn, v), z
        return v if self.readout is Readout.VMEM else z

    def _input(self, s: Tensor) -> Tensor:
        if not isinstance(s, Tensor) or s.dim() != 3 or s.shape[-1] != self.in_features:
            raise XyloError(f"{self.name}: input must be event counts of shape (T, B, {self.in_features}), "
                            f"got {_shape(s)}")
        if self.delay == 0:   # the chip's input channels: at most 15 events per channel and step
            s = check_integers(self.name, "input events", s, 0, XYLO.input_events)
        else:
            s = s.to(torch.float64)
            s = torch.cat([torch.zeros_like(s[:1]), s[:-1]])
        return s

    def _order_matters(self, s: Tensor, w: Tensor, a: Tensor, i_prev: Tensor):
        """``(L, H)`` if delivering some step's events one by one gives another current than
        their saturated sum, else None."""
        with torch.no_grad():
            reach = i_prev.abs() + s.abs() @ w.abs().t()
            if not bool((reach > STATE_MAX).any()):
                return None
        lo, hi = _bounds(s, w)
        with torch.no_grad():
            x = i_prev + a
            same = torch.equal(torch.clamp(x, lo, hi), torch.clamp(x, STATE_MIN, STATE_MAX))
        return None if same else (lo, hi)

    def _per_event(self, a: Tensor, lo: Tensor, hi: Tensor):
        m = self.neuron
        m.reset()
        zs = []
        for t in range(a.shape[0]):
            i = m.state.i_syn if m.state is not None else torch.zeros_like(a[0])
            zs.append(m.step(torch.clamp(i + a[t], lo[t], hi[t]) - i))
        trace = m.trace
        m.state = None
        return torch.stack(zs), trace

    def extra_repr(self) -> str:
        qat = ", qat" if self.master is not None else ""
        return (f"{self.name!r}, in={self.in_features}, out={self.out_features}, shift={self.shift}, "
                f"{self.population.value}, core {self.core.value}, delay={self.delay}, {self.readout.value}{qat}")


def _bounds(s: Tensor, w: Tensor) -> tuple[Tensor, Tensor]:
    """Each step's events delivered in xylosim's order (channel by channel; a channel's
    ``count`` equal weights saturate like their sum) starting from -32768 and from 32767."""
    lo = torch.full((*s.shape[:2], w.shape[0]), STATE_MIN, dtype=torch.float64)
    hi = torch.full_like(lo, STATE_MAX)
    active = (s != 0).any(dim=0).any(dim=0) & (w != 0).any(dim=0)
    for j in active.nonzero().flatten().tolist():
        c = s[..., j:j + 1] * w[:, j]
        lo, hi = torch.clamp(lo + c, STATE_MIN, STATE_MAX), torch.clamp(hi + c, STATE_MIN, STATE_MAX)
    return lo, hi


def _shape(t) -> str:
    return f"shape {tuple(t.shape)}" if isinstance(t, Tensor) else type(t).__name__
