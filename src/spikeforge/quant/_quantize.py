"""Float model -> integer Xylo model: ``quantize(model, target="xylo")``.

The model is an ``nn.Sequential`` (or has ``.network()``, as the trainer's ``Classifier``) of
``Linear -> neuron`` pairs, optionally after one non-spiking ``LI`` layer on the input that
acts as the first layer's synapses. Each neuron maps onto ``XyloLIF`` through the relation
its spec declares (``spikeforge.neurons.xylo.XYLO_FORMS``: a ``XyloForm`` per float spec);
nothing here depends on the neuron model. Per layer:

* ``dash_syn = round(log2(tau_syn / dt))`` (1 without a synaptic filter: Xylo's fastest
  synapse), ``dash_mem = round(log2(tau_mem / dt))`` (15 without a leak);
* per neuron a scale ``k`` from float membrane to integer membrane; the integer weights are
  ``round(W * k * G / 2^shift)`` with ``G`` the gain that keeps the float neuron's steady
  state under the integer decays, the threshold ``round(k * v_threshold)`` and the bias (the
  float ``v_leak`` and the Linear's bias, as a constant drive) ``round(k * drive)``;
* ``shift`` (one per weight matrix) is the largest in 0..8 for which every neuron's weights
  use the full int8 range with its threshold at most ``threshold_max``; ``k`` is then as
  large as both allow. A non-spiking readout (read as its membrane) shares one ``k`` across
  its neurons (their membranes stay comparable) with its weights on the full int8 range at
  shift 0, or, given ``calibration`` input, the largest shift and ``k`` at which the float
  readout's largest membrane on that input maps to at most 2^14; its threshold is 32767.

The design rules (input, hidden and output counts) and every layer are checked before any
value is computed; what Xylo cannot run raises ``XyloError`` naming the layer and the limit.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from ..neurons import NotExpressible
from ..neurons.xylo import XyloCore, XyloForm, XyloPopulation, dash_of, xylo_form
from ..nn.neuron import Neuron
from ._layers import Readout, XyloLayer
from ._net import XyloNet
from ._target import XYLO, XyloError

__all__ = ["quantize", "TARGETS"]

TARGETS = ("xylo",)
_SKIPPED = (nn.Identity, nn.Dropout)   # identities at inference
_READOUT_MAX = 2.0 ** 14


@dataclass(frozen=True)
class _Options:
    core: XyloCore
    qat: bool
    threshold_max: int
    readout_max: float | None   # the float readout's largest |membrane| on the calibration input
    surrogate: object
    backend: str | None


@dataclass(frozen=True)
class _Group:
    """One ``Linear -> neuron`` pair (and the LI synapse layer before the first)."""

    where: str
    linear: nn.Linear
    neuron: Neuron
    form: XyloForm


def quantize(model: nn.Module, target: str = "xylo", *, qat: bool = False, core: str | XyloCore = XyloCore.V2,
             threshold_max: int = 4096, calibration: Tensor | None = None, surrogate=None,
             backend: str | None = None) -> XyloNet:
    """The integer (Xylo) counterpart of a float model (see the module docstring).

    ``qat=True``: the weights stay float (``nn.Parameter``, initialised from the model) and
    are rounded and saturated to int8 in every forward pass with a straight-through
    gradient; the neurons are the integer ones with straight-through floors and the
    ``surrogate`` (default ATan) for the spikes. Train it like any model, then ``.freeze()``.
    ``core``: ``"v2"`` (Xylo Audio 2, Rockpool's ``XyloSim``) or ``"v1"`` (no bias).
    ``calibration``: input events (T, B, inputs) on which the float model's readout membrane
    is measured, to scale a non-spiking readout as finely as 16 bits allow (without it the
    readout's weights use the int8 range at shift 0)."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {', '.join(TARGETS)}, got {target!r}")
    if not isinstance(qat, bool):
        raise TypeError(f"qat must be True or False, got {qat!r}")
    if isinstance(threshold_max, bool) or not isinstance(threshold_max, int) or not 1 <= threshold_max <= 2 ** 14:
        raise ValueError(f"threshold_max must be an integer in 1..16384, got {threshold_max!r}")
    items = _flatten(model)
    groups = _groups(items)
    _check_sizes(groups)
    opt = _Options(_core(core), qat, threshold_max, _calibrate(items, calibration), surrogate, backend)
    layers = [_layer(k, g, len(groups), opt) for k, g in enumerate(groups)]
    _share_rec_shift(layers, groups, opt)
    return XyloNet(*layers)


def _core(core) -> XyloCore:
    try:
        return XyloCore(core.lower() if isinstance(core, str) else core)
    except ValueError:
        raise ValueError(f"core must be 'v1' or 'v2', got {core!r}") from None


# -- the model's structure -----------------------------------------------------------------
def _flatten(model: nn.Module, prefix: str = "net") -> list[tuple[str, nn.Module]]:
    if not isinstance(model, nn.Sequential) and callable(getattr(model, "network", None)):
        model = model.network()
    if not isinstance(model, nn.Sequential):
        raise XyloError(f"quantize takes an nn.Sequential of Linear -> neuron layers (or a model with "
                        f".network()), got {type(model).__name__}")
    out = []
    for name, m in model.named_children():
        where = f"{prefix}[{name}]" if name.isdigit() else f"{prefix}.{name}"
        if isinstance(m, nn.Sequential):
            out += _flatten(m, where)
        elif not isinstance(m, _SKIPPED) and type(m).__name__ != "TimeDropout":
            out.append((f"{where} ({type(m).__name__})", m))
    return out


def _groups(items: list[tuple[str, nn.Module]]) -> list[_Group]:
    synapse, groups, k = None, [], 0
    if items and isinstance(items[0][1], Neuron) and not items[0][1].spec.spiking:
        synapse, k = items[0], 1        # an LI layer on the input: the first layer's synapses
    while k < len(items):
        where, m = items[k]
        if not isinstance(m, nn.Linear):
            raise XyloError(f"{where}: {_why_not(m)}; a Xylo network is Linear -> neuron layers (optionally after "
                            f"one non-spiking LI layer on the input, its synapses)")
        if k + 1 == len(items) or not isinstance(items[k + 1][1], Neuron):
            nxt = items[k + 1][0] if k + 1 < len(items) else "the end of the model"
            raise XyloError(f"{where}: is followed by {nxt}; on Xylo every weight matrix feeds neurons")
        n_where, neuron = items[k + 1]
        try:
            form = xylo_form(neuron.spec, _params(neuron, m.out_features), n_where)
            if synapse is not None and not groups:
                form = form.with_synapse(*_synapse(*synapse), n_where)
        except NotExpressible as e:
            raise XyloError(str(e)) from None
        groups.append(_Group(f"{where} -> {n_where}", m, neuron, form))
        k += 2
    for g in groups[:-1]:
        if not g.form.spiking:
            raise XyloError(f"{g.where}: a non-spiking neuron can only be the output layer (read as its membrane)")
    return groups


def _why_not(m: nn.Module) -> str:
    if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d)):
        return "Xylo has no convolutions (its layers are fully connected)"
    if isinstance(m, Neuron):
        return "a neuron layer needs a Linear before it"
    return f"{type(m).__name__} has no Xylo counterpart"


