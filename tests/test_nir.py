"""NIR export and import: exact round trips, every field honoured or refused, clear errors."""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.neurons import REGISTRY, Reset
from spikeforge.nir import NIRError

nir = pytest.importorskip("nir")

T, B = 25, 4
NIR_NEURONS = ["IF", "LIF", "PLIF", "CubaLIF", "CubaLI", "LI"]
NOT_NIR = ["ALIF", "QIF", "EIF", "Izhikevich"]


def _spread(default: float, n: int, positive: bool) -> torch.Tensor:
    base = torch.linspace(0.8, 1.2, n)
    return base * default if (default != 0 or positive) else base - 1.0


def _neuron(name: str, per_neuron: bool, n: int, **options):
    cls = REGISTRY[name]
    values = {}
    if per_neuron:
        for k, p in cls.params.items():
            if k in ("v_threshold",):
                values[k] = torch.linspace(0.8, 1.2, n)
            elif k in ("v_reset", "v_leak"):
                values[k] = torch.linspace(-0.1, 0.1, n)
            else:
                values[k] = _spread(p.default, n, p.positive)
    if "reset" in cls.options():
        options.setdefault("reset", Reset.HARD)
    return sf.nn.MODULES[name](**options, **values)


def _mlp(name: str, per_neuron: bool, **options) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(5, 12), _neuron(name, per_neuron, 12, **options), nn.Linear(12, 3, bias=False),
                        sf.nn.LI(tau=4.0))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[0].bias.add_(0.5)
    return net


def _round_trip(model, tmp_path, x, **kw):
    path = tmp_path / "model.nir"
    sf.nir.save(model, path, **kw)
    loaded = sf.nir.load(path)
    sf.reset(model)
    with torch.no_grad():
        want, got = model(x), loaded(x)
    torch.testing.assert_close(got, want, rtol=0, atol=0)
    return loaded


@pytest.mark.parametrize("per_neuron", [False, True], ids=["shared", "per-neuron"])
@pytest.mark.parametrize("name", NIR_NEURONS)
def test_mlp_round_trip_is_exact(name, per_neuron, tmp_path):
    net = _mlp(name, per_neuron)
    x = torch.rand(T, B, 5) * 2
    hidden = net[1](net[0](x))
    if REGISTRY[name].spiking:
        assert 0 < hidden.mean() < 1            # it spikes, and not always
    loaded = _round_trip(net, tmp_path, x, dt=1.0)
    assert type(loaded[1]) is type(net[1]) and loaded[1].spec == net[1].spec


def test_decay_input_false_and_detach_reset_survive(tmp_path):
    net = _mlp("LIF", True, decay_input=False, detach_reset=True)
    loaded = _round_trip(net, tmp_path, torch.rand(T, B, 5), dt=1.0)
    assert loaded[1].spec.decay_input is False and loaded[1].spec.detach_reset is True


def test_dt_rescales_time_constants(tmp_path):
    net = _mlp("CubaLIF", False)
    g = sf.nir.export(net, dt=1e-3)
    assert g.metadata["dt"] == 1e-3 and g.metadata["discretisation"] == "euler"
    node = g.nodes["1"]
    np.testing.assert_allclose(node.tau_syn, 5e-3)
    np.testing.assert_allclose(node.tau_mem, 10e-3)
    loaded = sf.nir.load(g)                     # dt from the metadata
    assert loaded[1].spec.dt == 1e-3
    x = torch.rand(T, B, 5) * 2
    with torch.no_grad():
        assert (loaded(x) - net(x)).abs().max() < 1e-4


def test_conv_round_trip(tmp_path):
    torch.manual_seed(1)
    net = nn.Sequential(
        sf.nn.TimeDistributed(nn.Conv2d(2, 4, 3, padding=1, stride=1)), sf.nn.IF(reset=Reset.HARD),
        sf.nn.SumPool2d(2), sf.nn.TimeDistributed(nn.Conv2d(4, 4, 3, bias=False)), sf.nn.LIF(),
        sf.nn.AvgPool2d(2), sf.nn.Flatten(), nn.Linear(4 * 1 * 1, 3), sf.nn.LI())
    with torch.no_grad():
        net[0].module.weight.mul_(3.0)
    x = torch.rand(T, B, 2, 8, 8)
    loaded = _round_trip(net, tmp_path, x, dt=1.0, input_shape=(2, 8, 8))
    assert isinstance(loaded, nn.Sequential) and isinstance(loaded[2], sf.nn.SumPool2d)


