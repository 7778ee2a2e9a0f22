"""SpikingLinear: the fused Linear + neuron equals TimeDistributed(Linear) -> neuron, values
and gradients, for every registered neuron; fallbacks are reported; bad input is refused."""
from __future__ import annotations

import logging
import math

import pytest
import torch
from conftest import CUSTOM, NEURONS, drive_scale

import spikeforge as sf
from spikeforge import functional as F
from spikeforge._validation import NotFiniteError
from spikeforge.neurons import REGISTRY
from spikeforge.nn import spiking_linear as SL
from spikeforge.nn.spiking_linear import Backward, SpikingLinear, spiking_linear

pytestmark = pytest.mark.skipif(sf.backends()["cpu"] is not None, reason="the fused CPU backend is not available")

T, B, IN, OUT = 11, 3, 5, 6


def _pair(name, dtype=torch.float64, chunk=None, seed=0, **kw):
    """A SpikingLinear and its unfused twin (a copy of the same Linear and neuron)."""
    torch.manual_seed(seed)
    layer = SpikingLinear(IN, OUT, sf.nn.MODULES[name](**kw), chunk=chunk).to(dtype)
    s = drive_scale(name)
    with torch.no_grad():   # drive the neurons at a moderate rate
        layer.linear.weight.mul_(s)
        layer.linear.bias.uniform_(0.2 * s, 0.6 * s)
    lin = torch.nn.Linear(IN, OUT).to(dtype)
    lin.load_state_dict(layer.linear.state_dict())
    nrn = sf.nn.MODULES[name](**kw).to(dtype)
    nrn.load_state_dict(layer.neuron.state_dict())
    return layer, lin, nrn


def _grads(loss, module, x):
    loss.backward()
    out = [x.grad.clone()] + [p.grad.clone() for p in module.parameters()]
    x.grad = None
    module.zero_grad(set_to_none=True)
    return out


def _compare(layer, lin, nrn, x, w, tol):
    z = layer(x)
    assert layer.last_fused is True and layer.last_backend == "cpu"
    g = _grads((z * w).sum(), layer, x)
    z2 = nrn(lin(x))
    g2 = _grads((z2 * w).sum(), torch.nn.ModuleList([lin, nrn]), x)
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    assert len(g) == len(g2) >= 3
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b, **tol)
    return z, g


@pytest.mark.parametrize("name", NEURONS)
@pytest.mark.parametrize("chunk", [1, 5, None], ids=["chunk1", "chunk5", "auto"])
def test_equals_unfused_pair(name, chunk):
    layer, lin, nrn = _pair(name, chunk=chunk)
    x = torch.rand(T, B, IN, dtype=torch.float64, requires_grad=True)
    w = torch.rand(T, B, OUT, dtype=torch.float64) - 0.5
    z, g = _compare(layer, lin, nrn, x, w, dict(rtol=1e-10, atol=1e-12))
    if REGISTRY[name].spiking:
        assert 0 < z.mean() < 1, "the test input should make some neurons spike, not all"
    assert g[1].abs().sum() > 0, "the weight gradient should not vanish"


@pytest.mark.parametrize("name", ["PLIF", "ALIF"])
def test_learnable_per_neuron_parameters_get_gradients(name):
    cls = REGISTRY[name]
    kw = {p: torch.full((OUT,), float(spec.default)) * (1 + 0.1 * torch.rand(OUT))
          for p, spec in cls.params.items() if spec.unit == "time"}
    assert kw, f"{name} should have a time constant"
    kw.update({f"learn_{p}": True for p in kw})
    layer, lin, nrn = _pair(name, **kw)
    x = torch.rand(T, B, IN, dtype=torch.float64, requires_grad=True)
    w = torch.rand(T, B, OUT, dtype=torch.float64)
    _, g = _compare(layer, lin, nrn, x, w, dict(rtol=1e-10, atol=1e-12))
    names = [n for n, _ in layer.named_parameters()]
    for p in kw:
        if p.startswith("learn_"):
            continue
        gp = g[1 + names.index(f"neuron.{p}")]
        assert gp.shape == (OUT,) and gp.abs().sum() > 0


def test_float32_long_sequence_and_custom_surrogate():
    torch.manual_seed(1)
    layer, lin, nrn = _pair("LIF", dtype=torch.float32, surrogate=CUSTOM)
    x = torch.rand(70, 4, IN, requires_grad=True)   # several checkpoint intervals, a partial last chunk
    layer.chunk = 24
    _compare(layer, lin, nrn, x, torch.rand(70, 4, OUT), dict(rtol=1e-5, atol=1e-6))


