"""spikeforge.quant.quantize: float model -> integer Xylo model (post-training and QAT), and
every refusal (design rules, layers, neurons, values) with the layer and the limit named."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.quant import XyloError, XyloLayer, XyloNet, XyloPopulation, quantize

POP = XyloPopulation


def cuba_net(n_in=4, hidden=12, n_out=3, seed=0, **neuron):
    torch.manual_seed(seed)
    kw = {"reset": "soft", "tau_syn": 4.0, "tau_mem": 8.0, **neuron}
    return nn.Sequential(nn.Linear(n_in, hidden), sf.nn.CubaLIF(**kw), nn.Linear(hidden, n_out),
                         sf.nn.CubaLI(tau_syn=2.0, tau_mem=16.0))


def events(T=30, B=3, n_in=4, seed=1, p=0.3):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 4, (T, B, n_in), generator=g).double() * (torch.rand(T, B, n_in, generator=g) < p)


def test_dashes_thresholds_weights_and_readout():
    q = quantize(cuba_net(), threshold_max=2048)
    hid, out = q[0], q[1]
    assert torch.equal(hid.neuron.dash_syn, torch.full((12,), 2.0)) and torch.equal(hid.neuron.dash_mem,
                                                                                      torch.full((12,), 3.0))
    assert torch.equal(out.neuron.dash_syn, torch.full((3,), 1.0)) and torch.equal(out.neuron.dash_mem,
                                                                                     torch.full((3,), 4.0))
    assert hid.weight.dtype == torch.int8 and out.weight.dtype == torch.int8
    assert hid.neuron.threshold.max() <= 2048 and hid.neuron.threshold.min() >= 1
    assert out.neuron.threshold.eq(32767).all() and out.readout.value == "vmem"
    # per neuron, the full int8 range unless the threshold cap binds first
    full = hid.weight.abs().amax(1) >= 126
    capped = hid.neuron.threshold * 2 > 2048
    assert (full | capped).all()
    assert (hid.population, out.population, hid.delay, out.delay) == (POP.HIDDEN, POP.OUTPUT, 0, 1)


def test_integer_readout_is_the_float_readout_scaled():
    """Power-of-two time constants: the integer readout is k times the float one (one step
    later, Xylo's hidden -> output delay), up to the rounding of weights and floors; a
    Linear bias becomes Xylo's membrane bias, equal in the steady state."""
    model = cuba_net().double()
    with torch.no_grad():
        model[2].bias.zero_()
    q = quantize(model)
    z = (torch.rand(40, 3, 12, generator=torch.Generator().manual_seed(2)) < 0.3).double()
    v_float = model[3](model[2](z)).detach()
    v_int = q[1](z) * q[1].out_scale
    err = (v_int[1:] - v_float[:-1]).abs().max() / v_float.abs().max()
    assert v_float.abs().max() > 0.1 and err < 0.02
    with torch.no_grad():
        model[2].bias.copy_(torch.tensor([0.2, -0.1, 0.05]))
    q, quiet = quantize(model), torch.zeros(300, 1, 12, dtype=torch.float64)
    torch.testing.assert_close(q[1](quiet)[-1] * q[1].out_scale, model[3](model[2](quiet))[-1].detach(),
                               rtol=0.01, atol=0.002)


def test_li_synapse_layer_folds_into_the_first_layer():
    tau_li = 1.0 / -math.expm1(-1.0 / 4.0)
    model = nn.Sequential(sf.nn.LI(tau=tau_li, r=tau_li), nn.Linear(5, 8), sf.nn.LIF(tau=4.0, reset="soft"),
                          nn.Dropout(0.1), nn.Linear(8, 3), sf.nn.LI(tau=100.0))
    q = quantize(model)
    assert q[0].neuron.dash_syn.eq(2).all() and q[0].neuron.dash_mem.eq(2).all()
    assert q[1].neuron.dash_syn.eq(1).all() and q[1].neuron.dash_mem.eq(7).all()   # round(log2 100) = 7
    assert q(events(n_in=5)).shape == (30, 3, 3)


def test_hidden_to_hidden_layers_share_one_shift():
    torch.manual_seed(3)
    layers = [nn.Linear(4, 10), sf.nn.LIF(reset="soft")]
    for scale in (0.01, 5.0):   # very different weight ranges: different shifts alone
        lin = nn.Linear(10, 10)
        with torch.no_grad():
            lin.weight.mul_(scale)
        layers += [lin, sf.nn.LIF(reset="soft")]
    q = quantize(nn.Sequential(*layers, nn.Linear(10, 2), sf.nn.LI()))
    assert q[1].shift == q[2].shift
    assert q.specification()["weight_shift_rec"] == q[1].shift


def test_qat_forward_is_the_integer_forward_and_trains():
    model = cuba_net()
    with torch.no_grad():
        model[0].weight.mul_(4.0)
    q = quantize(model, qat=True)
    masters = [m.master for m in q]
    assert all(isinstance(p, nn.Parameter) for p in masters) and set(q.parameters()) == set(masters)
    x = events(p=0.6)
    assert q[0](x).sum() > 0
    frozen = q.freeze()
    assert all(m.master is None for m in frozen)
    assert torch.equal(q(x), frozen(x))
    q.scores(x).amax(0)[:, 0].sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in masters)
    with torch.no_grad():
        for p in masters:
            p.add_(0.3 * torch.randn_like(p))
    w = q.freeze()[0].weight
    assert w.dtype == torch.int8 and torch.equal(w.double(), torch.clamp(torch.round(q[0].master * q[0].gain),
                                                                          -128, 127).detach())
    assert torch.equal(q(x), q.freeze()(x))


