"""Neuron dynamics over time: sequence == step loop, gradients, parameters, state semantics."""
from __future__ import annotations

import pytest
import torch
from conftest import (CUSTOM, FUSED, default_params, grads, loop, make_input, rest, separated_input,
                      straight_through_fire, tol, weights_like)
from torch import nn

import spikeforge
from spikeforge import functional as F
from spikeforge.kernels import NAMES
from spikeforge.neurons import REGISTRY, Reset
from spikeforge.nn import MODULES
from spikeforge.surrogate import ATan, Custom

pytestmark = pytest.mark.usefixtures("reference_backend")
T, B, FEAT = 8, 3, (4,)


def leaves(name, dtype, state_noise=0.05, min_margin=1e-3, shape=(T, B, *FEAT)):
    """Input, initial state (near rest) and default parameters, all as grad-requiring leaves."""
    x, s0 = separated_input(name, shape, dtype, min_margin=min_margin, state_noise=state_noise)
    p = default_params(REGISTRY[name], dtype, requires_grad=True)
    return x.requires_grad_(True), tuple(s.clone().requires_grad_(True) for s in s0), p


def assert_spikes_some(name, z):
    """A comparison is only meaningful if the spiking path ran both ways."""
    if REGISTRY[name].spiking:
        assert 0.0 < z.mean().item() < 1.0, f"{name}: the test input makes no (or only) spikes"


# -- sequence == step loop (values and gradients) ------------------------------------
# The sequence call runs on the reference scan and on every fused backend that takes CPU
# tensors; the step loop is the spec's eager step.
SEQ_BACKENDS = ["reference", *(n for d, n in FUSED if d == "cpu")]


@pytest.mark.parametrize("backend", SEQ_BACKENDS)
@pytest.mark.parametrize("dtype", [torch.float64], ids=["f64"])
def test_run_equals_step_loop(neuron, surrogate, dtype, backend):
    spec = REGISTRY[neuron]()
    x, s0, p = leaves(neuron, dtype)
    z1, s1, _, used = F.run(spec, x, s0, p, surrogate=surrogate, backend=backend)
    assert used == backend
    s, zs = s0, []
    for x_t in x:
        z, s = F.step(spec, x_t, s, p, surrogate=surrogate)
        zs.append(z)
    z2 = torch.stack(zs)
    assert_spikes_some(neuron, z1)
    torch.testing.assert_close(z1, z2, **tol(dtype))
    for a, b in zip(s1, s):
        torch.testing.assert_close(a, b, **tol(dtype))
    inputs, w = [x, *s0, *p], weights_like([z1, *s1])
    for ga, gb in zip(grads([z1, *s1], inputs, w), grads([z2, *s], inputs, w)):
        torch.testing.assert_close(ga, gb, **tol(dtype))


@pytest.mark.parametrize("backend", SEQ_BACKENDS)
def test_run_equals_step_loop_float32(neuron, backend):
    test_run_equals_step_loop(neuron, CUSTOM, torch.float32, backend)


@pytest.mark.parametrize("backend", SEQ_BACKENDS)
def test_module_sequence_equals_module_step_loop(neuron, surrogate, backend):
    dtype = torch.float64
    cls = REGISTRY[neuron]
    learn = {f"learn_{n}": True for n in cls.params}
    x, s0, _ = leaves(neuron, dtype)
    m_seq = MODULES[neuron](surrogate=surrogate, carry_state=True, backend=backend, **learn).to(dtype)
    m_step = MODULES[neuron](surrogate=surrogate, backend=backend, **learn).to(dtype)
    m_seq.state, m_step.state = s0, s0
    z1 = m_seq(x)
    assert m_seq.last_backend == backend
    z2 = torch.stack([m_step.step(x_t) for x_t in x])
    torch.testing.assert_close(z1, z2, **tol(dtype))
    outs1, outs2 = [z1, *m_seq.state], [z2, *m_step.state]
    w = weights_like(outs1)
    g1 = grads(outs1, [x, *s0, *m_seq.parameters()], w)
    g2 = grads(outs2, [x, *s0, *m_step.parameters()], w)
    for a, b in zip(g1, g2):
        torch.testing.assert_close(a, b, **tol(dtype))