def test_recurrent_becomes_a_cyclic_subgraph_and_back(tmp_path):
    torch.manual_seed(2)
    net = nn.Sequential(nn.Linear(5, 10), sf.nn.Recurrent(sf.nn.LIF(tau=4.0), 10), nn.Linear(10, 3), sf.nn.LI())
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        net[1].recurrent.weight.mul_(2.0)
    g = sf.nir.export(net, dt=1.0)
    sub = g.nodes["1"]
    assert type(sub).__name__ == "NIRGraph"
    assert ("neuron", "recurrent") in sub.edges and ("recurrent", "neuron") in sub.edges
    loaded = _round_trip(net, tmp_path, torch.rand(T, B, 5) * 2, dt=1.0)
    assert isinstance(loaded[1], sf.nn.Recurrent)


def test_residual_graph_round_trip(tmp_path):
    torch.manual_seed(3)
    block = nn.Sequential(nn.Linear(8, 8), sf.nn.LIF())
    net = nn.Sequential(nn.Linear(5, 8), sf.nn.LIF(), sf.nn.Residual(block), nn.Linear(8, 3), sf.nn.LI())
    with torch.no_grad():
        net[0].weight.mul_(3.0)
        block[0].weight.mul_(3.0)
    g = sf.nir.export(net, dt=1.0)
    assert sum(1 for a, b in g.edges if b == "2_sum") == 2          # the skip and the block meet there
    loaded = _round_trip(net, tmp_path, torch.rand(T, B, 5) * 2, dt=1.0)
    assert isinstance(loaded, sf.nir._graph.Graph)
    again = sf.nir.load(sf.nir.export(loaded, dt=1.0, input_shape=(5,)))   # an imported graph exports too
    with torch.no_grad():
        x = torch.rand(T, B, 5) * 2
        torch.testing.assert_close(again(x), loaded(x), rtol=0, atol=0)


def test_scale_threshold_delay_round_trip(tmp_path):
    torch.manual_seed(4)
    net = nn.Sequential(nn.Linear(5, 6), sf.nn.Scale(torch.linspace(0.5, 2.0, 6)), sf.nn.Threshold(0.4),
                        sf.nn.Delay(3, 6), nn.Linear(6, 6), sf.nn.LIF(), sf.nn.LI())
    g = sf.nir.export(net, dt=0.5)
    np.testing.assert_allclose(g.nodes["3"].delay, net[3].delays.numpy() * 0.5)
    loaded = _round_trip(net, tmp_path, torch.rand(T, B, 5) * 2, dt=0.5)
    assert torch.equal(loaded[3].delays, net[3].delays)


@pytest.mark.parametrize("drop", [nn.Dropout(0.3), sf.nn.TimeDropout(0.3)])
def test_dropout_exports_as_nothing(drop):
    """Dropout is the identity at inference: no node, its neighbours joined by one edge."""
    net = nn.Sequential(nn.Linear(5, 6), sf.nn.LIF(), drop, nn.Linear(6, 2), sf.nn.LI())
    g = sf.nir.export(net, dt=1.0)
    assert "2" not in g.nodes and ("1", "3") in g.edges


def test_cuba_w_in_becomes_a_scale(tmp_path):
    n = 4
    g = nir.NIRGraph(nodes={
        "input": nir.Input(input_type={"input": np.array([n])}),
        "lif": nir.CubaLIF(tau_syn=np.full(n, 2.0), tau_mem=np.full(n, 4.0), r=np.ones(n), v_leak=np.zeros(n),
                           v_threshold=np.ones(n), v_reset=np.zeros(n), w_in=np.full(n, 3.0)),
        "output": nir.Output(output_type={"output": np.array([n])})},
        edges=[("input", "lif"), ("lif", "output")], type_check=False)
    m = sf.nir.load(g, dt=1.0)
    x = torch.rand(T, B, n)
    ref = sf.nn.CubaLIF(tau_syn=2.0, tau_mem=4.0, reset=Reset.HARD)(3.0 * x)
    torch.testing.assert_close(m(x), ref, rtol=0, atol=0)