def test_a_trainer_classifier_quantizes_through_network():
    cfg = sf.train.make_config(encoding="latency", neuron="LIF", input_tau=4.0, hidden=16, steps=20)
    model = sf.train.Classifier(4, 3, cfg)
    q = quantize(model)
    x = sf.train.model.spike_input(torch.rand(6, 4), 20)
    assert q.scores(x).shape == (20, 6, 3)


# -- refusals --------------------------------------------------------------------------------
def _seq(*m):
    return nn.Sequential(*m)


BAD_MODELS = {
    "conv": (lambda: _seq(nn.Conv2d(1, 2, 3), sf.nn.LIF(reset="soft")), r"net\[0\] \(Conv2d\).*no convolutions"),
    "17 inputs": (lambda: _seq(nn.Linear(17, 4), sf.nn.LIF(reset="soft"), nn.Linear(4, 2), sf.nn.LI()),
                  r"17 inputs; Xylo has 16"),
    "1001 hidden": (lambda: _seq(nn.Linear(4, 1001), sf.nn.LIF(reset="soft"), nn.Linear(1001, 2), sf.nn.LI()),
                    r"1001 hidden neurons; Xylo has 1000"),
    "9 outputs": (lambda: _seq(nn.Linear(4, 5), sf.nn.LIF(reset="soft"), nn.Linear(5, 9), sf.nn.LI()),
                  r"net\[3\] \(LI\): 9 outputs; Xylo has 8"),
    "hard reset": (lambda: _seq(nn.Linear(4, 5), sf.nn.LIF(), nn.Linear(5, 2), sf.nn.LI()),
                   r"net\[1\] \(LIF\): reset: Reset.HARD.*subtracting"),
    "ALIF": (lambda: _seq(nn.Linear(4, 5), sf.nn.ALIF(), nn.Linear(5, 2), sf.nn.LI()),
             r"net\[1\] \(ALIF\): neuron: ALIF has no Xylo counterpart"),
    "dash_syn 0": (lambda: cuba_net(tau_syn=1.2), r"net\[1\] \(CubaLIF\).*dash_syn 0, outside 1..15"),
    "tau <= dt": (lambda: cuba_net(tau_mem=1.0), r"net\[1\] \(CubaLIF\): tau:.*tau > dt"),
    "one layer": (lambda: _seq(nn.Linear(4, 5), sf.nn.LIF(reset="soft")), r"hidden and an output layer"),
    "two weights": (lambda: _seq(nn.Linear(4, 5), nn.Linear(5, 5), sf.nn.LIF(reset="soft")),
                    r"net\[0\] \(Linear\): is followed by net\[1\] \(Linear\)"),
    "LI hidden": (lambda: _seq(nn.Linear(4, 5), sf.nn.LI(), nn.Linear(5, 2), sf.nn.LIF(reset="soft")),
                  r"non-spiking neuron can only be the output"),
    "recurrent": (lambda: _seq(sf.nn.Recurrent(sf.nn.LIF(reset="soft"), nn.Linear(4, 4)), nn.Linear(4, 2),
                               sf.nn.LI()), r"net\[0\] \(Recurrent\): Recurrent has no Xylo counterpart"),
    "two synapses": (lambda: _seq(sf.nn.LI(tau=4.0, r=4.0), nn.Linear(4, 5), sf.nn.CubaLIF(reset="soft"),
                                  nn.Linear(5, 2), sf.nn.LI()), r"net\[2\] \(CubaLIF\): synapse: .*second one"),
    "not sequential": (lambda: nn.Linear(4, 4), r"takes an nn.Sequential"),
}


@pytest.mark.parametrize("case", sorted(BAD_MODELS))
def test_models_xylo_cannot_run_are_refused_by_layer(case):
    build, msg = BAD_MODELS[case]
    with pytest.raises(XyloError, match=msg):
        quantize(build())


def test_bad_arguments_and_core_v1_bias():
    with pytest.raises(ValueError, match="target must be one of xylo, got 'loihi'"):
        quantize(cuba_net(), target="loihi")
    with pytest.raises(ValueError, match="core must be 'v1' or 'v2'"):
        quantize(cuba_net(), core="v3")
    with pytest.raises(ValueError, match="threshold_max"):
        quantize(cuba_net(), threshold_max=40000)
    with pytest.raises(XyloError, match="hidden layer 0: net.*core v1 has no bias"):
        quantize(cuba_net(), core="v1")     # the Linear biases need Xylo v2's bias