def _params(neuron: Neuron, n: int) -> dict:
    return {k: v.detach().to(torch.float64).expand(n) for k, v in zip(neuron.spec.params, neuron.params())}


def _synapse(where: str, li: Neuron) -> tuple[Tensor, Tensor]:
    """An LI layer ``v' = v + dt/tau (v_leak - v + r x)`` as a synapse: decay ``a`` and input gain ``a r``."""
    p = {k: v.detach().to(torch.float64) for k, v in zip(li.spec.params, li.params())}
    if set(p) != {"tau", "r", "v_leak"} or bool((p["v_leak"] != 0).any()) or p["tau"].numel() != 1:
        raise XyloError(f"{where}: as Xylo's input synapses an LI layer needs one tau and v_leak = 0")
    a = li.spec.dt / p["tau"]
    return a, a * p["r"]


def _check_sizes(groups: list[_Group]) -> None:
    if len(groups) < 2:
        raise XyloError(f"Xylo needs a hidden and an output layer (two Linear -> neuron pairs), got {len(groups)}")
    n_in, n_out = groups[0].linear.in_features, groups[-1].linear.out_features
    n_hid = sum(g.linear.out_features for g in groups[:-1])
    for ok, what in ((n_in <= XYLO.inputs, f"{groups[0].where}: {n_in} inputs; Xylo has {XYLO.inputs} input channels"),
                     (n_hid <= XYLO.hidden, f"{n_hid} hidden neurons; Xylo has {XYLO.hidden}"),
                     (n_out <= XYLO.outputs, f"{groups[-1].where}: {n_out} outputs; Xylo has {XYLO.outputs}")):
        if not ok:
            raise XyloError(what)


# -- numbers ---------------------------------------------------------------------------------
def _dashes(g: _Group, n: int) -> tuple[Tensor, Tensor]:
    f = g.form
    ds, dm = dash_of(f.a, 1).expand(n), dash_of(f.b, XYLO.dash_max).expand(n)
    for name, d, lo in (("dash_syn", ds, 1), ("dash_mem", dm, 0)):
        if not bool(((d >= lo) & (d <= XYLO.dash_max)).all()):
            bad = d[(d < lo) | (d > XYLO.dash_max)][0].item()
            raise XyloError(f"{g.where}: its time constant gives {name} {bad:g}, outside {lo}..{XYLO.dash_max} "
                            f"(dash = round(log2(tau / dt)))")
    return ds.clone(), dm.clone()


