"""spikeforge's integer Xylo mode against SynSense's simulator itself (xylosim 0.1.3): core v2
through Rockpool 3.1's ``XyloSim.from_specification`` (imported without samna), core v1
through ``xylosim.v1`` directly. Every hidden and output neuron's spikes, synaptic current
and membrane must be bit-identical, on 20 random networks per core and on a quantised
Yin-Yang model trained with spikeforge's trainer."""
from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import spikeforge as sf
from spikeforge.quant import XyloCore, XyloLayer, XyloNet, XyloPopulation, quantize, run_xylosim


def _rint(g, lo, hi, shape=()):
    return torch.randint(lo, hi + 1, shape, generator=g).to(torch.float64)


def random_net(seed: int, core: XyloCore) -> XyloNet:
    """Up to 16 inputs, 1-3 hidden layers of 1-60 neurons, 1-8 outputs; int8 weights (30 %
    zeros), shifts 0..8 (one for all hidden-to-hidden layers), dashes 0..15, thresholds
    log-uniform over 1..32767, biases (v2); even seeds keep shifts and weights small (few
    saturations), odd seeds use the whole range (currents saturating mid-delivery)."""
    g = torch.Generator().manual_seed(seed)
    wide = seed % 2 == 1
    n_in = int(_rint(g, 1, 16))
    sizes = [int(_rint(g, 1, 60)) for _ in range(int(_rint(g, 1, 3)))] + [int(_rint(g, 1, 8))]
    top_shift, top_w = (8, 127) if wide else (3, 40)
    rec_shift, layers, prev = int(_rint(g, 0, top_shift)), [], n_in
    for k, n in enumerate(sizes):
        last = k == len(sizes) - 1
        shift = rec_shift if 0 < k < len(sizes) - 1 else int(_rint(g, 0, top_shift))
        w = _rint(g, -top_w - 1, top_w, (n, prev)) * (torch.rand(n, prev, generator=g) < 0.7)
        th = torch.floor(2.0 ** (15 * torch.rand(n, generator=g, dtype=torch.float64))).clamp(1, 32767)
        bias = _rint(g, -300, 300, (n,)) * (torch.rand(n, generator=g) < 0.5) * (core is XyloCore.V2)
        layers.append(XyloLayer(w, shift, dash_syn=_rint(g, 0, 15, (n,)), dash_mem=_rint(g, 0, 15, (n,)),
                                threshold=th, bias=bias, core=core, delay=min(k, 1), name=f"layer {k}",
                                population=XyloPopulation.OUTPUT if last else XyloPopulation.HIDDEN))
        prev = n
    return XyloNet(*layers)


def random_events(seed: int, T: int, B: int, n_in: int) -> torch.Tensor:
    """Event counts 0..15 per channel and step (multi-event steps), density 0..60 %."""
    g = torch.Generator().manual_seed(1000 + seed)
    density = 0.6 * float(torch.rand((), generator=g))
    return _rint(g, 0, 15, (T, B, n_in)) * (torch.rand(T, B, n_in, generator=g) < density)


def spikeforge_run(net: XyloNet, x: torch.Tensor) -> dict:
    """What run_xylosim returns, from spikeforge's integer mode."""
    net(x)
    last, hidden = net[-1], list(net)[:-1]
    out = {"spikes": last.spikes, "vmem_out": last.trace.v_mem, "isyn_out": last.trace.i_syn}
    for key, part in (("hidden_spikes", lambda m: m.spikes), ("isyn", lambda m: m.trace.i_syn),
                      ("vmem", lambda m: m.trace.v_mem)):
        out[key] = torch.cat([part(m) for m in hidden], dim=-1)
    return out


def assert_identical(mine: dict, theirs: dict, what: str) -> None:
    for key in ("spikes", "vmem_out", "isyn_out", "hidden_spikes", "vmem", "isyn"):
        a, b = mine[key], theirs[key]
        assert a.shape == b.shape, (what, key, a.shape, b.shape)
        if not torch.equal(a, b):
            t, bb, j = (a != b).nonzero()[0].tolist()
            raise AssertionError(f"{what}: {key} differs first at step {t}, sample {bb}, neuron {j}: "
                                 f"spikeforge {a[t, bb, j].item()}, xylosim {b[t, bb, j].item()}")


def test_rockpool_xylo_imports_without_samna():
    mod = sf.quant.rockpool_xylo()
    assert "samna" not in sys.modules
    assert mod.XyloSim.__module__ == "rockpool.devices.xylo.syns61201.xylo_sim" and callable(mod.mapper)