def _layer(**kw):
    args = {"weight": torch.ones(3, 2), "shift": 0, "dash_syn": 1, "dash_mem": 2, "threshold": 10, "name": "L",
            **kw}
    return XyloLayer(args.pop("weight"), args.pop("shift"), **args)


@pytest.mark.parametrize("kw,msg", [
    ({"weight": torch.full((3, 2), 0.5)}, r"L: weight must be integers in -128..127 .*got 0.5 at index \(0, 0\)"),
    ({"weight": torch.full((3, 2), 128.0)}, r"L: weight must be integers in -128..127.*got 128"),
    ({"weight": torch.full((3, 2), 127.0), "shift": 9}, r"L: weight << 9 must be integers in -32768..32767"),
    ({"shift": 16}, r"L: weight shift must be integers in 0..15"),
    ({"threshold": 0}, r"L: threshold must be integers in 1..32767.*got 0"),
    ({"threshold": 40000}, r"L: threshold must be integers in 1..32767.*got 40000"),
    ({"dash_mem": 16}, r"L: dash_mem must be integers in 0..15"),
    ({"bias": 1e5}, r"L: bias must be integers in -32768..32767"),
    ({"bias": 3, "core": "v1"}, r"L: Xylo core v1 has no bias"),
    ({"gain": torch.ones(3, 1), "shift": 9}, r"L: weight shift 9 > 8 overflows"),
    ({"weight": torch.ones(2)}, r"L: weight must be a 2-D tensor"),
])
def test_integer_values_out_of_range_are_refused(kw, msg):
    with pytest.raises(XyloError, match=msg):
        _layer(**kw)


@pytest.mark.parametrize("x,msg", [
    (torch.full((4, 1, 2), 16.0), r"L: input events must be integers in 0..15 .*got 16 at index \(0, 0, 0\)"),
    (torch.full((4, 1, 2), -1.0), r"input events must be integers in 0..15.*got -1"),
    (torch.full((4, 1, 2), 0.5), r"input events must be integers in 0..15.*got 0.5"),
    (torch.zeros(4, 2), r"L: input must be event counts of shape \(T, B, 2\), got shape \(4, 2\)"),
])
def test_input_events_xylo_cannot_take_are_refused(x, msg):
    with pytest.raises(XyloError, match=msg):
        _layer()(x)


def test_design_rules_of_a_hand_built_net():
    hid, out = _layer(name="h"), _layer(weight=torch.ones(2, 3), population="output", delay=1, name="o")
    XyloNet(hid, out)
    with pytest.raises(XyloError, match="o: population hidden, expected output"):
        XyloNet(hid, _layer(weight=torch.ones(2, 3), delay=1, name="o"))
    with pytest.raises(XyloError, match="o: delay 0"):
        XyloNet(hid, _layer(weight=torch.ones(2, 3), population="output", name="o"))
    with pytest.raises(XyloError, match="o: 2 inputs, but h has 3 neurons"):
        XyloNet(hid, _layer(weight=torch.ones(2, 2), population="output", delay=1, name="o"))
    big = _layer(weight=torch.ones(1001, 2), name="big")
    with pytest.raises(XyloError, match="1001 hidden neurons in 1 layer"):
        XyloNet(big, _layer(weight=torch.ones(2, 1001), population="output", delay=1, name="o"))
    with pytest.raises(XyloError, match="weight shifts \\[0, 1\\]"):
        XyloNet(_layer(weight=torch.ones(3, 2)), _layer(weight=torch.ones(3, 3), delay=1, name="r1"),
                _layer(weight=torch.ones(3, 3), delay=1, shift=1, name="r2"),
                _layer(weight=torch.ones(2, 3), population="output", delay=1))


def test_docs_example_runs():
    """The example at the top of docs/hardware.md runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "hardware.md").read_text()
    exec(re.findall(r"```python\n(.*?)```", text, re.S)[0], {})


def test_calibration_scales_the_readout_membrane():
    model = cuba_net().double()
    with torch.no_grad():
        model[0].weight.mul_(4.0)
    x = events(T=60, B=8, p=0.6)
    plain, calibrated = quantize(model), quantize(model, calibration=x)
    v_float = model(x).abs().max().item()
    v_int = calibrated(x).abs().max().item()
    assert 0.5 * 2 ** 14 < v_int < 1.5 * 2 ** 14 and calibrated[1].out_scale * v_int == pytest.approx(v_float, 0.05)
    assert plain[1].weight.abs().max() == 127 and plain[1].shift == 0
    with pytest.raises(ValueError, match=r"calibration must be input events of shape \(T, B, inputs\)"):
        quantize(model, calibration=x[0])
