"""Neurons written as equations (``spikeforge.neurons.from_equations``).

The built-in IF, LIF (hard and soft reset), CubaLIF and Izhikevich written as equations
(``equation_neurons.RECIPES``) run step by step like the built-in specs on every backend
available here (reference, the CPU kernels, Triton in its CPU interpreter): spikes, final
state, per-step states and gradients w.r.t. input, initial state and every parameter are
*bitwise* equal, because the derived step applies the same operations in the same order.
Their continuous-time faces equal the built-in ``derivative``/``threshold``/``jump``.
Malformed text, unknown names and unit mismatches raise errors naming the token and column.

The classes here are not registered (``register=False``), so the registry-driven matrix of
the other test files does not see them; ``equation_neurons.py`` says how to run that matrix
with them registered. The one test that registers a neuron removes it again.
"""
from __future__ import annotations

import dataclasses
import math
import pickle
import re
from pathlib import Path

import pytest
import torch
from conftest import FUSED, SURROGATES, SURROGATE_IDS, separated_input
from equation_neurons import RECIPES, build, builtin_name

import spikeforge as sf
from spikeforge import functional as F
from spikeforge.neurons import REGISTRY, NotExpressible, Param, from_equations
from spikeforge.neurons.equations import EquationError

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy overflow in Triton's padding lanes
EQ = {k: build(k) for k in RECIPES}
T, B, N = 12, 2, 5


def _backends():
    """reference, the CPU kernels, Triton in its CPU interpreter, and every fused backend on CUDA."""
    out = ["reference", *(n for d, n in FUSED if d == "cpu")]
    try:
        import triton  # noqa: F401
        out.append("triton-interpret")
    except ImportError:
        pass
    return out + [f"{n}-cuda" for d, n in FUSED if d == "cuda"]


@pytest.fixture(params=_backends())
def backend(request, monkeypatch):
    """(backend name, device)."""
    if request.param == "triton-interpret":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        from spikeforge.kernels import triton as tk
        monkeypatch.setattr(tk, "BLOCK", 16)
        if sf.backends()["triton"] is not None:
            pytest.skip(f"triton: {sf.backends()['triton']}")
        return "triton", "cpu"
    if request.param.endswith("-cuda"):
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
        return request.param[:-5], "cuda"
    return request.param, "cpu"


def _pair(key, **extra):
    _, options = RECIPES[key]
    return EQ[key](**extra), REGISTRY[builtin_name(key)](**options, **extra)


def _run(spec, x, s0, p, surrogate, backend):
    name, dev = backend if isinstance(backend, tuple) else (backend, "cpu")
    xb = x.detach().clone().to(dev).requires_grad_()
    sb = tuple(s.detach().clone().to(dev).requires_grad_() for s in s0)
    pb = {k: v.detach().clone().to(dev).requires_grad_() for k, v in p.items()}
    z, s, tr, used = F.run(spec, xb, sb, pb, surrogate=surrogate, backend=name, record=True)
    assert used == name
    g = torch.Generator().manual_seed(3)
    loss = sum((torch.rand(t.shape, generator=g, dtype=t.dtype).to(dev) * t).sum() for t in (z, *s))
    gr = torch.autograd.grad(loss, (xb, *sb, *pb.values()), allow_unused=True)
    return [t.detach().cpu() for t in (z, *s, *tr, *(torch.zeros(()) if t is None else t for t in gr))]


# two built-in surrogates in both dtypes, and the user-supplied one (compiled anew per session) in float64
COMBOS = [pytest.param(s, d, id=f"{i}-{n}") for s, i in zip(SURROGATES[:2], SURROGATE_IDS[:2])
          for d, n in ((torch.float32, "f32"), (torch.float64, "f64"))]
COMBOS.append(pytest.param(SURROGATES[-1], torch.float64, id=f"{SURROGATE_IDS[-1]}-f64"))


