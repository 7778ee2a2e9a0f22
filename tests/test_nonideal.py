"""``quant.nonideal``: statistics of each device non-ideality under fixed seeds, reproducibility,
gradients, composition, and errors."""
from __future__ import annotations

import math

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import quant
from spikeforge.monitor import Monitor
from spikeforge.quant import nonideal as ni


def _linear(n_out=200, n_in=300, seed=0) -> nn.Linear:
    torch.manual_seed(seed)
    return nn.Linear(n_in, n_out).double()


def _weight(transform, seed=0, lin=None):
    lin = lin or _linear()
    with ni.apply(lin, transform, seed=seed):
        return lin.weight.detach().clone()


def test_quantize_levels_and_straight_through():
    lin = _linear()
    w0 = lin.weight.detach().clone()
    top = w0.abs().max()
    with ni.apply(lin, ni.Quantize(5), seed=0):
        w = lin.weight
        assert torch.allclose(w.abs().unique(), torch.linspace(0, 1, 5, dtype=torch.float64) * top)
        assert (w - w0).abs().max() <= top / 8 + 1e-12   # half a step of G_max / 4
        w.sum().backward()
    assert torch.equal(lin.weight.grad, torch.ones_like(w0))


def test_variation_is_lognormal_and_fixed_per_seed():
    lin = _linear()
    w0 = lin.weight.detach().clone()
    nz = w0 != 0
    log_ratio = torch.log(_weight(ni.Variation(0.2), seed=3, lin=lin)[nz] / w0[nz])
    assert abs(log_ratio.mean().item()) < 0.01 and abs(log_ratio.std().item() - 0.2) < 0.005
    with ni.apply(lin, ni.Variation(0.2), seed=3):   # fixed: two reads are the same
        assert torch.equal(lin.weight, lin.weight)
        assert torch.equal(lin.weight, _weight(ni.Variation(0.2), seed=3, lin=_linear()))
    assert not torch.equal(_weight(ni.Variation(0.2), seed=4), _weight(ni.Variation(0.2), seed=3))


def test_read_noise_is_fresh_per_call_and_reproducible():
    lin = _linear()
    w0 = lin.weight.detach().clone()
    with ni.apply(lin, ni.ReadNoise(0.05), seed=1):
        a, b = lin.weight.detach().clone(), lin.weight.detach().clone()
    with ni.apply(lin, ni.ReadNoise(0.05), seed=1):
        assert torch.equal(lin.weight, a) and torch.equal(lin.weight, b)
    assert not torch.equal(a, b)
    noise = (a - w0) / w0.abs().max()
    assert abs(noise.mean().item()) < 0.002 and abs(noise.std().item() - 0.05) < 0.001
    assert torch.allclose(lin.weight, w0)   # removed: the plain weight again


def test_drift_follows_the_power_law():
    lin = _linear()
    w0 = lin.weight.detach().clone()
    w = _weight(ni.Drift(t=1000.0, nu=0.05, t0=1.0), lin=lin)
    assert torch.allclose(w, w0 * 1000.0 ** -0.05)
    assert torch.equal(_weight(ni.Drift(t=1.0, nu=0.05), lin=lin), w0)
    nz = w0 != 0
    nu = -torch.log(_weight(ni.Drift(t=100.0, nu=0.06, nu_std=0.02), seed=2, lin=lin)[nz] / w0[nz]) / math.log(100)
    assert abs(nu.mean().item() - 0.06) < 0.001 and abs(nu.std().item() - 0.02) < 0.001


def test_stuck_at_fractions():
    lin = _linear()
    w0 = lin.weight.detach().clone()
    top = w0.abs().max()
    with ni.apply(lin, ni.StuckAt(p_zero=0.1, p_max=0.05), seed=5):
        w = lin.weight
        zero, high = (w == 0), (w.abs() == top) & (w0.abs() != top)
        assert abs(zero.double().mean().item() - 0.1) < 0.005 and abs(high.double().mean().item() - 0.05) < 0.005
        assert torch.equal(torch.sign(w[high]), torch.sign(w0[high]))
        w.sum().backward()
    g = lin.weight.grad
    assert bool((g[zero | high] == 0).all()) and bool((g[~(zero | high)] == 1).all())


def test_ir_drop_grows_with_row_and_column():
    lin = _linear(4, 5)
    w0 = lin.weight.detach().clone()
    ratio = _weight(ni.IRDrop(0.2), lin=lin) / w0
    assert torch.allclose(ratio[0, 0], torch.tensor(1.0, dtype=torch.float64))
    assert torch.allclose(ratio[-1, -1], torch.tensor(0.8, dtype=torch.float64))
    assert bool((ratio.diff(dim=0) < 0).all()) and bool((ratio.diff(dim=1) < 0).all())


def test_chain_in_a_model_trains_and_reproduces():
    """A spiking model under all six at once: the loss is reproducible per seed and its
    gradient reaches every Linear's weight; afterwards the model is as before."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), sf.nn.LIF(), nn.Linear(16, 3), sf.nn.LI())
    names = [type(m).__name__ for m in model]
    x = 4 * torch.rand(10, 8, 4)
    every = ni.chain(ni.Quantize(16), ni.StuckAt(0.02, 0.01), ni.Variation(0.1), ni.Drift(t=10.0),
                     ni.ReadNoise(0.02), ni.IRDrop(0.1))
    clean = model(x).detach()
    losses = []
    for _ in range(2):
        with ni.apply(model, every, seed=7) as h:
            assert sorted(h.devices) == ["0", "2"]
            loss = model(x).pow(2).sum()
            loss.backward()
            losses.append(loss.item())
    assert losses[0] == losses[1]
    assert all(model[k].weight.grad is not None and model[k].weight.grad.abs().sum() > 0 for k in (0, 2))
    assert [type(m).__name__ for m in model] == names and torch.equal(model(x), clean)


def test_chosen_layers_keep_their_draws():
    """A layer's draws depend on its place among all Linears, not on which others are chosen."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Linear(6, 3))
    with ni.apply(model, ni.Variation(0.3), seed=2):
        both = model[1].weight.detach().clone()
    with ni.apply(model, [ni.Variation(0.3)], seed=2, layers=["1"]) as h:
        assert list(h.devices) == ["1"] and torch.equal(model[1].weight, both)
        assert not hasattr(model[0], "parametrizations")


