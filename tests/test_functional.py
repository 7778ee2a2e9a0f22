"""The functional API: run/step/shortcuts == modules, torch.func, and fused backends == reference."""
from __future__ import annotations

import pytest
import torch
from conftest import (CUSTOM, NEURONS, SURROGATES, default_params, grads, make_input, separated_input,
                      weights_like)

import spikeforge
from spikeforge import functional as F
from spikeforge.kernels import BackendError
from spikeforge.neurons import REGISTRY, Reset
from spikeforge.nn import MODULES
from spikeforge.surrogate import ATan

pytestmark = pytest.mark.usefixtures("reference_backend")
T, B, FEAT = 11, 3, (4,)  # T > 8 and no multiple of it: several recomputed backward segments


# -- functional == module -------------------------------------------------------------
# A module builds its parameters in the default dtype (float32) like torch.nn does, so the
# comparisons below hand the module's own (float32-rounded) values to the functional form.
def test_run_and_shortcut_equal_module(neuron, surrogate):
    cls = REGISTRY[neuron]
    x = make_input(neuron, (T, B, *FEAT)).requires_grad_(True)
    m = MODULES[neuron](surrogate=surrogate, **{f"learn_{n}": True for n in cls.params}).double()
    p = type(m.params())(*(v.detach().clone().requires_grad_(True) for v in m.params()))
    z_mod = m(x)
    z_run, s_run, _, _ = F.run(cls(), x, params=p, surrogate=surrogate)
    z_fn, s_fn = getattr(F, neuron.lower())(x, surrogate=surrogate, **dict(zip(cls.params, p)))
    torch.testing.assert_close(z_run, z_mod, rtol=0, atol=0)
    torch.testing.assert_close(z_fn, z_mod, rtol=0, atol=0)
    w = weights_like([z_mod])
    g_mod = grads([z_mod], [x, *m.parameters()], w)
    for z in (z_run, z_fn):
        for a, b in zip(grads([z], [x, *p], w), g_mod):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_step_and_step_shortcut_equal_module_step(neuron, surrogate):
    cls = REGISTRY[neuron]
    x = make_input(neuron, (3, B, *FEAT))
    m = MODULES[neuron](surrogate=surrogate).double()
    p, s1, s2 = m.params(), None, None
    for x_t in x:
        z_mod = m.step(x_t)
        z1, s1 = F.step(cls(), x_t, s1, p, surrogate=surrogate)
        z2, s2 = getattr(F, neuron.lower() + "_step")(x_t, s2, surrogate=surrogate, **p._asdict())
        torch.testing.assert_close(z1, z_mod, rtol=0, atol=0)
        torch.testing.assert_close(z2, z_mod, rtol=0, atol=0)
    for a, b, c in zip(s1, s2, m.state):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
        torch.testing.assert_close(b, c, rtol=0, atol=0)


def test_every_registered_neuron_has_shortcuts_and_a_module(neuron):
    name = neuron.lower()
    for f in (name, name + "_step"):
        assert callable(getattr(F, f)) and f in F.__all__ and getattr(F, f).__doc__
    assert getattr(spikeforge.nn, neuron) is MODULES[neuron]
    assert issubclass(MODULES[neuron], spikeforge.nn.Neuron) and MODULES[neuron].spec_type is REGISTRY[neuron]


def test_shortcut_passes_options_and_params():
    x = make_input("LIF", (T, B, *FEAT))
    tau = torch.linspace(1.5, 3.0, FEAT[0], dtype=torch.float64)
    z1, s1 = F.lif(x, reset=Reset.SOFT, tau=tau, v_threshold=0.7)
    z2, s2, _, _ = F.run(spikeforge.neurons.LIF(reset=Reset.SOFT), x, params={"tau": tau, "v_threshold": 0.7})
    torch.testing.assert_close(z1, z2, rtol=0, atol=0)
    torch.testing.assert_close(s1.v, s2.v, rtol=0, atol=0)
    z3, _ = F.lif(x)
    assert not torch.equal(z1, z3)


def test_run_returns_typed_state_trace_and_backend(neuron):
    spec = REGISTRY[neuron]()
    x = make_input(neuron, (T, B, *FEAT))
    z, s, trace, name = F.run(spec, x)
    assert z.shape == x.shape and trace is None and name == "reference"
    assert type(s)._fields == spec.state and all(v.shape == (B, *FEAT) for v in s)
    _, _, trace, _ = F.run(spec, x, record=True)
    assert type(trace)._fields == spec.state and all(v.shape == (T, B, *FEAT) for v in trace)


def test_run_leaves_the_given_state_untouched(neuron):
    spec = REGISTRY[neuron]()
    x, s0 = separated_input(neuron, (T, B, *FEAT), state_noise=0.1)
    copy = [s.clone() for s in s0]
    F.run(spec, x, s0)
    F.step(spec, x[0], s0)
    assert all(torch.equal(a, b) for a, b in zip(s0, copy))