@pytest.mark.parametrize("core", [XyloCore.V2, XyloCore.V1], ids=lambda c: c.value)
def test_twenty_random_networks_are_bit_identical(core):
    deliveries, spikes = [], 0
    for seed in range(20):
        net = random_net(seed, core)
        x = random_events(seed, 60, 3, net[0].in_features)
        assert_identical(spikeforge_run(net, x), run_xylosim(net, x), f"{core.value} network {seed}")
        deliveries += [m.last_delivery for m in net]
        spikes += int(spikeforge_run(net, x)["hidden_spikes"].sum())
    assert {"summed", "per-event"} <= set(deliveries) and spikes > 0


def test_xylosim_module_reads_the_membrane_of_a_vmem_readout():
    model = torch.nn.Sequential(torch.nn.Linear(3, 6), sf.nn.CubaLIF(reset="soft"), torch.nn.Linear(6, 2),
                                sf.nn.CubaLI())
    net = quantize(model)
    sim = sf.quant.xylosim(net)
    x = random_events(5, 20, 1, 3)
    out, _, _ = sim.evolve(x[:, 0].numpy().astype("int64"))
    assert torch.equal(torch.as_tensor(out, dtype=torch.float64), net(x)[:, 0])


@pytest.fixture(scope="module")
def yinyang(tmp_path_factory):
    """A small Yin-Yang classifier trained by spikeforge's trainer (latency input, LIF hidden
    layer with soft reset, LI readout), its quantised form and test input events."""
    from spikeforge.train import load_run, make_config, train
    from spikeforge.train.model import spike_input

    cfg = make_config(dataset="yinyang", encoding="latency", neuron="LIF", input_tau=4.0, hidden=24, steps=30,
                      epochs=2)
    run = tmp_path_factory.mktemp("yy")
    train(cfg, out=run, quiet=True, plots=False)
    model, cfg = load_run(run)
    test = sf.data.YinYang("test")
    return quantize(model), spike_input(test.data[:64], cfg.steps), test.targets[:64]


def test_quantised_yinyang_model_is_bit_identical(yinyang):
    net, events, _ = yinyang
    mine, theirs = spikeforge_run(net, events), run_xylosim(net, events)
    assert_identical(mine, theirs, "quantised Yin-Yang")
    assert mine["hidden_spikes"].sum() > 0 and mine["vmem_out"].abs().max() > 0


def test_rockpools_own_mapper_gives_the_same_specification():
    """The integer network as Rockpool modules, through Rockpool's Xylo mapper: the same weights,
    dashes, thresholds and biases as net.specification(), and the same XyloSim output."""
    import warnings

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 10), sf.nn.CubaLIF(reset="soft", tau_syn=4.0, tau_mem=8.0),
                                torch.nn.Linear(10, 6), sf.nn.LIF(reset="soft", tau=4.0),
                                torch.nn.Linear(6, 3), sf.nn.CubaLIF(reset="soft", tau_syn=2.0, tau_mem=16.0))
    with torch.no_grad():
        for k in (0, 2, 4):
            model[k].weight.mul_(3.0)
    net = quantize(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # DRC warnings about Rockpool-side biases
        mapped = sf.quant.rockpool_xylo().mapper(sf.quant.rockpool_network(net).as_graph())
    spec = net.specification()
    for key in ("weights_in", "weights_rec", "weights_out", "dash_mem", "dash_syn", "dash_mem_out", "dash_syn_out",
                "threshold", "threshold_out", "bias", "bias_out"):
        assert np.array_equal(np.asarray(mapped[key], dtype=np.float64), np.asarray(spec[key], dtype=np.float64)), key
    ints = {k: (np.round(v).astype(np.int64) if isinstance(v, np.ndarray) else v) for k, v in mapped.items()
            if k not in ("mapped_graph", "dt")}
    ints.update({k: spec[k] for k in ("weight_shift_in", "weight_shift_rec", "weight_shift_out")})
    sim = sf.quant.rockpool_xylo().XyloSim.from_specification(**ints)
    x = torch.randint(0, 16, (40, 1, 4), generator=torch.Generator().manual_seed(3)).double()
    out, _, _ = sim.evolve(x[:, 0].numpy().astype(np.int64))
    assert torch.equal(torch.as_tensor(out, dtype=torch.float64), net(x)[:, 0])
    assert net[0].spikes.sum() > 0 and net[1].spikes.sum() > 0
