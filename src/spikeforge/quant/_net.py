"""An integer network as Xylo runs it (``XyloNet``), its design rules, and the specification
that Rockpool's ``XyloSim.from_specification`` (and the chip's configuration) takes."""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor, nn

from ..neurons.xylo import XyloCore, XyloPopulation
from ._layers import Readout, XyloLayer
from ._target import XYLO, XyloError

__all__ = ["XyloNet", "check_design", "specification"]


class XyloNet(nn.Sequential):
    """``XyloLayer`` s in order: the first takes the input events (T, B, <=16) and is Xylo's first
    hidden population; each next layer receives the previous layer's spikes one step later
    (all hidden layers share Xylo's hidden population and its recurrent weight matrix); the
    last is Xylo's output population. ``net(events)`` returns the last layer's output: spike
    counts, or its membrane for a ``VMEM`` readout (integers in float64). ``scores(events)``
    gives the readout in the float model's units (for losses and predictions)."""

    def __init__(self, *layers: XyloLayer) -> None:
        super().__init__(*layers)
        check_design(list(layers))

    def __getitem__(self, idx):
        """A slice is a plain ``nn.Sequential`` of those layers (a part of a net is no Xylo net)."""
        if isinstance(idx, slice):
            return nn.Sequential(*list(self._modules.values())[idx])
        return super().__getitem__(idx)

    @property
    def core(self) -> XyloCore:
        return self[0].core

    def scores(self, events: Tensor) -> Tensor:
        return self(events) * self[-1].out_scale

    def freeze(self) -> "XyloNet":
        """The integer network (quantisation-aware master weights rounded and saturated)."""
        return XyloNet(*(layer.frozen() for layer in self))

    def specification(self) -> dict:
        return specification(self)


def check_design(layers: list) -> None:
    """Xylo's design rules for a list of layers (``XyloError`` naming the layer and the limit)."""
    if len(layers) < 2 or not all(isinstance(m, XyloLayer) for m in layers):
        raise XyloError(f"a Xylo network is at least two XyloLayers (hidden, then output), got "
                        f"{[type(m).__name__ for m in layers]}")
    hidden, out = layers[:-1], layers[-1]
    _rule(layers[0].in_features <= XYLO.inputs, f"{layers[0].name}: {layers[0].in_features} input channels; "
          f"Xylo has {XYLO.inputs}")
    total = sum(m.out_features for m in hidden)
    _rule(total <= XYLO.hidden, f"{total} hidden neurons in {len(hidden)} layer(s); Xylo has {XYLO.hidden}")
    _rule(out.out_features <= XYLO.outputs, f"{out.name}: {out.out_features} output neurons; Xylo has {XYLO.outputs}")
    for k, m in enumerate(layers):
        last = k == len(layers) - 1
        want = XyloPopulation.OUTPUT if last else XyloPopulation.HIDDEN
        _rule(m.population is want, f"{m.name}: population {m.population.value}, expected {want.value}")
        _rule(m.delay == (0 if k == 0 else 1), f"{m.name}: delay {m.delay}; on Xylo the first layer gets the input "
              f"at once and every later layer the previous spikes one step later")
        _rule(m.core is layers[0].core, f"{m.name}: core {m.core.value} differs from {layers[0].core.value}")
        _rule(last or m.readout is Readout.SPIKES, f"{m.name}: only the output layer can be read as its membrane")
        if k:
            _rule(m.in_features == layers[k - 1].out_features, f"{m.name}: {m.in_features} inputs, but "
                  f"{layers[k - 1].name} has {layers[k - 1].out_features} neurons")
    shifts = {m.shift for m in layers[1:-1]}
    _rule(len(shifts) <= 1, f"hidden-to-hidden layers {[m.name for m in layers[1:-1]]} have weight shifts "
          f"{sorted(shifts)}; they share Xylo's recurrent weights and so one shift")


def _rule(ok: bool, message: str) -> None:
    if not ok:
        raise XyloError(message)


def specification(net: XyloNet) -> dict:
    """The network as the keyword arguments of Rockpool's ``XyloSim.from_specification`` (the
    keys of Rockpool's Xylo mapper): int8 ``weights_in`` (16-or-fewer, Nhidden),
    ``weights_rec`` (Nhidden, Nhidden), ``weights_out`` (Nhidden, Nout), dashes, thresholds,
    biases and the three weight shifts. Hidden layers are numbered one after another."""
    layers = [m.frozen() for m in net]
    hidden, out = layers[:-1], layers[-1]
    sizes = [m.out_features for m in hidden]
    offsets = np.cumsum([0, *sizes])
    n_hid = int(offsets[-1])
    w_in = np.zeros((hidden[0].in_features, n_hid), np.int8)
    w_in[:, : sizes[0]] = _w(hidden[0]).T
    w_rec = np.zeros((n_hid, n_hid), np.int8)
    for k in range(1, len(hidden)):
        w_rec[offsets[k - 1]:offsets[k], offsets[k]:offsets[k + 1]] = _w(hidden[k]).T
    w_out = np.zeros((n_hid, out.out_features), np.int8)
    w_out[offsets[-2]:, :] = _w(out).T

    def cat(name):
        return np.concatenate([_p(m, name) for m in hidden])

    return {"weights_in": w_in, "weights_rec": w_rec, "weights_out": w_out,
            "dash_mem": cat("dash_mem"), "dash_syn": cat("dash_syn"), "dash_syn_2": np.zeros(n_hid, np.int64),
            "dash_mem_out": _p(out, "dash_mem"), "dash_syn_out": _p(out, "dash_syn"),
            "threshold": cat("threshold"), "threshold_out": _p(out, "threshold"),
            "bias": cat("bias"), "bias_out": _p(out, "bias"),
            "weight_shift_in": hidden[0].shift, "weight_shift_rec": hidden[1].shift if len(hidden) > 1 else 0,
            "weight_shift_out": out.shift, "aliases": None}


def _w(m: XyloLayer) -> np.ndarray:
    return m.weight.cpu().numpy().astype(np.int8)


def _p(m: XyloLayer, name: str) -> np.ndarray:
    return getattr(m.neuron, name).detach().cpu().numpy().round().astype(np.int64)