def test_make_params_and_rest_state(neuron):
    cls = REGISTRY[neuron]
    p = F.make_params(cls, dtype=torch.float64)
    assert type(p)._fields == tuple(cls.params)
    assert [v.item() for v in p] == [q.default for q in cls.params.values()]
    first = next(iter(cls.params))
    p2 = F.make_params(cls, {first: torch.full(FEAT, 0.5)}, features=FEAT)
    assert getattr(p2, first).shape == FEAT
    like = torch.zeros(B, *FEAT, dtype=torch.float64)
    s = F.rest_state(cls(), p, like)
    assert type(s)._fields == cls.state
    for v, r in zip(s, cls().rest(p)):
        assert v.shape == like.shape and torch.equal(v, torch.as_tensor(r, dtype=v.dtype).expand_as(v))


def test_positional_params_need_one_value_per_parameter():
    # a sequence of params is the spec's Params order: one value each, none dropped or defaulted
    spec = MODULES["LIF"]().spec
    x = torch.rand(4, 2, 8, dtype=torch.float64)
    full = [q.default for q in spec.params.values()]
    z, *_ = F.run(spec, x, params=tuple(full))
    assert torch.equal(z, F.run(spec, x)[0])
    for bad in (full + [99.0], full[:1]):
        with pytest.raises(ValueError, match=f"params must hold {len(full)} values"):
            F.run(spec, x, params=tuple(bad))
    with pytest.raises(TypeError, match="params must be a dict by name or a sequence"):
        F.run(spec, x, params=3.0)
    from spikeforge.nn.sparse_backward import sparse_spiking_conv2d, sparse_spiking_linear
    with pytest.raises(ValueError, match="params must hold"):
        sparse_spiking_linear(x, torch.rand(3, 8, dtype=torch.float64), None, spec, tuple(full + [99.0]))
    with pytest.raises(ValueError, match="params must hold"):
        sparse_spiking_conv2d(torch.rand(4, 2, 1, 5, 5, dtype=torch.float64), torch.rand(2, 1, 3, 3, dtype=torch.float64),
                              None, spec, tuple(full + [99.0]))


def test_validation_can_be_turned_off(no_validation):
    x = make_input("LIF", (T, B, *FEAT))
    x[2, 0, 0] = float("nan")
    z, (v,), _, _ = F.run(spikeforge.neurons.LIF(), x)  # no error: the check is off
    assert torch.isnan(v[0, 0])


# -- torch.func -----------------------------------------------------------------------
def test_torch_func_grad_equals_autograd(neuron):
    """torch.func.grad through the spike op's autograd.Function, for one step and a sequence,
    w.r.t. input, state and parameters."""
    spec = REGISTRY[neuron]()
    x, s0 = separated_input(neuron, (4, B, *FEAT), state_noise=0.05)
    p = default_params(REGISTRY[neuron], torch.float64)
    w = weights_like([x])[0]

    def one(x_t, s, p):
        z, s1 = F.step(spec, x_t, s, p, surrogate=CUSTOM)
        return (w[0] * z).sum() + sum(v.sum() for v in s1)

    def seq(x, s, p):
        z, s1, _, _ = F.run(spec, x, s, p, surrogate=CUSTOM)
        return (w * z).sum() + sum(v.sum() for v in s1)

    for f, xs in ((one, x[0]), (seq, x)):
        got = torch.func.grad(f, argnums=(0, 1, 2))(xs, s0, p)
        leaves = [xs.clone().requires_grad_(True), tuple(s.clone().requires_grad_(True) for s in s0),
                  type(p)(*(v.clone().requires_grad_(True) for v in p))]
        want = torch.autograd.grad(f(*leaves), [leaves[0], *leaves[1], *leaves[2]], allow_unused=True)
        flat = [got[0], *got[1], *got[2]]
        for a, b in zip(flat, want):
            torch.testing.assert_close(a, torch.zeros_like(a) if b is None else b, rtol=1e-12, atol=1e-14)


def test_vmap_of_grad_over_step_gives_per_sample_gradients(neuron, no_validation):
    """vmap needs the input checks off: they branch on tensor values (``set_validation``)."""
    spec, sur = REGISTRY[neuron](), ATan()
    x = make_input(neuron, (5, *FEAT))  # 5 samples, each a batch of one

    def loss(x1):
        z, s = F.step(spec, x1[None], None, None, surrogate=sur)
        return (z * torch.arange(1.0, 5.0, dtype=z.dtype)).sum() + s[0].sum()

    z_v = torch.func.vmap(lambda x1: F.step(spec, x1[None], surrogate=sur)[0][0])(x)
    torch.testing.assert_close(z_v, F.step(spec, x, surrogate=sur)[0], rtol=0, atol=0)
    per_sample = torch.func.vmap(torch.func.grad(loss))(x)
    for i in range(5):
        xi = x[i].clone().requires_grad_(True)
        (g,) = torch.autograd.grad(loss(xi), xi)
        torch.testing.assert_close(per_sample[i], g, rtol=1e-12, atol=1e-14)


