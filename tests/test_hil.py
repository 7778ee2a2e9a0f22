"""Hardware in the loop (``spikeforge.quant.hil``): the forward value is the substrate's, the
gradient the software model's at the substrate's operating point; substrates compute what
they claim, are seeded, and refuse bad input clearly."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.losses import max_membrane_ce
from spikeforge.quant import XyloError, hil, quantize


def _net(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    net = nn.Sequential(nn.Linear(4, 16), sf.nn.LIF(reset="soft", tau=4.0), nn.Linear(16, 3), sf.nn.LI(tau=8.0))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net


X = 2 * torch.rand(20, 6, 4, generator=torch.Generator().manual_seed(1))
Y = torch.tensor([0, 1, 2, 0, 1, 2])
EVENTS = torch.randint(0, 4, (20, 6, 4), generator=torch.Generator().manual_seed(2)).float()


def _grads(net):
    return [p.grad.clone() for p in net.parameters()]


def test_software_substrate_is_the_software_model_forward_and_backward():
    net = _net()
    out, obs = hil.in_the_loop(net, X)                 # substrate=None: Software()
    max_membrane_ce(out, Y).backward()
    got = _grads(net)
    net.zero_grad()
    ref = net(X)
    max_membrane_ce(ref, Y).backward()
    assert torch.equal(out, ref) and sorted(obs) == [1, 3]
    assert torch.equal(obs[1].output, net[1](net[0](X))) and obs[1].trace is not None
    for a, b in zip(got, _grads(net)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_gradient_is_the_software_gradient_at_the_substrates_operating_point():
    net = _net()
    substrate = hil.AnalogMismatch(3, mismatch=0.3, noise=0.1)
    out, obs = hil.in_the_loop(net, X, substrate)
    max_membrane_ce(out, Y).backward()
    assert torch.equal(out, obs[3].output)                        # the forward value is the substrate's
    assert not torch.allclose(out, net(X))                        # ... which is not the software model's
    assert not torch.equal(obs[1].output, net[1](net[0](X)))
    # by hand: the loss's gradient at the observed readout, through the software readout fed the
    # observed hidden spikes, then through the software hidden layer fed the input
    y3 = obs[3].output.clone().requires_grad_()
    (g3,) = torch.autograd.grad(max_membrane_ce(y3, Y), y3)
    z_in = obs[1].output.clone().requires_grad_()
    *g_out, g_z = torch.autograd.grad(net[3](net[2](z_in)), [net[2].weight, net[2].bias, z_in], grad_outputs=g3)
    g_in = torch.autograd.grad(net[1](net[0](X)), [net[0].weight, net[0].bias], grad_outputs=g_z)
    for got, want in zip([net[0].weight.grad, net[0].bias.grad, net[2].weight.grad, net[2].bias.grad],
                         [*g_in, *g_out]):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-7)
    assert net[0].weight.grad.abs().sum() > 0


def test_xylo_integer_observes_the_integer_network_of_the_current_weights():
    net = _net()
    loop = hil.InTheLoop(net, hil.XyloInteger())
    out = loop(EVENTS)
    ref = quantize(net)
    with torch.no_grad():
        scores = ref.scores(EVENTS)
    assert torch.equal(out.double(), scores.float().double())     # forward value: the integer readout
    assert torch.equal(loop.observations[1].output.double(), ref[0].spikes)
    i_syn, v_mem = loop.observations[1].trace
    assert torch.equal(i_syn, ref[0].trace.i_syn) and torch.equal(v_mem, ref[0].trace.v_mem)
    assert bool((i_syn == i_syn.round()).all())                   # integer states
    max_membrane_ce(out, Y).backward()
    assert net[0].weight.grad.abs().sum() > 0                    # straight through to the float weights
    with torch.no_grad():
        net[2].weight.mul_(-1.0)                                   # a weight change is seen on the next run
    loop(EVENTS)
    assert torch.equal(loop.substrate.last_net[1].weight, quantize(net)[1].weight)


def test_analog_mismatch_is_seeded_and_fixed_pattern_plus_trial_noise():
    net = _net()
    runs = [[hil.in_the_loop(net, X, s)[0] for _ in range(2)] for s in
            (hil.AnalogMismatch(5, mismatch=0.2, noise=0.1), hil.AnalogMismatch(5, mismatch=0.2, noise=0.1))]
    assert torch.equal(runs[0][0], runs[1][0]) and torch.equal(runs[0][1], runs[1][1])   # same seed, same runs
    assert not torch.equal(runs[0][0], runs[0][1])                                       # fresh noise per run
    s = hil.AnalogMismatch(5, mismatch=0.2, noise=0.1)
    first = hil.in_the_loop(net, X, s)[0]
    s.restart()
    assert torch.equal(hil.in_the_loop(net, X, s)[0], first)
    quiet = hil.AnalogMismatch(5, mismatch=0.2)                     # no noise: every run the same
    assert torch.equal(hil.in_the_loop(net, X, quiet)[0], hil.in_the_loop(net, X, quiet)[0])
    assert not torch.equal(hil.in_the_loop(net, X, hil.AnalogMismatch(6, mismatch=0.2))[0],
                           hil.in_the_loop(net, X, quiet)[0])
    ideal = hil.AnalogMismatch(5, mismatch=0.0, noise=0.0)
    assert torch.equal(hil.in_the_loop(net, X, ideal)[0], net(X))
    # the fixed pattern is drawn once: a weight change keeps each synapse's factor
    w = torch.randn(16, 4)
    torch.testing.assert_close(quiet.weight(0, w) / w, quiet.weight(0, 2 * w) / (2 * w))
    p = quiet.params(1, net[1], 16)
    assert p.tau.shape == (16,) and bool((p.tau > 0).all()) and p.v_threshold.std() > 0


def test_training_in_the_loop_lowers_the_loss_on_the_substrate():
    net = _net()
    x = 2 * torch.rand(20, 32, 4, generator=torch.Generator().manual_seed(4))
    y = x[0, :, :3].argmax(1)                          # a learnable task: the largest of the first 3 inputs
    loop = hil.InTheLoop(net, hil.AnalogMismatch(0, mismatch=0.5, noise=0.05))
    opt = torch.optim.Adam(net.parameters(), lr=0.05)
    with torch.no_grad():
        before = max_membrane_ce(loop(x), y).item()
    for _ in range(60):
        loss = max_membrane_ce(loop(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        assert max_membrane_ce(loop(x), y).item() < 0.85 * before   # 1.10 -> 0.88 (deterministic)


def test_clear_errors():
    net = _net()
    with pytest.raises(TypeError, match="substrate must be"):
        hil.in_the_loop(net, X, "analog")
    with pytest.raises(TypeError, match="substrate must be"):
        hil.InTheLoop(net, substrate=object())
    with pytest.raises(ValueError, match=r"x must be an input sequence of shape \(T, B, inputs\), got \(6, 4\)"):
        hil.in_the_loop(net, X[0])
    with pytest.raises(TypeError, match="nn.Sequential"):
        hil.in_the_loop(nn.Linear(4, 3), X)
    for kw, match in (({"mismatch": -0.1}, "mismatch must be"), ({"noise": float("nan")}, "noise must be"),
                      ({"seed": -1}, "seed must be")):
        with pytest.raises(ValueError, match=match):
            hil.AnalogMismatch(**kw)
    s = hil.AnalogMismatch(0, mismatch=0.1)
    hil.in_the_loop(net, X, s)
    with pytest.raises(ValueError, match="device layer 0 .* mismatch was drawn for"):
        hil.in_the_loop(_net_wider(), X, s)
    with pytest.raises(XyloError, match="input events must be integers in 0..15"):
        hil.in_the_loop(net, X, hil.XyloInteger())
    for kw, match in (({"core": "v3"}, "core must be 'v1' or 'v2'"), ({"threshold_max": 0}, "threshold_max must be"),
                      ({"calibration": [1.0]}, "calibration must be None or")):   # refused when made, not at a run
        with pytest.raises((ValueError, TypeError), match=match):
            hil.XyloInteger(**kw)
    assert repr(hil.XyloInteger(core="V1")) == "XyloInteger(core='v1', threshold_max=4096)"
    with pytest.raises(ValueError, match="observation has shape"):
        hil.straight_through(torch.zeros(3, 2), torch.zeros(3, 3))


def _net_wider() -> nn.Sequential:
    return nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(reset="soft", tau=4.0), nn.Linear(8, 3), sf.nn.LI(tau=8.0))


def test_the_docs_example_runs():
    """The hardware-in-the-loop example in docs/hardware.md runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "hardware.md").read_text()
    section = text.split("## Hardware in the loop", 1)[1].split("\n## ", 1)[0]
    scope = {}
    exec(re.findall(r"```python\n(.*?)```", section, re.S)[0], scope)
    assert scope["net"][0].weight.grad.abs().sum() > 0
    assert scope["v"].shape == scope["v_int"].shape == (20, 8, 3)
    assert scope["spikes"].shape == scope["v_hidden"].shape == (20, 8, 16)