def test_other_parametrizations_stay():
    lin = _linear(3, 4)

    class Double(nn.Module):
        def forward(self, w):
            return 2 * w

    torch.nn.utils.parametrize.register_parametrization(lin, "weight", Double())
    w = lin.weight.detach().clone()
    with ni.apply(lin, ni.IRDrop(0.5)):
        assert not torch.equal(lin.weight, w)
    assert torch.equal(lin.weight, w)


@pytest.mark.parametrize("make, message", [
    (lambda: ni.Quantize(1), r"Quantize: levels must be an integer >= 2, got 1"),
    (lambda: ni.Variation(-0.1), r"Variation: sigma must be a finite number in >= 0, got -0.1"),
    (lambda: ni.ReadNoise(float("nan")), r"ReadNoise: sigma"),
    (lambda: ni.Drift(t=0.5, t0=1.0), r"Drift: t must be a finite number in >= 1"),
    (lambda: ni.Drift(t=2.0, t0=0.0), r"Drift: t0 must be > 0"),
    (lambda: ni.StuckAt(p_zero=1.5), r"StuckAt: p_zero must be a finite number in \[0, 1\]"),
    (lambda: ni.StuckAt(0.6, 0.6), r"p_zero \+ p_max must be <= 1"),
    (lambda: ni.IRDrop(1.0), r"IRDrop: alpha must be a finite number in \[0, 1\)"),
    (lambda: ni.chain(ni.IRDrop(0.1), "noise"), r"every part must be a nonideal Transform"),
    (lambda: ni.apply(nn.ReLU(), ni.IRDrop(0.1)), r"model has no nn.Linear layer"),
    (lambda: ni.apply(nn.Linear(2, 2), ni.IRDrop(0.1), layers=["fc"]), r"layers: \['fc'\] are not nn.Linear"),
    (lambda: ni.apply(nn.Linear(2, 2), ni.IRDrop(0.1), seed=-1), r"seed must be an integer >= 0"),
    (lambda: ni.apply(nn.Linear(2, 2), "noise"), r"transform must be a nonideal Transform"),
])
def test_errors(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


# -- energy presets (Monitor.energy(preset=...)) ------------------------------------------
def _monitored(spiking_input: bool):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 8), sf.nn.LIF(), nn.Linear(8, 3), sf.nn.LI())
    x = (torch.rand(5, 2, 6) < 0.3).float() if spiking_input else torch.rand(5, 2, 6) * 3
    with Monitor(net) as mon:
        net(x)
    return mon


def test_energy_presets_weigh_the_counts():
    mon = _monitored(spiking_input=False)
    synops, macs = sum(mon.synops().values()), sum(mon.macs().values())
    assert mon.neuron_updates() == 5 * 2 * 8 and synops > 0 and macs == 5 * 2 * 6 * 8
    assert mon.energy() == pytest.approx(synops * 0.9e-12 + macs * 4.6e-12)
    assert mon.energy(preset="cmos45_fp32") == pytest.approx(mon.energy())
    assert mon.energy(preset="cmos45_int8") == pytest.approx(synops * 0.03e-12 + macs * 0.23e-12)
    custom = quant.EnergyPreset("mine", 1.0, 2.0, 3.0, "test")
    assert mon.energy(preset=custom) == pytest.approx(synops + 2.0 * macs + 3.0 * 80)
    spiking = _monitored(spiking_input=True)
    s = sum(spiking.synops().values())
    assert spiking.macs() == {} and spiking.energy(preset="loihi") == pytest.approx(s * 23.6e-12 + 80 * 52e-12)
    assert set(quant.ENERGY_PRESETS) == {"cmos45_fp32", "cmos45_int32", "cmos45_int8", "loihi"}
    assert all(p.source for p in quant.ENERGY_PRESETS.values())


def test_energy_preset_errors():
    mon = _monitored(spiking_input=False)
    with pytest.raises(ValueError, match=r"preset 'loihi' has no energy per dense MAC, but 480 MACs"):
        mon.energy(preset="loihi")
    with pytest.raises(ValueError, match=r"unknown energy preset 'tpu'; known: \['cmos45_fp32'"):
        mon.energy(preset="tpu")
    with pytest.raises(ValueError, match="not both"):
        mon.energy(1e-12, preset="loihi")
    with pytest.raises(ValueError, match=r"EnergyPreset 'bad': e_update must be a finite number of joules >= 0"):
        quant.EnergyPreset("bad", 1e-12, 1e-12, -1.0, "")


def test_docs_example_runs():
    """The non-ideality example in docs/hardware.md runs as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "hardware.md").read_text()
    section = text.split("## Device non-idealities", 1)[1].split("\n## ", 1)[0]
    scope = {}
    exec(re.findall(r"```python\n(.*?)```", section, re.S)[0], scope)
    assert scope["model"][0].weight.grad is not None