def test_write_read_is_identical(tmp_path):
    g = sf.nir.export(_mlp("CubaLIF", True), dt=1e-3)
    nir.write(str(tmp_path / "a.nir"), g)
    g2 = nir.read(str(tmp_path / "a.nir"))
    assert set(g2.nodes) == set(g.nodes) and sorted(map(tuple, g2.edges)) == sorted(map(tuple, g.edges))
    assert g2.metadata["dt"] == g.metadata["dt"]
    for name, node in g.nodes.items():
        for f in dataclasses.fields(node):
            a, b = getattr(node, f.name), getattr(g2.nodes[name], f.name)
            if isinstance(a, np.ndarray):
                np.testing.assert_array_equal(a, b)


# -- refused models ----------------------------------------------------------------------
@pytest.mark.parametrize("name", NOT_NIR)
def test_models_nir_cannot_express_are_refused_by_name(name):
    net = nn.Sequential(nn.Linear(5, 4), sf.nn.MODULES[name]())
    with pytest.raises(NIRError, match=rf"model\[1\] \({name}\): {name}: neuron: has no NIR mapping"):
        sf.nir.export(net, dt=1.0)


@pytest.mark.parametrize("reset", [Reset.SOFT, Reset.NONE])
@pytest.mark.parametrize("name", ["IF", "LIF", "CubaLIF"])
def test_soft_and_no_reset_are_refused(name, reset):
    net = nn.Sequential(nn.Linear(5, 4), sf.nn.MODULES[name](reset=reset))
    with pytest.raises(NIRError, match=rf"model\[1\] \({name}\): {name}: reset: {reset}"):
        sf.nir.export(net, dt=1.0)


def test_unexportable_layers_are_refused_by_name():
    cases = [
        (nn.Sequential(nn.Linear(5, 4), sf.nn.Delay(2, 4, per=sf.nn.delay.DelayPer.SYNAPSE, out_features=3)),
         r"model\[1\] \(Delay\): Delay: per"),
        (nn.Sequential(nn.Linear(5, 4), nn.ReLU()), r"model\[1\] \(ReLU\) has no NIR node"),
        (nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(1, 2, 3, padding="same"))), r"padding"),
        (nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(2, 2, 3, groups=2))), r"Conv2d: groups: 2"),
    ]
    for net, msg in cases:
        with pytest.raises(NIRError, match=msg):
            conv = isinstance(net[0], sf.nn.TimeDistributed)
            sf.nir.export(net, dt=1.0, input_shape=(net[0].module.in_channels, 6, 6) if conv else (5,))


# -- bad graphs and files ----------------------------------------------------------------
def _graph(**nodes_and_edges):
    n = 3
    nodes = {"input": nir.Input(input_type={"input": np.array([n])}),
             "output": nir.Output(output_type={"output": np.array([n])})}
    nodes.update(nodes_and_edges.get("nodes", {}))
    edges = nodes_and_edges.get("edges", [("input", "lif"), ("lif", "output")])
    return nir.NIRGraph(nodes=nodes, edges=edges, type_check=False, metadata={"dt": 1.0})


def _lif(n=3, **kw):
    f = dict(tau=np.full(n, 2.0), r=np.ones(n), v_leak=np.zeros(n), v_threshold=np.ones(n), v_reset=np.zeros(n))
    f.update(kw)
    return nir.LIF(**f)


@pytest.mark.parametrize("field,value,msg", [
    ("tau", np.array([2.0, 0.0, 1.0]), "field tau must be > 0"),
    ("tau", np.array([2.0, -1.0, 1.0]), "field tau must be > 0"),
    ("v_threshold", np.array([1.0, np.nan, 1.0]), "field v_threshold holds NaN"),
    ("r", np.array([1.0, np.inf, 1.0]), "field r holds NaN or inf"),
])
def test_bad_neuron_fields_name_node_and_field(field, value, msg):
    with pytest.raises(NIRError, match=rf"node 'lif' \(LIF\): {msg}"):
        sf.nir.load(_graph(nodes={"lif": _lif(**{field: value})}))


