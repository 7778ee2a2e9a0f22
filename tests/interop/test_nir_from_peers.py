"""peer -> spikeforge: small nets built in snnTorch 1.0, SpikingJelly 2.0 and Norse 1.1, exported
with the peer's *own* exporter, loaded with ``sf.nir.load(graph, dt=...)`` and run on the same
random float input: the spike trains of every layer must be identical to the peer's own run.
Where a peer's export or dynamics cannot match, the test pins down exactly how (PEER LIMITATION).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

import spikeforge as sf
from nir_peer_helpers import T, assert_identical, fraction, mlp_input, run_norse, sf_layers

nir = pytest.importorskip("nir")


def _scaled(net, first=0, second=2, bias=0.0):
    with torch.no_grad():
        net[first].weight.mul_(3.0)
        net[second].weight.mul_(3.0)
        net[second].bias.add_(bias)
    return net


def _rates_ok(zs):
    for z in zs:
        assert 0.05 <= fraction(z) <= 0.45, fraction(z)


# ------------------------------------------------------------------------------------- snnTorch

def _snntorch_leaky_net(recurrent=False, reset_delay=True, rec_bias=0.0):
    snn = pytest.importorskip("snntorch")
    torch.manual_seed(0)
    kw = dict(threshold=torch.ones(16), init_hidden=True, reset_mechanism="zero")
    hidden = (snn.RLeaky(beta=torch.full((16,), 0.5), linear_features=16, reset_delay=reset_delay, **kw) if recurrent
              else snn.Leaky(beta=torch.full((16,), 0.5), **kw))
    # per-neuron beta/threshold: scalar ones export shape-() nodes that fail nir's type inference
    net = torch.nn.Sequential(torch.nn.Linear(4, 16), hidden, torch.nn.Linear(16, 3),
                              snn.Leaky(beta=torch.full((3,), 0.75), threshold=torch.full((3,), 0.8), init_hidden=True,
                                        reset_mechanism="zero", output=True))
    _scaled(net, bias=-0.5 if recurrent else 0.0)
    if recurrent:
        with torch.no_grad():
            net[1].recurrent.bias.fill_(rec_bias)
    return net


def _snntorch_export_and_run(net, x):
    from snntorch.export_nir import export_to_nir
    from nir_peer_helpers import run_snntorch
    graph = export_to_nir(net, torch.zeros(4, 4), ignore_dims=[0])   # snnTorch: dt = 1e-4
    peer, _ = run_snntorch(net, x)
    return graph, peer


def test_snntorch_leaky_into_spikeforge_gives_identical_spikes():
    x = mlp_input()
    graph, peer = _snntorch_export_and_run(_snntorch_leaky_net(), x)
    model = sf.nir.load(graph, dt=1e-4)
    ours, _ = sf_layers(model, x)
    _rates_ok(peer)
    for i, (p, z) in enumerate(zip(peer, ours)):
        assert_identical(z, p, f"snnTorch Leaky layer {i}")


def test_snntorch_rleaky_into_spikeforge_gives_identical_spikes():
    """RLeaky with reset_delay=False (reset in the step that spikes, as spikeforge's hard reset).
    snnTorch's export writes the recurrent layer's nodes ("1.lif", "1.w_rec") into the top-level
    graph; spikeforge folds the loop into a ``Recurrent`` layer."""
    x = mlp_input()
    graph, peer = _snntorch_export_and_run(_snntorch_leaky_net(recurrent=True, reset_delay=False), x)
    assert {"1.lif", "1.w_rec"} <= set(graph.nodes)
    model = sf.nir.load(graph, dt=1e-4)
    assert isinstance(model[1], sf.nn.Recurrent)
    ours, _ = sf_layers(model, x)
    _rates_ok(peer)
    for i, (p, z) in enumerate(zip(peer, ours)):
        assert_identical(z, p, f"snnTorch RLeaky layer {i}")


def test_snntorch_rleaky_with_a_recurrent_bias_gives_identical_spikes():
    """With a bias on the recurrent Linear, snnTorch (like spikeforge's ``Recurrent``) feeds
    ``w_rec(z_{-1} = 0) = bias`` at the first step."""
    x = mlp_input()
    graph, peer = _snntorch_export_and_run(_snntorch_leaky_net(recurrent=True, reset_delay=False, rec_bias=0.2), x)
    ours, _ = sf_layers(sf.nir.load(graph, dt=1e-4), x)
    for i, (p, z) in enumerate(zip(peer, ours)):
        assert_identical(z, p, f"snnTorch RLeaky (recurrent bias) layer {i}")


def test_snntorch_rleaky_delayed_zero_reset_is_not_a_hard_reset():
    """PEER LIMITATION: RLeaky's default reset_delay=True with reset_mechanism='zero' sets the whole
    next membrane to zero (input included: ``base - reset * base``), which no NIR LIF expresses;
    its export still writes a plain LIF with v_reset 0, so the spikes differ."""
    x = mlp_input()
    graph, peer = _snntorch_export_and_run(_snntorch_leaky_net(recurrent=True), x)
    ours, _ = sf_layers(sf.nir.load(graph, dt=1e-4), x)
    assert int((ours[0] != peer[0]).sum()) > 100


# --------------------------------------------------------------------------------- SpikingJelly

def test_spikingjelly_lifnode_into_spikeforge_gives_identical_spikes():
    pytest.importorskip("spikingjelly")
    from spikingjelly.activation_based import functional, layer, neuron
    from spikingjelly.activation_based.nir_exchange import export_to_nir
    torch.manual_seed(0)
    net = _scaled(torch.nn.Sequential(layer.Linear(4, 16), neuron.LIFNode(tau=2.0, v_reset=0.0), layer.Linear(16, 3),
                                      neuron.LIFNode(tau=4.0, v_reset=0.0, decay_input=False)), bias=0.5)
    graph = export_to_nir(net, torch.zeros(4, 4), dt=1e-3)
    x = mlp_input()
    functional.reset_net(net)
    with torch.no_grad():
        hs, outs = [], []
        for t in range(T):              # single-step mode (the export's), one step per call
            hs.append(net[1](net[0](x[t])))
            outs.append(net[3](net[2](hs[-1])))
    peer = [torch.stack(hs), torch.stack(outs)]
    ours, _ = sf_layers(sf.nir.load(graph, dt=1e-3), x)
    _rates_ok(peer)
    for i, (p, z) in enumerate(zip(peer, ours)):
        assert_identical(z, p, f"SpikingJelly LIFNode layer {i}")


# ---------------------------------------------------------------------------------------- Norse

def _norse_net(cuba: bool):
    norse = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    box = lambda n, inv: norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=torch.full((n,), inv),
                                                                 v_th=torch.ones(n), v_leak=torch.zeros(n)))
    last = (norse.LIFCell(norse.LIFParameters(tau_mem_inv=torch.full((3,), 250.0), tau_syn_inv=torch.full((3,), 500.0),
                                              v_leak=torch.zeros(3), v_th=torch.ones(3))) if cuba else box(3, 500.0))
    net = _scaled(norse.SequentialState(torch.nn.Linear(4, 16), box(16, 500.0), torch.nn.Linear(16, 3), last), bias=1.0)
    return norse, net


@pytest.mark.parametrize("cuba", [False, True], ids=["LIFBoxCell", "LIFCell"])
def test_norse_into_spikeforge(cuba):
    norse, net = _norse_net(cuba)
    dt = 1e-3
    graph = norse.to_nir(net, torch.zeros(1, 4), dt=dt)
    assert type(graph.nodes["3"]).__name__ == ("CubaLIF" if cuba else "LIF")
    np.testing.assert_allclose(graph.nodes["1"].tau, dt * (1 / 500.0), rtol=1e-6)   # the tau bug, as written
    x = mlp_input()
    peer, _ = run_norse(net, x)
    _rates_ok(peer)
    # as exported: tau too small by the factor dt, so spikeforge's layers fire on most steps
    ours, _ = sf_layers(sf.nir.load(graph, dt=dt), x)
    assert int((ours[0] != peer[0]).sum()) > 1000
    ours, _ = sf_layers(sf.nir.load(graph, dt=dt, convention="norse"), x)   # reads Norse's taus
    assert_identical(ours[0], peer[0], "Norse LIFBoxCell (tau fixed) hidden layer")
    if not cuba:
        assert_identical(ours[1], peer[1], "Norse LIFBoxCell (tau fixed) output layer")
    else:
        # PEER LIMITATION: Norse's LIFCell is not the Euler step of its NIR CubaLIF: its membrane
        # integrates the *previous* synaptic current and the input jumps into the current
        # undecayed (i += x, not dt/tau_syn * x); so even with tau fixed the output layer differs
        assert int((ours[1] != peer[1]).sum()) == 148     # of 480