def _numbers(g: _Group, ds: Tensor, dm: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """Float weights (n, in), the input gain ``G`` (n,) and the bias per unit of ``k`` (n,)."""
    f, n = g.form, g.linear.out_features
    a_s, a_m = 2.0 ** -ds, 2.0 ** -dm
    a = torch.ones(n, dtype=torch.float64) if f.a is None else f.a.expand(n)
    b = torch.as_tensor(f.b, dtype=torch.float64).expand(n)
    leak = torch.where(b > 0, a_m / torch.where(b > 0, b, torch.ones_like(b)), torch.ones_like(b))
    gain = f.c * f.a_in * (a_s / a) / (1 - a_s) * leak
    w = g.linear.weight.detach().to(torch.float64)
    beta = g.linear.bias.detach().to(torch.float64) if g.linear.bias is not None else torch.zeros(n, dtype=w.dtype)
    return w, gain.expand(n), ((f.e + f.c * beta) * leak).expand(n)


def _layer(k: int, g: _Group, count: int, opt: _Options, shift: int | None = None) -> XyloLayer:
    n, last, spiking = g.linear.out_features, k == count - 1, g.form.spiking
    ds, dm = _dashes(g, n)
    w, gain, bias_k = _numbers(g, ds, dm)
    wmax = (w.abs() * gain.abs()[:, None]).amax(1)
    if spiking:
        vth = g.form.v_threshold.expand(n)
        if not bool((vth > 0).all()):
            raise XyloError(f"{g.where}: v_threshold must be > 0 on Xylo, got {vth.min().item():g}")
        cap = opt.threshold_max / vth
    elif opt.readout_max:   # a readout: its calibrated membrane at most _READOUT_MAX
        cap = torch.full((n,), _READOUT_MAX / opt.readout_max, dtype=w.dtype)
    else:                   # a readout: the int8 range at shift 0
        cap = torch.full((n,), 127 / wmax.max().item() if wmax.max() > 0 else 1.0, dtype=w.dtype)
    cap = torch.minimum(cap, XYLO.state_max / bias_k.abs())
    if not spiking:
        wmax, cap = wmax.max().expand(n), cap.min().expand(n)   # one scale: the membranes stay comparable
    if shift is None:
        shift = _shift(wmax, cap)
    scale = torch.minimum(torch.where(wmax > 0, 127 * 2.0 ** shift / wmax, cap), cap)
    row = scale * gain / 2.0 ** shift
    threshold = torch.round(scale * vth) if spiking else torch.full((n,), float(XYLO.state_max))
    if spiking and not bool((threshold >= 1).all()):
        raise XyloError(f"{g.where}: its threshold rounds to 0 at the scale its weights allow (weights too large "
                        f"for v_threshold on int8 x 16 bits)")
    name = f"{'output' if last else 'hidden'} layer {k}: {g.where}"
    return XyloLayer(w if opt.qat else torch.round(w * row[:, None]), shift, dash_syn=ds, dash_mem=dm,
                     threshold=threshold, bias=torch.round(scale * bias_k), core=opt.core, delay=min(k, 1),
                     population=XyloPopulation.OUTPUT if last else XyloPopulation.HIDDEN,
                     readout=Readout.SPIKES if spiking else Readout.VMEM, name=name,
                     gain=row[:, None] if opt.qat else None, out_scale=1.0 if spiking else 1.0 / scale[0].item(),
                     surrogate=opt.surrogate, backend=opt.backend)


def _shift(wmax: Tensor, cap: Tensor) -> int:
    """The largest shift in 0..8 at which full-range int8 weights keep every scale within its cap."""
    used = (wmax > 0) & torch.isfinite(cap)
    if not bool(used.any()):
        return 0
    s = min(math.floor(math.log2(c * m / 127)) for c, m in zip(cap[used].tolist(), wmax[used].tolist()))
    return max(0, min(8, s))


def _share_rec_shift(layers: list, groups: list, opt: _Options) -> None:
    """Hidden-to-hidden layers share Xylo's recurrent weight matrix and its one shift: the smallest."""
    inner = range(1, len(layers) - 1)
    shifts = {layers[k].shift for k in inner}
    if len(shifts) > 1:
        for k in inner:
            layers[k] = _layer(k, groups[k], len(layers), opt, shift=min(shifts))


def _calibrate(items: list[tuple[str, nn.Module]], x: Tensor | None) -> float | None:
    """The float model's largest |output| of its last layer on input ``x``, or None."""
    if x is None:
        return None
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(f"calibration must be input events of shape (T, B, inputs), got "
                         f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
    with torch.no_grad():
        for _, m in items:
            x = m(x)
    top = float(x.abs().max())
    return top if top > 0 else None
