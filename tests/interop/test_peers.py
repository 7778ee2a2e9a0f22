"""Smoke test of the interop venv: every NIR peer imports and its NIR import entry point loads a
one-layer graph. The spike-for-spike comparisons with spikeforge live beside these (spikeforge.nir)."""
import importlib

import numpy as np
import pytest

nir = pytest.importorskip("nir")


def _graph(node):
    return nir.NIRGraph(nodes={"input": nir.Input(np.array([2])), "n": node, "output": nir.Output(np.array([2]))},
                        edges=[("input", "n"), ("n", "output")])


def _lif():
    f = lambda v: np.full(2, v, np.float32)
    return nir.LIF(tau=f(2e-4), r=f(2.0), v_leak=f(0.0), v_threshold=f(1.0), v_reset=f(0.0))


def _cuba_lif():
    f = lambda v: np.full(2, v, np.float32)
    return nir.CubaLIF(tau_syn=f(1e-3), tau_mem=f(2e-3), r=f(1.0), v_leak=f(0.0), v_threshold=f(1.0),
                       v_reset=f(0.0), w_in=f(1.0))


LOADERS = {
    "snntorch": ("snntorch.import_nir", lambda m, g: m.import_from_nir(g), _lif),
    "spikingjelly": ("spikingjelly.activation_based.nir_exchange", lambda m, g: m.import_from_nir(g, dt=1e-4), _lif),
    "norse": ("norse.torch", lambda m, g: m.from_nir(g, dt=1e-4), _lif),
    # rockpool 3.1.0 reads nir.LIF.tau_mem, which nir 1.0.8's LIF lacks: only CubaLIF imports
    "rockpool": ("rockpool.nn.modules", lambda m, g: m.from_nir(g), _cuba_lif),
    "sinabs": ("sinabs", lambda m, g: m.from_nir(g, batch_size=1), _lif),
}


@pytest.mark.parametrize("peer", sorted(LOADERS))
def test_peer_loads_a_nir_graph(peer):
    module, load, node = LOADERS[peer]
    assert load(importlib.import_module(module), _graph(node())) is not None