@pytest.mark.parametrize("surrogate, dtype", COMBOS)
@pytest.mark.parametrize("key", list(RECIPES))
def test_equations_equal_the_builtin_step_by_step(key, surrogate, dtype, backend):
    """Values, per-step states and gradients are bitwise equal to the built-in spec's."""
    eq, ref = _pair(key)
    x, s0 = separated_input(builtin_name(key), (T, B, N), dtype, state_noise=0.05)
    p = {k: torch.tensor(v.default, dtype=dtype) for k, v in ref.params.items()}
    assert list(eq.params) == list(ref.params) and eq.state == ref.state
    a, b = _run(eq, x, s0, p, surrogate, backend), _run(ref, x, s0, p, surrogate, backend)
    assert 0 < a[0].mean() < 1, "the input makes no (or only) spikes: the reset path is not compared"
    n_values = 1 + 2 * len(ref.state)
    for k, (u, v) in enumerate(zip(a, b)):
        if backend[1] == "cuda" and k >= n_values:   # parameter gradients may be summed in any order there
            torch.testing.assert_close(u, v, rtol=1e-5 if dtype == torch.float32 else 1e-12, atol=1e-7)
        else:
            assert torch.equal(u, v), (u - v).abs().max()


def test_detach_reset_and_dt_match_the_builtin():
    eq, ref = _pair("LIF", detach_reset=True, dt=0.5)
    x, s0 = separated_input("LIF", (T, B, N), torch.float64)
    x = 2 * x
    p = {k: torch.tensor(v.default, dtype=torch.float64) for k, v in ref.params.items()}
    a, b = (_run(s, x, s0, p, sf.surrogate.ATan(), "reference") for s in (eq, ref))
    assert 0 < a[0].mean() < 1
    for u, v in zip(a, b):
        assert torch.equal(u, v)


@pytest.mark.parametrize("key", list(RECIPES))
def test_continuous_time_form_equals_the_builtin(key):
    eq, ref = _pair(key, dt=0.25)
    g = torch.Generator().manual_seed(0)
    p = ref.Params(*(torch.tensor(v.default, dtype=torch.float64) for v in ref.params.values()))
    s = tuple(torch.randn(7, generator=g, dtype=torch.float64) for _ in ref.state)
    x = torch.randn(7, generator=g, dtype=torch.float64)
    assert eq.euler == ref.euler
    for u, v in zip(eq.derivative(x, s, p), ref.derivative(x, s, p)):
        assert torch.equal(u, v)
    assert eq.derivative(0.0, s, p) is not None           # EventProp reads it with a number as input
    for u, v in zip(eq.rest(p), ref.rest(p)):
        assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))
    if hasattr(ref, "threshold"):
        assert torch.equal(eq.threshold(s, p), ref.threshold(s, p))
        for u, v in zip(eq.jump(s, p), ref.jump(s, p)):
            assert torch.equal(torch.as_tensor(u), torch.as_tensor(v))


def test_eventprop_reads_the_equation_form():
    from spikeforge.learning._modal import modes_of
    eq, ref = _pair("CubaLIF")
    p = ref.Params(*(torch.tensor(v.default) for v in ref.params.values()))
    a, b = modes_of(eq, p, 3, None, torch.float64), modes_of(ref, p, 3, None, torch.float64)
    pairs = [(u, v) for u, v in zip(_fields(a), _fields(b), strict=True) if isinstance(v, torch.Tensor)]
    assert len(pairs) == len(_fields(b)) >= 4      # eigenvalues, modes and their inverse, input/readout maps
    for u, v in pairs:
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)
    # the decay rates of the equations' two modes: -1/tau_syn, -1/tau_mem, for each of the 3 neurons
    torch.testing.assert_close(a.lam, torch.tensor([[-1 / 5.0, -1 / 10.0]] * 3, dtype=torch.float64))