@pytest.mark.parametrize("dropout", [nn.Dropout, sf.nn.TimeDropout])
def test_substrates_run_dropout_as_the_identity(dropout):
    net = _net()
    with_dropout = nn.Sequential(net[0], net[1], dropout(0.5), net[2], net[3]).train()
    torch.manual_seed(0)
    out = hil.in_the_loop(with_dropout, X, hil.AnalogMismatch(1, mismatch=0.2))[0]
    assert torch.equal(out, hil.in_the_loop(net, X, hil.AnalogMismatch(1, mismatch=0.2))[0])


def test_analog_mismatch_reads_units_of_neurons_written_as_equations():
    """Parameters in 'ms', 'mV', 'MOhm' (from_equations) get the mismatch of 'time', 'potential',
    'resistance' (the built-in words); they were left exact."""
    from spikeforge.neurons import from_equations

    eq = from_equations("dv/dt = (v_leak - v + r*I) / tau", threshold="v > v_threshold", reset="v = v_reset",
                        params={"tau": (4.0, "ms"), "v_leak": (0.0, "mV"), "r": (1.0, "MOhm"),
                                "v_threshold": (1.0, "mV"), "v_reset": (0.0, "mV")}, name="EqHilLIF", register=False)
    lif = sf.nn.LIF(tau=4.0)
    from spikeforge.nn import neuron as nm

    try:
        got = hil.AnalogMismatch(3, mismatch=0.2).params(1, nm.neuron_module(eq)(tau=4.0), 5)
    finally:
        vars(nm).pop("EqHilLIF", None)           # the module class is bound there; leave no trace
    want = hil.AnalogMismatch(3, mismatch=0.2).params(1, lif, 5)
    assert list(eq.params) == list(lif.spec_type.params)
    for a, b in zip(got, want):
        assert a.shape == (5,) and torch.allclose(a, b)
    assert not torch.allclose(got[0], torch.full((5,), 4.0))


@pytest.mark.parametrize("option", ["batch_first", "carry_state"])
def test_neurons_that_the_substrate_would_run_otherwise_are_refused(option):
    """The substrates run every neuron time-first from rest; a batch-first or state-carrying
    software layer would give the gradient at another operating point than the forward value."""
    net = nn.Sequential(nn.Linear(4, 3), sf.nn.LIF(**{option: True}))
    with pytest.raises(ValueError, match=r"layer 1 \(LIF\).*batch_first=False, carry_state=False"):
        hil.in_the_loop(net, X)
    with pytest.raises(ValueError, match="time-first from rest"):
        hil.InTheLoop(net)