def test_unknown_node_type_is_named():
    with pytest.raises(NIRError, match=r"node 'lif' has type I, which spikeforge does not import"):
        sf.nir.load(_graph(nodes={"lif": nir.I(r=np.ones(3))}))


def test_inconsistent_shapes_between_edges():
    g = _graph(nodes={"fc": nir.Affine(weight=np.ones((3, 4)), bias=np.zeros(3)), "lif": _lif()},
               edges=[("input", "fc"), ("fc", "lif"), ("lif", "output")])
    with pytest.raises(NIRError, match=r"edge \('input', 'fc'\): node 'input' gives shape \(3,\) but node 'fc' "
                                       r"takes \(4,\)"):
        sf.nir.load(g)


def test_dangling_edge_and_missing_dt():
    with pytest.raises(NIRError, match="names a node 'nope'"):
        sf.nir.load(_graph(nodes={"lif": _lif()}, edges=[("input", "lif"), ("lif", "nope")]))
    g = _graph(nodes={"lif": _lif()})
    g.metadata = {}
    with pytest.raises(NIRError, match="metadata has no dt"):
        sf.nir.load(g)
    assert isinstance(sf.nir.load(g, dt=1.0)[0], sf.nn.LIF)


def test_files_that_are_not_nir(tmp_path):
    junk = tmp_path / "junk.nir"
    junk.write_bytes(b"this is not an HDF5 file")
    with pytest.raises(NIRError, match="is not a readable NIR file"):
        sf.nir.load(junk)
    with pytest.raises(NIRError, match="no NIR file at"):
        sf.nir.load(tmp_path / "missing.nir")
    with pytest.raises(NIRError, match="expected a nir.NIRGraph"):
        sf.nir.load(42)


def test_bad_export_arguments():
    net = _mlp("LIF", False)
    for dt in (0, -1.0, float("nan"), "1"):
        with pytest.raises(ValueError, match="dt must be a positive finite number"):
            sf.nir.export(net, dt=dt)
    with pytest.raises(ValueError, match="convention"):
        sf.nir.export(net, dt=1.0, convention="bogus")
    with pytest.raises(NIRError, match="input_shape is needed"):
        sf.nir.export(nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(1, 2, 3)), sf.nn.LIF()), dt=1.0)


# -- the continuous-time face ------------------------------------------------------------
# integer (fixed-point, discrete-time) neurons such as XyloLIF declare no continuous-time form
CONTINUOUS = sorted(n for n, c in REGISTRY.items() if c.derivative is not sf.neurons.NeuronSpec.derivative)


@pytest.mark.parametrize("name", CONTINUOUS)
def test_step_is_the_euler_step_of_the_derivative(name):
    """Below threshold, ``step`` advances each state by ``dt * derivative`` (explicit, or
    sequential where the spec says so)."""
    cls = REGISTRY[name]
    spec = cls(dt=0.5) if "dt" in cls.options() else cls()
    p = sf.functional.make_params(spec, None, dtype=torch.float64)
    x = torch.linspace(-0.2, 0.2, 7, dtype=torch.float64)
    s = tuple(torch.as_tensor(r, dtype=torch.float64).expand(7) * 1.0 for r in spec.rest(p))
    if name == "Izhikevich":
        x = x * 0.0
    z, new = spec.step(x, s, p, lambda u: (u >= 0).to(u.dtype))
    if spec.spiking:
        assert not z.any()                       # sub-threshold, so no reset mixes in
    if spec.euler == "explicit":
        want = tuple(a + spec.dt * d for a, d in zip(s, spec.derivative(x, s, p)))
    else:
        want, cur = [], list(s)
        for k in range(len(s)):
            cur[k] = cur[k] + spec.dt * spec.derivative(x, tuple(cur), p)[k]
            want.append(cur[k])
    for a, b in zip(new, want):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)