@pytest.mark.parametrize("per_chunk", [True, False], ids=["weight-grad-per-chunk", "weight-grad-once"])
def test_both_weight_gradient_paths(monkeypatch, per_chunk):
    monkeypatch.setattr(SL, "WEIGHT_BYTES", 1 << 20 if per_chunk else 8)
    layer, lin, nrn = _pair("LIF", chunk=4)
    x = torch.rand(T, B, IN, dtype=torch.float64, requires_grad=True)
    _compare(layer, lin, nrn, x, torch.rand(T, B, OUT, dtype=torch.float64), dict(rtol=1e-10, atol=1e-12))


def test_sum_loss_and_frozen_linear():
    """A broadcast output gradient (sum) is read in place; a frozen Linear without input
    gradient still trains the neuron's parameters."""
    layer, lin, nrn = _pair("PLIF")
    x = torch.rand(T, B, IN, dtype=torch.float64)
    layer.linear.requires_grad_(False)
    lin.requires_grad_(False)
    layer(x).sum().backward()
    nrn(lin(x)).sum().backward()
    assert layer.last_fused
    torch.testing.assert_close(layer.neuron.tau.grad, nrn.tau.grad, rtol=1e-10, atol=1e-12)
    assert layer.linear.weight.grad is None


def test_output_gradient_broadcast_over_time():
    """An output gradient with stride 0 over time (a per-(batch, neuron) weight) is read in place."""
    layer, lin, nrn = _pair("LIF")
    x = torch.rand(T, B, IN, dtype=torch.float64, requires_grad=True)
    w = torch.rand(B, OUT, dtype=torch.float64)
    g = _grads((layer(x).sum(0) * w).sum(), layer, x)   # sum(0)'s backward: stride 0 over time
    g2 = _grads((nrn(lin(x)).sum(0) * w).sum(), torch.nn.ModuleList([lin, nrn]), x)
    for a, b in zip(g, g2):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_state_in_and_out_with_gradients():
    layer, lin, nrn = _pair("CubaLIF")
    spec, params = layer.neuron.spec, layer.neuron.params()
    x = torch.rand(T, B, IN, dtype=torch.float64)
    s0 = [torch.rand(B, OUT, dtype=torch.float64, requires_grad=True) for _ in spec.state]
    z, s, name, fused = spiking_linear(spec, x, layer.linear.weight, layer.linear.bias, s0, params, chunk=4)
    assert fused and name == "cpu"
    z2, s2, _, _ = F.run(spec, lin(x), s0, params)
    ramp = torch.arange(T * B * OUT, dtype=torch.float64).view(T, B, OUT)

    def loss(z, s):
        return (z * ramp).sum() + sum((v ** 2).sum() for v in s)
    g = torch.autograd.grad(loss(z, s), s0)
    g2 = torch.autograd.grad(loss(z2, s2), s0)
    torch.testing.assert_close(z, z2, rtol=0, atol=0)
    for a, b in zip([*s, *g], [*s2, *g2]):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_carry_state_and_step_match_the_pair():
    layer, lin, nrn = _pair("LIF", carry_state=True)
    x = torch.rand(2 * T, B, IN, dtype=torch.float64)
    with torch.no_grad():
        a = torch.cat([layer(x[:T]), layer(x[T:])])
        b = nrn(lin(x))
        torch.testing.assert_close(a, b, rtol=0, atol=0)
        layer.reset()
        steps = torch.stack([layer.step(x[t]) for t in range(4)])
        torch.testing.assert_close(steps, b[:4], rtol=0, atol=0)
    assert layer.state is not None


def test_batch_first():
    layer, lin, nrn = _pair("LIF", batch_first=True)
    x = torch.rand(B, T, IN, dtype=torch.float64)
    z = layer(x)
    assert layer.last_fused and z.shape == (B, T, OUT)
    torch.testing.assert_close(z, nrn(lin(x)), rtol=0, atol=0)


@pytest.mark.parametrize("why", ["reference", "record", "rank4"])
def test_fallback_runs_the_pair_and_says_so(why, caplog):
    kw = {"reference": dict(backend="reference"), "record": dict(record=True), "rank4": {}}[why]
    layer, lin, nrn = _pair("LIF", **kw)
    x = torch.rand(T, B, 2, IN, dtype=torch.float64) if why == "rank4" else torch.rand(T, B, IN, dtype=torch.float64)
    SL._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="spikeforge"):
        z = layer(x)
    assert layer.last_fused is False
    assert layer.last_backend == ("reference" if why == "reference" else "cpu")
    assert any("unfused" in r.message for r in caplog.records)
    torch.testing.assert_close(z, nrn(lin(x)), rtol=0, atol=0)
    if why == "record":
        assert layer.neuron.trace is not None


