"""Deployment: a ``XyloNet`` -> Rockpool's ``XyloSim`` (built on the ``xylosim`` C++ simulator).

Rockpool 3.1 needs no ``samna`` for its Xylo Audio 2 simulator, but its package
``rockpool.devices.xylo`` imports every Xylo generation in its ``__init__``, and the
Xylo Audio 3 one (``syns65302``) imports ``samna`` at the top of a module, so
``import rockpool.devices.xylo.syns61201`` fails without samna (PyPI's samna is an
online-only stub). ``rockpool_xylo()`` installs a bare package object for
``rockpool.devices.xylo`` (its ``__path__``, without running its ``__init__``) and imports
the ``syns61201`` subpackage through it; with samna installed it imports normally.
Core v1 (``xylosim.v1``): Rockpool's ``syns61300.XyloSim.from_specification`` calls samna to
validate, so ``run_xylosim`` builds ``xylosim.v1.XyloLayer`` directly, as Rockpool's
``from_config`` does.
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types

import numpy as np
import torch
from torch import Tensor

from ..neurons.xylo import XyloCore
from ._layers import Readout
from ._target import XYLO, check_integers

__all__ = ["rockpool_xylo", "rockpool_network", "xylosim", "run_xylosim"]

_HINT = "pip install rockpool==3.1.0 xylosim==0.1.3 (or spikeforge[xylo])"


def _need(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        raise ImportError(f"deploying to XyloSim needs {module}: {_HINT}")


def rockpool_xylo():
    """``rockpool.devices.xylo.syns61201`` (XyloSim, mapper), imported without samna."""
    _need("rockpool")
    _need("xylosim")
    name = "rockpool.devices.xylo"
    if name not in sys.modules and importlib.util.find_spec("samna") is None:
        spec = importlib.util.find_spec(name)
        pkg = types.ModuleType(name, "rockpool.devices.xylo without its __init__ (see spikeforge.quant._deploy)")
        pkg.__path__, pkg.__package__, pkg.__spec__ = list(spec.submodule_search_locations), name, spec
        sys.modules[name] = pkg
    return importlib.import_module(name + ".syns61201")


def xylosim(net, dt: float = 1e-3):
    """Rockpool's ``XyloSim`` (core v2) for ``net``, built by ``XyloSim.from_specification`` from
    ``net.specification()``; its output mode follows the readout (``"Vmem"`` or ``"Spike"``)."""
    if net.core is not XyloCore.V2:
        raise ValueError("Rockpool's XyloSim is core v2 (xylosim.v2); for core v1 use run_xylosim(net, events)")
    mode = "Vmem" if net[-1].readout is Readout.VMEM else "Spike"
    return rockpool_xylo().XyloSim.from_specification(**net.specification(), dt=dt, output_mode=mode)


def rockpool_network(net, dt: float = 1e-3):
    """The integer network as Rockpool modules (``LinearTorch`` -> ``LIFTorch`` per layer, with
    ``tau = dt * 2^dash`` and the integer weights, thresholds and biases), for Rockpool's own Xylo
    mapper: ``mapper(rockpool_network(net).as_graph())`` gives ``net.specification()``'s values
    (Rockpool's mapper stores biases in its weight dtype; a dash of 0 (tau = dt) it refuses)."""
    rockpool_xylo()
    from rockpool.nn.combinators import Sequential
    from rockpool.nn.modules import LIFTorch, LinearTorch

    mods = []
    for m in net:
        n, f = m.neuron, (lambda t: t.detach().float())
        mods += [LinearTorch((m.in_features, m.out_features), weight=f(m.frozen().weight.T), has_bias=False),
                 LIFTorch(m.out_features, tau_syn=dt * 2.0 ** f(n.dash_syn), tau_mem=dt * 2.0 ** f(n.dash_mem),
                          threshold=f(n.threshold), bias=f(n.bias), dt=dt)]
    return Sequential(*mods)


def run_xylosim(net, events: Tensor) -> dict:
    """Run ``events`` (T, B, inputs) through xylosim, one sample at a time from rest. Returns
    (T, B, ...) tensors: ``spikes`` (output neurons), ``vmem_out``, ``isyn_out``, and
    ``hidden_spikes``, ``vmem``, ``isyn`` of the hidden neurons in ``specification`` order."""
    events = check_integers("run_xylosim", "input events", events, 0, XYLO.input_events)
    sim = xylosim(net) if net.core is XyloCore.V2 else _V1(net.specification())
    keys = ("spikes", "vmem_out", "isyn_out", "hidden_spikes", "vmem", "isyn")
    out = {k: [] for k in keys}
    for b in range(events.shape[1]):
        sim.reset_state()
        _, _, rec = sim.evolve(events[:, b].numpy().astype(np.int64), record=True)
        spikes = np.array(sim._xylo_layer.rec_out_spikes)   # whatever the output mode
        for k, v in zip(keys, (spikes, rec["Vmem_out"], rec["Isyn_out"], rec["Spikes"], rec["Vmem"], rec["Isyn"])):
            out[k].append(torch.as_tensor(np.asarray(v, dtype=np.float64)))
    return {k: torch.stack(v, dim=1) for k, v in out.items()}


class _V1:
    """``xylosim.v1.XyloLayer`` behind the part of XyloSim's interface ``run_xylosim`` uses."""

    def __init__(self, spec: dict) -> None:
        _need("xylosim")
        from xylosim.v1 import XyloLayer, XyloSynapse

        def synapses(w):
            return [[XyloSynapse(int(post), 0, int(row[post])) for post in np.nonzero(row)[0]] for row in w]

        # xylosim keeps raw pointers to the synapse objects: they must live as long as the layer
        self._synapses = [synapses(spec[k]) for k in ("weights_in", "weights_rec", "weights_out")]
        self._xylo_layer = XyloLayer(
            *self._synapses,
            [[] for _ in spec["threshold"]], _ints(spec["threshold"]), _ints(spec["threshold_out"]),
            spec["weight_shift_in"], spec["weight_shift_rec"], spec["weight_shift_out"],
            _ints(spec["dash_mem"]), _ints(spec["dash_mem_out"]), [[int(d), 0] for d in spec["dash_syn"]],
            [[int(d)] for d in spec["dash_syn_out"]], "spikeforge_v1")

    def reset_state(self) -> None:
        self._xylo_layer.reset_all()

    def evolve(self, raster: np.ndarray, record: bool = True):
        layer = self._xylo_layer
        out = np.array(layer.evolve(raster.tolist()))
        rec = {"Vmem": np.array(layer.rec_v_mem).T, "Isyn": np.array(layer.rec_i_syn).T,
               "Spikes": np.array(layer.rec_recurrent_spikes), "Vmem_out": np.array(layer.rec_v_mem_out).T,
               "Isyn_out": np.array(layer.rec_i_syn_out).T}
        return out, {}, rec


def _ints(a) -> list[int]:
    return [int(v) for v in np.asarray(a).reshape(-1)]