def test_docs_example_runs():
    """The first example of docs/nir.md (train, export, save, load, same output) runs as written;
    tests/interop runs the snnTorch part."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "nir.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) >= 2
    exec(blocks[0], {})


# -- peer conventions: the graph is checked against what the peer's import reproduces -----
def test_conventions_accept_default_lif_networks():
    net = nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard"), nn.Linear(8, 2), sf.nn.LIF(reset="hard"))
    for convention, dt in (("snntorch", 1e-4), ("spikingjelly", 1e-3), ("norse", 1e-3), ("euler", 0.5)):
        g = sf.nir.export(net, dt=dt, convention=convention)
        assert g.metadata["convention"] == convention


@pytest.mark.parametrize("convention,dt,net,msg", [
    ("snntorch", 1e-3, nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard")), r"imports with dt=0.0001"),
    ("snntorch", 1e-4, nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard", v_reset=0.2)),
     r"node '1' \(LIF\): field v_reset must be 0 for snntorch"),
    ("snntorch", 1e-4, nn.Sequential(nn.Linear(4, 8), sf.nn.IF(reset="hard")), r"node '1' \(IF\): snnTorch 1.0"),
    ("spikingjelly", 1e-3, nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard", v_leak=0.1)),
     r"field v_leak must equal v_reset"),
    ("spikingjelly", 1e-3, nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard", r=3.0)),
     r"field r must be 1 or tau / dt"),
    ("spikingjelly", 1e-3, nn.Sequential(nn.Linear(4, 8), sf.nn.CubaLIF(reset="hard", r=10.0)),
     r"field w_in must be tau_syn / dt"),
    ("norse", 1e-3, nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="hard", r=2.0)), r"field r must be 1 for norse"),
    ("norse", 1e-3, nn.Sequential(nn.Linear(4, 3), sf.nn.Recurrent(sf.nn.LIF(reset="hard", v_reset=0.1), 3)),
     r"node '1.neuron' \(LIF\): field v_reset must be 0"),
])
def test_conventions_refuse_what_the_peer_would_change(convention, dt, net, msg):
    with pytest.raises(NIRError, match=rf"convention '{convention}': .*{msg}"):
        sf.nir.export(net, dt=dt, convention=convention)


def test_a_recurrent_loop_in_the_top_graph_imports_as_recurrent():
    """snnTorch writes a recurrent layer's neuron <-> weight loop into the top-level graph; it
    runs as ``Recurrent`` does (the weight, bias included, sees the previous step's spikes)."""
    torch.manual_seed(5)
    ref = nn.Sequential(nn.Linear(4, 6), sf.nn.Recurrent(sf.nn.LIF(reset="hard"), nn.Linear(6, 6)))
    with torch.no_grad():
        ref[0].weight.mul_(3.0)
        ref[1].recurrent.bias.fill_(0.2)
    flat = sf.nir.export(ref, dt=1.0)
    sub = flat.nodes.pop("1")
    flat.nodes.update({"lif": sub.nodes["neuron"], "w_rec": sub.nodes["recurrent"]})
    flat.edges = [("input", "0"), ("0", "lif"), ("lif", "w_rec"), ("w_rec", "lif"), ("lif", "output")]
    loaded = sf.nir.load(flat)
    assert isinstance(loaded, nn.Sequential) and isinstance(loaded[1], sf.nn.Recurrent)
    x = torch.rand(T, B, 4) * 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), rtol=0, atol=0)


def test_a_cycle_through_a_neuron_is_cut_after_the_neuron():
    """A loop the importer cannot fold (a Scale between neuron and weight) runs as a ``Graph``
    whose cut edge leaves the neuron: the same as ``Recurrent`` over the composed weight."""
    torch.manual_seed(6)
    ref = nn.Sequential(nn.Linear(4, 6), sf.nn.Recurrent(sf.nn.LIF(reset="hard"), nn.Linear(6, 6)))
    with torch.no_grad():
        ref[0].weight.mul_(3.0)
        ref[1].recurrent.bias.fill_(0.2)
    g = sf.nir.export(ref, dt=1.0)
    sub = g.nodes.pop("1")
    g.nodes.update({"lif": sub.nodes["neuron"], "w_rec": sub.nodes["recurrent"],
                    "gain": nir.Scale(scale=np.ones(6))})
    g.edges = [("input", "0"), ("0", "lif"), ("lif", "gain"), ("gain", "w_rec"), ("w_rec", "lif"),
               ("lif", "output")]
    loaded = sf.nir.load(g)
    assert isinstance(loaded, sf.nir.Graph) and loaded.back == {("lif", "gain")}
    x = torch.rand(T, B, 4) * 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), ref(x), rtol=0, atol=0)