def test_no_grad_and_nonfinite_input():
    layer, lin, nrn = _pair("LIF")
    x = torch.rand(T, B, IN, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(layer(x), nrn(lin(x)), rtol=0, atol=0)
    x[3, 1, 2] = math.nan
    with pytest.raises(NotFiniteError, match="NaN or inf"):
        layer(x)


def test_weight_changed_in_place_before_backward_is_caught():
    layer, _, _ = _pair("LIF")
    z = layer(torch.rand(T, B, IN, dtype=torch.float64))
    with torch.no_grad():
        layer.linear.weight.add_(1.0)
    with pytest.raises(RuntimeError, match="inplace operation"):
        z.sum().backward()


def test_state_dict_is_the_pairs_and_the_layer_pickles():
    import pickle

    layer, lin, nrn = _pair("PLIF")
    keys = set(layer.state_dict())
    assert keys == {f"linear.{k}" for k in lin.state_dict()} | {f"neuron.{k}" for k in nrn.state_dict()}
    x = torch.rand(T, B, IN, dtype=torch.float64)
    copy = pickle.loads(pickle.dumps(layer))
    torch.testing.assert_close(copy(x), layer(x), rtol=0, atol=0)
    assert copy.last_fused


def test_bad_arguments():
    with pytest.raises(TypeError, match="neuron must be a spikeforge neuron module"):
        SpikingLinear(3, 4, torch.nn.ReLU())
    with pytest.raises(ValueError, match="out_features must be a positive int"):
        SpikingLinear(3, 0, sf.nn.LIF())
    with pytest.raises(ValueError, match="chunk must be a positive int"):
        SpikingLinear(3, 4, sf.nn.LIF(), chunk=0)
    with pytest.raises(ValueError, match="backward must be"):
        SpikingLinear(3, 4, sf.nn.LIF(), backward="dense")
    layer = SpikingLinear(3, 4, sf.nn.LIF())
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3\)"):
        layer(torch.rand(5, 2, 4))
    w = torch.rand(4, 3)
    with pytest.raises(ValueError, match=r"bias must have shape \(4,\)"):
        spiking_linear(sf.neurons.REGISTRY["LIF"](), torch.rand(5, 2, 3), w, torch.rand(3))
    with pytest.raises(ValueError, match="weight must be a 2-d tensor"):
        spiking_linear(sf.neurons.REGISTRY["LIF"](), torch.rand(5, 2, 3), torch.rand(4))
    assert {b.name for b in Backward} == {"DENSE", "SPARSE"}


@pytest.mark.parametrize("backward", list(Backward))
def test_empty_batch(backward):
    # B = 0: an empty output and zero gradients, fused (the chunk length divided by B) and sparse
    m = SpikingLinear(16, 8, sf.nn.LIF(surrogate=sf.surrogate.Triangle(1.0)), backward=backward)
    x = torch.rand(5, 0, 16, requires_grad=True)
    z = m(x)
    assert z.shape == (5, 0, 8) and (backward is Backward.SPARSE or m.last_fused)
    z.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(m.linear.weight.grad, torch.zeros_like(m.linear.weight))


def test_sparse_cutoff_backend_and_input_rank():
    # an unbounded surrogate (the default ATan) trains sparse with cutoff=; last_backend reports the
    # neuron's backend; cutoff is refused without Backward.SPARSE; a single step (B, in) is named as x's
    m = SpikingLinear(16, 8, sf.nn.LIF(), backward=Backward.SPARSE, cutoff=0.5)
    x = (torch.rand(4, 2, 16) * 3).requires_grad_()
    m(x).sum().backward()
    assert m.last_backend == "cpu" and m.last_fused is False and x.grad is not None
    assert "cutoff=0.5" in repr(m)
    with pytest.raises(sf.kernels.sparse_backward.NotSparse, match="cutoff="):
        SpikingLinear(16, 8, sf.nn.LIF(), backward=Backward.SPARSE)(x)
    with pytest.raises(ValueError, match="Backward.SPARSE"):
        SpikingLinear(16, 8, sf.nn.LIF(), cutoff=0.5)
    for bad in (0, -1.0, "0.5", True):
        with pytest.raises(ValueError, match="cutoff must be a positive number"):
            SpikingLinear(16, 8, sf.nn.LIF(), backward=Backward.SPARSE, cutoff=bad)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 16\), got \(4, 16\); for one time step"):
        SpikingLinear(16, 8, sf.nn.LIF())(torch.rand(4, 16))


def test_sparse_says_once_that_it_detaches_the_reset(caplog):
    x = torch.rand(4, 2, 16) * 3
    SL._LOGGED.clear()
    with caplog.at_level(logging.INFO, logger="spikeforge"):
        SpikingLinear(16, 8, sf.nn.LIF(surrogate=sf.surrogate.Triangle(1.0), detach_reset=True),
                      backward=Backward.SPARSE)(x)
        assert not any("reset detached" in r.message for r in caplog.records)
        for _ in range(2):
            SpikingLinear(16, 8, sf.nn.LIF(surrogate=sf.surrogate.Triangle(1.0)), backward=Backward.SPARSE)(x)
    assert sum("reset detached" in r.message for r in caplog.records) == 1