# -- gradients against independent computations --------------------------------------
def test_scan_gradient_equals_straight_through_twin(neuron, surrogate):
    """The library's spike op against ``conftest.straight_through_fire``: same Heaviside forward,
    backward from autograd of the surrogate's primitive written independently in the tests.
    Covers every path through ``z`` (output, reset, adaptation) for every neuron."""
    spec = REGISTRY[neuron]()
    x, s0, p = leaves(neuron, torch.float64)
    z1, s1, _, _ = F.run(spec, x, s0, p, surrogate=surrogate)
    z2, s2, _ = loop(spec, x, s0, p, straight_through_fire(surrogate))
    assert torch.equal(z1, z2)
    inputs, w = [x, *s0, *p], weights_like([z1, *s1])
    for a, b in zip(grads([z1, *s1], inputs, w), grads([z2, *s2], inputs, w)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


ZERO = Custom(lambda x, a: torch.zeros_like(x))


def test_gradcheck_with_spike_pattern_frozen(neuron):
    """gradcheck's finite differences see a spike train as piecewise constant, so with a zero
    surrogate autograd must agree with them exactly, provided no membrane is within the
    perturbation of threshold (``separated_input`` guarantees a margin). This checks every
    sub-threshold path, the resets' dependence on the membrane and on v_reset/v_threshold,
    and all parameter and initial-state gradients; for non-spiking neurons (LI) it is a plain
    full gradcheck."""
    spec = REGISTRY[neuron]()
    x, s0, p = leaves(neuron, torch.float64, min_margin=1e-2, shape=(5, 2, 2))
    n_s = len(s0)

    def f(x, *rest):
        s, params = rest[:n_s], spec.Params(*rest[n_s:])
        z, s1, _, _ = F.run(spec, x, s, params, surrogate=ZERO)
        return (z, *s1)

    assert torch.autograd.gradcheck(f, (x, *s0, *p), eps=1e-6, atol=1e-6, rtol=1e-5)


def _lif_adjoint(x, v0, tau, vth, vr, spec, sur, wz, wv):
    """Reverse-mode gradient of sum(wz*z) + sum(wv*v_T) for LIF, derived by hand.
    Returns dL/dx, dL/dv0, dL/dtau, dL/dv_threshold."""
    dt, k = spec.dt, spec.dt / tau
    hs, zs, vs, v = [], [], [], v0
    for x_t in x:  # forward, keeping h_t, z_t and v_{t-1}
        drive = x_t if spec.decay_input else x_t / k
        h = v + k * (0.0 - v + drive)
        z = (h >= vth).double()
        vs.append(v)
        hs.append(h)
        zs.append(z)
        v = {Reset.HARD: h * (1 - z) + vr * z, Reset.SOFT: h - vth * z, Reset.NONE: h}[spec.reset]
    a_v, gx, gtau, gth = wv, [], 0.0, 0.0
    for t in reversed(range(len(hs))):
        h, z, v_prev = hs[t], zs[t], vs[t]
        dv_dh = {Reset.HARD: 1 - z, Reset.SOFT: torch.ones_like(z), Reset.NONE: torch.ones_like(z)}[spec.reset]
        dv_dz = {Reset.HARD: vr - h, Reset.SOFT: -vth + 0 * h, Reset.NONE: 0 * h}[spec.reset]
        if spec.detach_reset:
            dv_dz = 0 * h
        g = sur.grad(h - vth)
        d_z = wz[t] + a_v * dv_dz
        d_h = a_v * dv_dh + d_z * g
        gth = gth - (d_z * g).sum() - ((a_v * z).sum() if spec.reset is Reset.SOFT else 0.0)
        gx.append(d_h * (k if spec.decay_input else 1.0))
        leak = (0.0 - v_prev + x[t]) if spec.decay_input else (0.0 - v_prev)
        gtau = gtau + (d_h * leak).sum() * (-dt / tau**2)
        a_v = d_h * (1 - k)
    return torch.stack(gx[::-1]), a_v, gtau, gth


@pytest.mark.parametrize("decay_input", [True, False], ids=["decay_input", "direct_input"])
@pytest.mark.parametrize("detach", [False, True], ids=["attached", "detached"])
@pytest.mark.parametrize("reset", list(Reset), ids=[r.name for r in Reset])
def test_lif_gradient_equals_hand_derived_bptt(reset, detach, decay_input):
    spec = spikeforge.neurons.LIF(reset=reset, detach_reset=detach, decay_input=decay_input, dt=0.5)
    sur = ATan()
    x = make_input("LIF", (10, 3, 4), seed=3).requires_grad_(True)
    v0 = (0.1 * make_input("LIF", (3, 4), seed=4)).requires_grad_(True)
    tau = torch.tensor(1.5, dtype=torch.float64, requires_grad=True)
    vth = torch.tensor(0.8, dtype=torch.float64, requires_grad=True)
    vr = torch.tensor(-0.1, dtype=torch.float64)
    params = dict(tau=tau, v_threshold=vth, v_reset=vr, v_leak=0.0, r=1.0)
    z, (v,), _, _ = F.run(spec, x, (v0,), params, surrogate=sur)
    assert 0 < z.mean() < 1
    wz, wv = weights_like([z, v])
    got = torch.autograd.grad((wz * z).sum() + (wv * v).sum(), (x, v0, tau, vth))
    want = _lif_adjoint(x.detach(), v0.detach(), 1.5, 0.8, -0.1, spec, sur, wz, wv)
    for g, h in zip(got, want):
        torch.testing.assert_close(g, torch.as_tensor(h, dtype=torch.float64), rtol=1e-9, atol=1e-12)


# -- parameters -----------------------------------------------------------------------
def _spread(default, n, dtype=torch.float64):
    """n distinct values around a default, keeping its sign (time constants stay > 0)."""
    u = torch.linspace(-1.0, 1.0, n, dtype=dtype)
    return default * (1 + 0.1 * u) if default != 0 else 0.05 * u


def test_per_neuron_params_act_per_neuron(neuron):
    cls = REGISTRY[neuron]
    x = make_input(neuron, (T, B, 5))
    # float32-representable, so the module (built in the default dtype) holds the same values
    values = {n: _spread(p.default, 5).float().double() for n, p in cls.params.items()}
    z, s, _, _ = F.run(cls(), x, params=values)
    for j in range(5):
        zj, sj, _, _ = F.run(cls(), x[..., j:j + 1], params={n: v[j].item() for n, v in values.items()})
        torch.testing.assert_close(z[..., j:j + 1], zj, rtol=1e-12, atol=1e-12)
        for a, b in zip(s, sj):
            torch.testing.assert_close(a[..., j:j + 1], b, rtol=1e-12, atol=1e-12)
    m = MODULES[neuron](**values).double()
    assert all(getattr(m, n).shape == (5,) for n in cls.params)
    torch.testing.assert_close(m(x), z, rtol=0, atol=0)


@pytest.mark.parametrize("pshape", [(1,), (4,), (3, 1), (3, 4)], ids=lambda s: "x".join(map(str, s)))
def test_broadcast_params_equal_expanded(neuron, pshape):
    cls = REGISTRY[neuron]
    x = make_input(neuron, (T, B, 3, 4))
    n = int(torch.tensor(pshape).prod())
    small = {k: _spread(p.default, n).reshape(pshape) for k, p in cls.params.items()}
    full = {k: v.expand(3, 4).contiguous() for k, v in small.items()}
    z1, s1, _, _ = F.run(cls(), x, params=small)
    z2, s2, _, _ = F.run(cls(), x, params=full)
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    for a, b in zip(s1, s2):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_learnable_flags_choose_parameters_and_buffers(neuron):
    cls = REGISTRY[neuron]
    default = {n for n, p in cls.params.items() if p.learnable}
    assert {n for n, _ in MODULES[neuron]().named_parameters()} == default
    assert {n for n, _ in MODULES[neuron]().named_buffers()} == set(cls.params) - default
    every = MODULES[neuron](**{f"learn_{n}": True for n in cls.params})
    assert {n for n, _ in every.named_parameters()} == set(cls.params)
    none = MODULES[neuron](**{f"learn_{n}": False for n in cls.params})
    assert list(none.parameters()) == []


def _matters(spec, x, name):
    """Whether nudging parameter ``name`` changes the forward pass at all (ALIF's v_reset,
    for one, is unused under its default soft reset)."""
    p = spec.params[name].default
    a = F.run(spec, x)
    b = F.run(spec, x, params={name: p + 0.1 * (abs(p) or 1.0)})
    return any(not torch.equal(u, v) for u, v in zip((a[0], *a[1]), (b[0], *b[1])))


def test_learnable_params_get_nonzero_gradients(neuron):
    cls = REGISTRY[neuron]
    m = MODULES[neuron](carry_state=True, **{f"learn_{n}": True for n in cls.params}).double()
    x = make_input(neuron, (12, B, *FEAT))
    z = m(x)
    assert_spikes_some(neuron, z)
    outs = [z, *m.state]
    loss = sum((w * o).sum() for w, o in zip(weights_like(outs), outs))
    loss.backward()
    for n, prm in m.named_parameters():
        if prm.grad is not None:
            assert torch.isfinite(prm.grad).all(), n
        if _matters(m.spec, x, n):
            assert prm.grad is not None and prm.grad.abs().sum() > 0, f"{neuron}.{n} got a zero gradient"


def test_plif_tau_is_learnable_by_default_and_lif_on_request():
    assert isinstance(spikeforge.nn.PLIF().tau, nn.Parameter)
    assert not isinstance(spikeforge.nn.LIF().tau, nn.Parameter)
    assert not isinstance(spikeforge.nn.PLIF(learn_tau=False).tau, nn.Parameter)
    x = make_input("LIF", (T, B, *FEAT), dtype=torch.float32)
    for m in (spikeforge.nn.PLIF(tau=torch.full(FEAT, 3.0)), spikeforge.nn.LIF(learn_tau=True)):
        m(x).sum().backward()
        assert m.tau.grad is not None and m.tau.grad.shape == m.tau.shape and m.tau.grad.abs().sum() > 0


# -- state semantics ------------------------------------------------------------------
def test_each_call_starts_from_rest(neuron):
    m = MODULES[neuron]().double()
    x = make_input(neuron, (T, B, *FEAT))
    z1, z2 = m(x), m(x)
    assert torch.equal(z1, z2) and m.state is None
    z_ref, _, _ = loop(m.spec, x, rest(m.spec, m.params(), x.shape[1:], x.dtype), m.params(),
                       lambda u: (u >= 0).to(u.dtype))
    torch.testing.assert_close(z1, z_ref, rtol=1e-12, atol=1e-12)


def test_carry_state_continues_across_calls(neuron):
    x = make_input(neuron, (T, B, *FEAT))
    whole = MODULES[neuron]().double()(x)
    m = MODULES[neuron](carry_state=True).double()
    parts = torch.cat([m(x[:3]), m(x[3:5]), m(x[5:])])
    torch.testing.assert_close(parts, whole, rtol=1e-12, atol=1e-12)
    _, s, _, _ = F.run(m.spec, x, params=m.params())
    for a, b in zip(m.state, s):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    resting = rest(m.spec, m.params(), x.shape[1:], x.dtype)
    assert any(not torch.equal(a, b) for a, b in zip(m.state, resting))  # so the next call differs
    m.reset()
    torch.testing.assert_close(m(x), whole, rtol=0, atol=0)


def test_step_carries_state(neuron):
    x = make_input(neuron, (T, B, *FEAT))
    m = MODULES[neuron]().double()
    z = torch.stack([m.step(x_t) for x_t in x])
    torch.testing.assert_close(z, MODULES[neuron]().double()(x), rtol=1e-12, atol=1e-12)
    assert type(m.state)._fields == REGISTRY[neuron].state
    m.detach_state()
    assert not any(s.requires_grad for s in m.state)


def test_reset_returns_every_layer_to_rest():
    layers = [MODULES[n](carry_state=True, record=True) for n in sorted(MODULES)]
    net = nn.Sequential(nn.Linear(4, 4), *layers).double()
    torch.manual_seed(0)
    x = 2 * torch.rand(T, B, 4, dtype=torch.float64)
    first = net(x)
    assert all(m.state is not None and m.trace is not None for m in layers)
    net(x)
    spikeforge.reset(net)
    assert all(m.state is None and m.trace is None for m in layers)
    torch.testing.assert_close(net(x), first, rtol=0, atol=0)


def test_record_fills_trace_with_per_step_states(neuron, surrogate):
    cls = REGISTRY[neuron]
    x, s0, _ = leaves(neuron, torch.float64)
    m = MODULES[neuron](record=True, carry_state=True, surrogate=surrogate).double()
    m.state = s0
    z = m(x)
    assert type(m.trace)._fields == cls.state
    _, _, want = loop(m.spec, x, s0, m.params(), lambda u: (u >= 0).to(u.dtype))
    for name, got, w, last in zip(cls.state, m.trace, want, m.state):
        assert got.shape == (T, B, *FEAT), name
        torch.testing.assert_close(got, w, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(got[-1], last, rtol=0, atol=0)
    assert z.shape == (T, B, *FEAT)
    plain = MODULES[neuron]()
    plain(x.detach().float())
    assert plain.trace is None


def test_record_is_differentiable(neuron):
    x, s0, p = leaves(neuron, torch.float64)
    spec = REGISTRY[neuron]()
    _, _, trace, _ = F.run(spec, x, s0, p, record=True, surrogate=CUSTOM)
    _, _, want = loop(spec, x, s0, p, straight_through_fire(CUSTOM))
    w = weights_like(list(trace))
    for a, b in zip(grads(list(trace), [x, *s0, *p], w), grads(want, [x, *s0, *p], w)):
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-12)


def test_last_backend_names_the_backend(neuron):
    x = make_input(neuron, (T, B, *FEAT), dtype=torch.float32)
    m = MODULES[neuron]()
    assert m.last_backend is None
    m(x)
    assert m.last_backend in NAMES
    forced = MODULES[neuron](backend="reference")
    forced(x)
    assert forced.last_backend == "reference"
    assert F.run(m.spec, x, backend="reference")[3] == "reference"


def test_module_follows_dtype(neuron, dtype):
    m = MODULES[neuron]().to(dtype)
    x = make_input(neuron, (T, B, *FEAT), dtype=dtype)
    z = m(x)
    assert z.dtype == dtype and all(getattr(m, n).dtype == dtype for n in REGISTRY[neuron].params)
    assert m.step(x[0]).dtype == dtype and all(s.dtype == dtype for s in m.state)


def test_options_change_the_dynamics():
    """Reset modes and decay_input, written out for one LIF step (tau=2, dt=1, threshold 1)."""
    x = torch.tensor([[[3.0, 1.0]]])  # one step, one sample, two neurons: h = 1.5 and 0.5
    for reset, v_after in [(Reset.HARD, [0.0, 0.5]), (Reset.SOFT, [0.5, 0.5]), (Reset.NONE, [1.5, 0.5])]:
        z, (v,) = F.lif(x, reset=reset)
        assert z.flatten().tolist() == [1.0, 0.0] and v.flatten().tolist() == v_after
    z, (v,) = F.lif(x, decay_input=False, reset=Reset.NONE)  # h = v + dt/tau (0 - v) + x
    assert v.flatten().tolist() == [3.0, 1.0]
    z, (v,) = F.lif(x, dt=0.5, reset=Reset.NONE)
    assert v.flatten().tolist() == [0.75, 0.25]