def _fields(obj):
    return [getattr(obj, f.name) for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else list(obj)


# -- registration, modules, pickling -----------------------------------------------------
def _unregister(name):
    """Remove a registered test neuron, its module class and its shortcuts (the registry is global)."""
    from spikeforge.nn import neuron as nm
    REGISTRY.pop(name, None)
    nm.MODULES.pop(name, None)
    vars(nm).pop(name, None)
    for f in (name.lower(), name.lower() + "_step"):
        vars(F).pop(f, None)
        if f in F.__all__:
            F.__all__.remove(f)


@pytest.fixture
def registered():
    """A registered equation LIF (removed again afterwards, with its module and shortcuts)."""
    kw, _ = RECIPES["LIF"]
    yield from_equations(**kw, name="EqTestLIF")
    _unregister("EqTestLIF")


def test_registered_equations_get_a_module_and_shortcuts(registered, tmp_path):
    assert REGISTRY["EqTestLIF"] is registered and registered.__module__ == __name__
    x = torch.rand(T, B, N, dtype=torch.float64) * 2
    m, ref = sf.nn.MODULES["EqTestLIF"](tau=3.0), sf.nn.LIF(tau=3.0)
    assert torch.equal(m.to(torch.float64)(x), ref.to(torch.float64)(x))
    z, _ = F.eqtestlif(x, tau=3.0)
    assert torch.equal(z, F.lif(x, tau=3.0)[0])
    torch.save(m, tmp_path / "m.pt")
    m2 = torch.load(tmp_path / "m.pt", weights_only=False)
    assert torch.equal(m2(x), m(x))
    again = from_equations(**RECIPES["LIF"][0], name="EqTestLIF")   # a re-run (a notebook cell) replaces it
    assert REGISTRY["EqTestLIF"] is again
    with pytest.raises(ValueError, match="already registered"):
        from_equations(**RECIPES["LIF"][0], name="EqTestLIF", module="elsewhere")


def test_instances_pickle_by_value(monkeypatch):
    """An instance carries its equations: it unpickles to the same class in this process, and
    where that class is unknown (a fresh process) the class is built again from them."""
    from spikeforge.neurons import equations
    spec = EQ["Izhikevich"](dt=0.5, detach_reset=True)
    data = pickle.dumps(spec)
    assert pickle.loads(data) == spec
    state = EQ["Izhikevich"].State(torch.zeros(2), torch.ones(2))
    state_data = pickle.dumps(state)
    assert type(pickle.loads(state_data)) is type(state) and torch.equal(pickle.loads(state_data).u, state.u)
    monkeypatch.setattr(equations, "_BUILT", {})       # as in a process that never built it
    again = pickle.loads(data)
    state_again = pickle.loads(state_data)
    assert type(state_again).__qualname__ == "EqIzhikevich.State" and state_again.u.sum() == 2
    assert type(again) is not type(spec) and type(again).__name__ == "EqIzhikevich"
    assert (again.dt, again.detach_reset, again.state) == (0.5, True, ("v", "u"))
    x = 10 * torch.rand(T, B, N, dtype=torch.float64)
    assert torch.equal(F.run(again, x, backend="reference")[0], F.run(spec, x, backend="reference")[0])


def test_nir_export_is_refused_by_name():
    with pytest.raises(NotExpressible, match="EqLIF: neuron: has no NIR mapping"):
        EQ["LIF"]().to_nir({}, 1.0)


@pytest.mark.parametrize("key", ["LIF", "CubaLIF"])
def test_nir_as_exports_the_builtin_node_and_reimports_exactly(key, tmp_path):
    kw, _ = RECIPES[key]
    name = f"EqNir{key}"
    from_equations(**kw, name=name, nir_as=REGISTRY[key])
    try:
        torch.manual_seed(0)
        net = torch.nn.Sequential(torch.nn.Linear(5, 6), sf.nn.MODULES[name](dt=0.5))
        with torch.no_grad():
            net[0].weight.mul_(4.0)
            net[0].bias.add_(1.5)
        x = torch.rand(2 * T, B, 5) * 2
        sf.nir.save(net, tmp_path / "m.nir", dt=0.5)
        loaded = sf.nir.load(tmp_path / "m.nir")
        assert type(loaded[1].spec).__name__ == key          # a NIR node imports as the built-in
        sf.reset(net)
        with torch.no_grad():
            want = net(x)
            assert 0 < want.mean() < 1
            assert torch.equal(loaded(x), want)
    finally:
        _unregister(name)


@pytest.mark.parametrize("key, like, msg", [
    ("LIF-soft", "LIF", r"nir_as=LIF: these equations are not LIF's dynamics \(step differs"),
    ("CubaLIF", "LIF", r"nir_as=LIF needs the state \('v',\)"),
    ("Izhikevich", "Izhikevich", r"nir_as must be a NeuronSpec class with a NIR mapping"),
])
def test_nir_as_checks_the_dynamics(key, like, msg):
    with pytest.raises((ValueError, TypeError), match=msg):
        from_equations(**RECIPES[key][0], name="EqNirBad", nir_as=REGISTRY[like], register=False)


def test_non_spiking_equations_output_the_named_state():
    CubaLI = from_equations("di/dt = (I - i) / tau_syn\ndv/dt = (v_leak - v + r*i) / tau_mem",
                            params={"tau_syn": 5.0, "tau_mem": 10.0, "v_leak": 0.0, "r": 1.0},
                            euler="sequential", output="v", name="EqCubaLI", register=False)
    assert not CubaLI.spiking and "detach_reset" not in CubaLI.options()
    x = torch.rand(T, B, N, dtype=torch.float64)
    for b in _backends()[:2]:
        a, r = F.run(CubaLI(), x, backend=b), F.run(sf.neurons.CubaLI(), x, backend=b)
        assert torch.equal(a[0], r[0]) and torch.equal(a[1].i, r[1].i)


def test_functions_run_on_the_fused_backend():
    Bounded = from_equations("dv/dt = (clamp(I, -1, 1) + 0.1*exp(min(v, 2)) - max(v, 0)*abs(v)) / tau",
                             threshold="v > 1", reset="v = 0", params={"tau": 2.0}, name="EqFns", register=False)
    x = torch.randn(T, B, N, dtype=torch.float64)
    outs = [F.run(Bounded(), x, backend=b) for b in _backends()[:2]]
    for u, v in zip(outs[0][:2], outs[-1][:2]):
        torch.testing.assert_close(u, v, rtol=1e-12, atol=1e-12)


# -- units -------------------------------------------------------------------------------
LIF_UNITS = {"tau": (10.0, "ms"), "v_leak": (-65.0, "mV"), "r": (10.0, "MOhm"), "v_th": (-50.0, "mV"),
             "v_reset": (-70.0, "mV")}


def _lif(eq="dv/dt = (v_leak - v + r*I) / tau", params=LIF_UNITS, **kw):
    kw = {"threshold": "v > v_th", "reset": "v = v_reset", "units": {"I": "nA"}, **kw}
    return from_equations(eq, params=params, name="EqUnits", register=False, **kw)


def test_the_input_can_have_another_name():
    Named = from_equations("dv/dt = (v_leak - v + r*x) / tau", input="x", params=dict(LIF_UNITS),
                           threshold="v > v_th", reset="v = v_reset", name="EqX", register=False)
    p = Named.Params(*(torch.tensor(v.default, dtype=torch.float64) for v in Named.params.values()))
    s = (torch.full((3,), -65.0, dtype=torch.float64),)
    assert torch.equal(Named().derivative(torch.ones(3, dtype=torch.float64), s, p)[0], torch.ones(3) * 1.0)
    with pytest.raises(EquationError, match=r"unknown name 'I' at column 25"):
        from_equations("dv/dt = (v_leak - v + r*I) / tau", input="x", params=dict(LIF_UNITS), name="EqX",
                       register=False)


def test_consistent_units_are_accepted():
    assert _lif().params["tau"] == Param(10.0, "ms")
    _lif("dv/dt = (v_leak - v)/tau + I/c", params={**LIF_UNITS, "c": (1.0, "nF")}, units={"I": "nA", "t": "ms"})
    _lif(units={"I": "nA", "v": "mV"})


@pytest.mark.parametrize("eq, params, units, msg", [
    ("dv/dt = (v_leak - v + r*I) / tau", {**LIF_UNITS, "v_leak": (0.0, "V")}, {"I": "nA"},
     r"units do not match \(V - mV\) in 'v_leak - v' at column 10"),
    ("dv/dt = (v_leak - v + r*I) / tau", LIF_UNITS, {"I": "uA"}, r"units do not match .* 'v_leak - v \+ r\*I'"),
    ("dv/dt = (v_leak - v + r*I) / tau", LIF_UNITS, {"I": "nA", "t": "s"}, r"dv/dt needs"),
    ("dv/dt = (v_leak - v + r*I)", LIF_UNITS, {"I": "nA"}, r"dv/dt needs potential/time, the expression has mV"),
    ("dv/dt = (v_leak - v + r*I) / tau + exp(v)", LIF_UNITS, {"I": "nA"}, r"exp needs a dimensionless argument"),
    ("dv/dt = (v_leak - v + r*I) / tau", {**LIF_UNITS, "tau2": (1.0, "s")}, {"I": "nA"},
     r"time parameters have different units"),
    ("dv/dt = (v_leak - v + r*I) / tau", {**LIF_UNITS, "r": (1.0, "Ohmz")}, {"I": "nA"},
     r"cannot read the unit 'Ohmz' of parameter 'r' \(unknown unit 'Ohmz'\)"),
    ("dv/dt = (v_leak - v + r*I) / tau + sqrt(v)/tau", LIF_UNITS, {"I": "nA"},
     r"sqrt of mV has no unit, in 'sqrt\(v\)' at column 36"),
    ("dv/dt = (max(v_leak, tau) - v + r*I) / tau", LIF_UNITS, {"I": "nA"},
     r"the arguments of max have different units \(mV, ms\)"),
    ("dv/dt = (v_leak - v + r*I) / tau * 2**v", LIF_UNITS, {"I": "nA"}, r"an exponent must be dimensionless"),
])
def test_unit_mismatches_are_named(eq, params, units, msg):
    with pytest.raises(ValueError, match=msg):
        _lif(eq, params=params, units=units)


# -- malformed equations -----------------------------------------------------------------
P = {"tau": 2.0, "v_th": 1.0}


@pytest.mark.parametrize("eq, kw, msg", [
    ("dv/dt = (v - I)/tua", {}, r"unknown name 'tua' at column 17 in 'dv/dt = \(v - I\)/tua'; known: v \(state"),
    ("dv/dt = (v - I)/tau +", {}, r"cannot read .* at column \d+ in 'dv/dt = \(v - I\)/tau \+'"),
    ("dv/dt = v if v else I", {}, r"unsupported syntax \(IfExp.*'v if v else I' at column 9"),
    ("dv/dt = torch.exp(v)", {}, r"unknown function .*'torch.exp' at column 9"),
    ("dv/dt = expo(v)", {}, r"unknown function \(known: exp, log.*'expo' at column 9"),
    ("dv/dt = exp(v, I)", {}, r"exp takes 1 positional argument"),
    ("dv/dt = -v/tau\ndv/dt = I", {}, r"state variable 'v' has two equations"),
    ("v' = -v/tau", {}, r"expected 'd<state>/dt = <expression>'"),
    ("", {}, r"no equation given"),
    ("dv/dt = (I - v)/tau", {"reset": "w = 0"}, r"reset assigns 'w', which is not a state variable"),
    ("dv/dt = (I - v)/tau", {"reset": "v == 0"}, r"expected '<state> = <expr>'"),
    ("dv/dt = (I - v)/tau", {"threshold": "v > I", "reset": "v = 0"}, r"cannot read the input 'I'"),
    ("dv/dt = (I - v)/tau", {"threshold": "v"}, r"threshold must be one comparison"),
    ("dv/dt = (I - v)/tau", {"threshold": "v > 1", "reset": "v = v_rst"}, r"unknown name 'v_rst' at column 5"),
    ("dtau/dt = I", {}, r"'tau' is both a state variable and a parameter"),
    ("ddt/dt = I", {"params": {}}, r"reserved name"),
    ("dv/dt = (I - v)/tau", {"euler": "implicit"}, r"euler must be one of"),
    ("dv/dt = (I - v)/tau", {"dt": 0}, r"dt must be a finite number > 0"),
    ("dv/dt = (I - v)/tau", {"name": "lowercase"}, r"name must be a Python identifier starting with a capital"),
    ("dv/dt = (I - v)/tau", {"params": {"tau": "2"}}, r"parameter 'tau' must be a number"),
    ("dv/dt = (I - v)/tau", {"params": {"tau": float("nan")}}, r"parameter 'tau' must be a finite number"),
    ("dv/dt = (I - v)/tau", {"params": {**P, "v_th": (math.inf, "mV")}}, r"'v_th' must be a finite number"),
    ("dv/dt = (I - v)/tau", {"units": "mV"}, r"units must be a dict"),
    ("dv/dt = (I - v)/tau\ndw/dt = -w", {"threshold": None, "reset": None}, r"name it with output="),
])
def test_malformed_equations_name_the_token(eq, kw, msg):
    kw = {"threshold": "v > v_th", "reset": "v = 0", "params": P, "name": "EqBad", **kw}
    with pytest.raises((EquationError, ValueError, TypeError), match=msg):
        from_equations(eq, register=False, **kw)


def test_register_must_be_a_bool():
    with pytest.raises(TypeError, match="register must be True or False, got 'no'"):
        from_equations("dv/dt = (I - v)/tau", params=P, name="EqRegister", register="no")
    assert "EqRegister" not in REGISTRY


def test_docs_examples_run():
    """The python blocks of docs/equations.md, in order, in one namespace."""
    text = (Path(__file__).resolve().parents[1] / "docs" / "equations.md").read_text()
    blocks = re.findall(r"^```python\n(.*?)^```", text, re.M | re.S)
    assert len(blocks) == 2
    ns = {"__name__": "docs_equations"}
    try:
        for b in blocks:
            exec(compile(b, "docs/equations.md", "exec"), ns)
    finally:
        for name in ("EqLIF", "EqIzhikevich"):
            if getattr(REGISTRY.get(name), "__module__", None) == "docs_equations":
                _unregister(name)
    assert ns["z"].shape == (200, 1, 4) and ns["z"].any()