# -- fused backends == reference --------------------------------------------------------
# Every neuron x every surrogate (built-in and user-supplied) x float32/float64. Each case
# traces and compiles a kernel on first use; the module fixture below compiles the CPU ones
# in parallel first.
_SUR = {type(s).__name__: s for s in SURROGATES}
FUSED_CASES = sorted(((n, s, d) for n in NEURONS for s in _SUR for d in (torch.float32, torch.float64)), key=str)


@pytest.fixture(scope="module", autouse=True)
def _prebuild_cpu_kernels():
    if spikeforge.backends()["cpu"] is None:
        from spikeforge.kernels import cpu

        cpu.prebuild([(REGISTRY[n](), _SUR[s], d, (False,) * len(REGISTRY[n].params)) for n, s, d in FUSED_CASES])


def _close(a, b, dtype, what):
    if dtype == torch.float64:
        torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-11, msg=lambda m: f"{what}: {m}")
    else:
        scale = 1.0 + b.abs().max().item()
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5 * scale, msg=lambda m: f"{what}: {m}")


def _fused_run(fused, neuron, sur, dtype):
    """Reference and fused runs (record=True) on the same leaves: (ref, out, leaves, names)."""
    device, name = fused
    why = spikeforge.backends(device, dtype)[name]
    if why:
        pytest.skip(f"{name} on {device} with {dtype}: {why}")
    spec, surrogate = REGISTRY[neuron](), _SUR[sur]
    x, s0 = separated_input(neuron, (T, B, *FEAT), dtype, min_margin=1e-3, state_noise=0.05)
    x = x.to(device).requires_grad_(True)
    s0 = tuple(s.to(device).requires_grad_(True) for s in s0)
    p = default_params(REGISTRY[neuron], dtype)
    p = type(p)(*(v.to(device).requires_grad_(True) for v in p))
    ref = F.run(spec, x, s0, p, surrogate=surrogate, backend="reference", record=True)
    try:
        out = F.run(spec, x, s0, p, surrogate=surrogate, backend=name, record=True)
    except BackendError as e:
        pytest.skip(str(e))
    assert out[3] == name
    names = ["x", *(f"state.{s}" for s in spec.state), *(f"param.{q}" for q in spec.params)]
    return ref, out, [x, *s0, *p], names


@pytest.mark.parametrize("neuron,sur,dtype", FUSED_CASES,
                         ids=[f"{n}-{s}-{str(d)[-7:]}" for n, s, d in FUSED_CASES])
def test_fused_backend_matches_reference(fused, neuron, sur, dtype):
    """Outputs, final state and trace values; gradients of outputs and final state w.r.t.
    input, initial state and every parameter."""
    ref, out, inputs, names = _fused_run(fused, neuron, sur, dtype)
    state = REGISTRY[neuron].state
    outs_ref, outs = [ref[0], *ref[1], *ref[2]], [out[0], *out[1], *out[2]]
    for a, b, what in zip(outs, outs_ref, ["z", *state, *(f"trace.{s}" for s in state)]):
        _close(a, b, dtype, what)
    outs_ref, outs = [ref[0], *ref[1]], [out[0], *out[1]]
    w = weights_like(outs_ref)
    expected = grads(outs_ref, inputs, w)
    for a, b, what in zip(grads(outs, inputs, w), expected, names):
        _close(a, b, dtype, f"grad {what}")
    # without record a backend may save less (the CPU one recomputes from checkpoints)
    spec, surrogate = REGISTRY[neuron](), _SUR[sur]
    ns = len(state)
    z, s, _, _ = F.run(spec, inputs[0], tuple(inputs[1: 1 + ns]), spec.Params(*inputs[1 + ns:]),
                       surrogate=surrogate, backend=fused[1])
    for a, b, what in zip(grads([z, *s], inputs, w), expected, names):
        _close(a, b, dtype, f"grad {what} (record=False)")


@pytest.mark.parametrize("neuron", NEURONS)
def test_fused_trace_is_differentiable_like_reference(fused, neuron):
    """A loss on recorded states (say a membrane regulariser) must get the same gradient on
    every backend; a trace cut from the graph would silently give it none."""
    ref, out, inputs, names = _fused_run(fused, neuron, "ATan", torch.float64)
    assert all(t.requires_grad for t in out[2]), "the fused backend's trace is cut from the autograd graph"
    w = weights_like(list(ref[2]))
    for a, b, what in zip(grads(list(out[2]), inputs, w), grads(list(ref[2]), inputs, w), names):
        _close(a, b, torch.float64, f"grad {what} of trace")
