"""Bad input is refused with ValueError/TypeError whose message names the culprit."""
from __future__ import annotations

import dataclasses
import enum
import re

import pytest
import torch
from conftest import NEURONS, SURROGATE_IDS, SURROGATES, make_input

import spikeforge
from spikeforge import functional as F
from spikeforge.kernels import BackendError
from spikeforge.neurons import REGISTRY, NeuronSpec, Param, Reset, register_neuron
from spikeforge.nn import MODULES
from spikeforge.surrogate import Custom, spike

pytestmark = pytest.mark.usefixtures("reference_backend")
T, B, FEAT = 4, 2, (3,)
PARAMS = [(n, q) for n in NEURONS for q in REGISTRY[n].params]
TIME_CONSTANTS = [(n, q) for n, q in PARAMS if REGISTRY[n].params[q].positive]
OPTIONS = [(n, f.name, f.default) for n in NEURONS for f in dataclasses.fields(REGISTRY[n])]


def named(word):
    """``match=`` pattern: ``word`` as a whole word in the message."""
    return rf"(?<![\w.]){re.escape(word)}\b"


def calls(name):
    """Every public way to run neuron ``name`` on a sequence, as ``f(x, **kw)``."""
    spec_cls, short = REGISTRY[name], getattr(F, name.lower())
    return {
        "module": lambda x, **kw: MODULES[name](**kw)(x),
        "run": lambda x, **kw: F.run(spec_cls(), x, params=kw),
        "shortcut": lambda x, **kw: short(x, **kw),
    }


def step_calls(name):
    spec_cls, short = REGISTRY[name], getattr(F, name.lower() + "_step")
    return {
        "module.step": lambda x: MODULES[name]().step(x),
        "step": lambda x: F.step(spec_cls(), x),
        "shortcut_step": lambda x: short(x),
    }


# -- the input -------------------------------------------------------------------------
@pytest.mark.parametrize("how", ["module", "run", "shortcut"])
def test_sequence_of_wrong_rank(neuron, how):
    with pytest.raises(ValueError, match=named("x") + r".*\(T, B, \.\.\.\)"):
        calls(neuron)[how](torch.ones(5))


@pytest.mark.parametrize("how", ["module.step", "step", "shortcut_step"])
def test_step_of_wrong_rank(neuron, how):
    with pytest.raises(ValueError, match=named("x") + r".*\(B, \.\.\.\)"):
        step_calls(neuron)[how](torch.tensor(1.0))


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.bool, torch.uint8])
@pytest.mark.parametrize("how", ["module", "run", "shortcut"])
def test_integer_input(neuron, how, dtype):
    with pytest.raises(TypeError, match=named("x") + ".*floating dtype"):
        calls(neuron)[how](torch.ones(T, B, *FEAT, dtype=dtype))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("how", ["module", "run", "shortcut"])
def test_nonfinite_input(neuron, how, bad):
    x = make_input(neuron, (T, B, *FEAT))
    x[1, 0, 2] = bad
    with pytest.raises(ValueError, match=named("x") + ".*NaN or inf"):
        calls(neuron)[how](x)
    with pytest.raises(ValueError, match=named("x")):
        step_calls(neuron)["step"](x[1])


@pytest.mark.parametrize("bad", [[1.0, 2.0], None, "x"], ids=["list", "None", "str"])
def test_input_not_a_tensor(bad):
    with pytest.raises(TypeError, match=named("x") + ".*torch.Tensor"):
        F.lif(bad)
    with pytest.raises(TypeError, match=named("x")):
        F.lif_step(bad)


# -- parameters ------------------------------------------------------------------------
@pytest.mark.parametrize("neuron,param", PARAMS, ids=[f"{n}.{q}" for n, q in PARAMS])
def test_param_shape_that_does_not_broadcast(neuron, param):
    x = make_input(neuron, (T, B, *FEAT), dtype=torch.float32)
    for bad in (torch.ones(FEAT[0] + 1), torch.ones(2, *FEAT), torch.ones(B, *FEAT)):
        for f in calls(neuron).values():
            with pytest.raises(ValueError, match=named(param) + ".*does not broadcast"):
                f(x, **{param: bad})


@pytest.mark.parametrize("bad", [0.0, -1.0, -1e-9], ids=["zero", "negative", "tiny-negative"])
@pytest.mark.parametrize("neuron,param", TIME_CONSTANTS, ids=[f"{n}.{q}" for n, q in TIME_CONSTANTS])
def test_nonpositive_time_constant(neuron, param, bad):
    x = make_input(neuron, (T, B, *FEAT), dtype=torch.float32)
    per_neuron = torch.tensor([2.0, bad, 3.0])
    for value in (bad, per_neuron):
        with pytest.raises(ValueError, match=named(param) + " must be > 0"):
            MODULES[neuron](**{param: value})  # refused when the module is built
        for how in ("run", "shortcut"):
            with pytest.raises(ValueError, match=named(param) + " must be > 0"):
                calls(neuron)[how](x, **{param: value})


def test_some_neuron_has_a_time_constant():
    assert TIME_CONSTANTS, "no registered neuron declares a positive (time-constant) parameter"


@pytest.mark.parametrize("bad", [float("nan"), float("inf")], ids=["nan", "inf"])
@pytest.mark.parametrize("neuron,param", PARAMS, ids=[f"{n}.{q}" for n, q in PARAMS])
def test_nonfinite_param(neuron, param, bad):
    with pytest.raises(ValueError, match=named(param) + " must be finite"):
        MODULES[neuron](**{param: bad})


def test_integer_tensor_param_is_refused_by_make_params():
    with pytest.raises(TypeError, match=named("tau") + ".*floating"):
        F.make_params(spikeforge.neurons.LIF, {"tau": torch.tensor([2, 3])})


# -- options and keywords ----------------------------------------------------------------
@pytest.mark.parametrize("neuron", sorted({n for n, o, _ in OPTIONS if o == "reset"}))
@pytest.mark.parametrize("text", ["soft", "SOFT", "hard", "none"])
def test_reset_given_as_its_value(neuron, text):
    """``reset="soft"`` means ``Reset.SOFT`` (as in configs); the spec holds the Enum member."""
    want = Reset(text.lower())
    assert MODULES[neuron](reset=text).spec.reset is want
    assert REGISTRY[neuron](reset=text) == REGISTRY[neuron](reset=want)


@pytest.mark.parametrize("neuron,option,default", OPTIONS, ids=[f"{n}.{o}" for n, o, _ in OPTIONS])
def test_option_of_wrong_type(neuron, option, default):
    bad = "sideways" if isinstance(default, enum.Enum) else {bool: 1, float: "1.0"}[type(default)]
    for build in (lambda: MODULES[neuron](**{option: bad}), lambda: REGISTRY[neuron](**{option: bad}),
                  lambda: getattr(F, neuron.lower())(make_input(neuron, (T, B, *FEAT)), **{option: bad})):
        with pytest.raises(TypeError, match=named(option)):
            build()


@pytest.mark.parametrize("bad", [0.0, -0.5, float("nan"), float("inf")], ids=["zero", "negative", "nan", "inf"])
@pytest.mark.parametrize("neuron", [n for n in NEURONS if "dt" in REGISTRY[n].options()])
def test_time_step_must_be_positive_and_finite(neuron, bad):
    with pytest.raises(ValueError, match=named("dt")):
        MODULES[neuron](dt=bad)


@pytest.mark.parametrize("kw", ["bogus", "learn_bogus", "tau_mem_typo", "Tau"])
def test_unknown_keyword(neuron, kw):
    x = make_input(neuron, (T, B, *FEAT), dtype=torch.float32)
    for f in (lambda: MODULES[neuron](**{kw: 1.0}), lambda: getattr(F, neuron.lower())(x, **{kw: 1.0}),
              lambda: getattr(F, neuron.lower() + "_step")(x[0], **{kw: 1.0})):
        with pytest.raises(TypeError, match=named(kw)):
            f()
    with pytest.raises(TypeError, match=named(kw)):
        F.run(REGISTRY[neuron](), x, params={kw: 1.0})


def test_spec_class_instead_of_instance():
    with pytest.raises(TypeError, match=named("spec")):
        F.run(spikeforge.neurons.LIF, torch.ones(T, B))


# -- state -----------------------------------------------------------------------------
def test_state_of_wrong_shape(neuron):
    spec = REGISTRY[neuron]()
    x = make_input(neuron, (T, B, *FEAT))
    good = [torch.zeros(B, *FEAT, dtype=x.dtype) for _ in spec.state]
    first = spec.state[0]
    for bad_shape in ((B + 1, *FEAT), (B,), (B, *FEAT, 1), (T, B, *FEAT)):
        bad = [torch.zeros(bad_shape, dtype=x.dtype), *good[1:]]
        with pytest.raises(ValueError, match=re.escape(f"state.{first}") + ".*shape"):
            F.run(spec, x, bad)
        with pytest.raises(ValueError, match=re.escape(f"state.{first}")):
            F.step(spec, x[0], bad)
    with pytest.raises(ValueError, match=re.escape(f"state.{first}")):
        F.run(spec, x, [1.0, *good[1:]])
    with pytest.raises(ValueError, match=named("state") + f" must hold {len(spec.state)}"):
        F.run(spec, x, [*good, good[0]])
    m = MODULES[neuron]().double()
    m.step(x[0])
    with pytest.raises(ValueError, match=re.escape(f"state.{first}")):
        m.step(torch.ones(B + 1, *FEAT, dtype=x.dtype))  # a carried state from another batch size


# -- surrogates ------------------------------------------------------------------------
BAD_ALPHAS = [0, 0.0, -1.0, float("nan"), float("inf"), "2", None, True, torch.tensor(2.0)]


@pytest.mark.parametrize("alpha", BAD_ALPHAS, ids=[repr(a) for a in BAD_ALPHAS])
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_bad_surrogate_alpha(surrogate, alpha):
    with pytest.raises((ValueError, TypeError), match=named("alpha")):
        dataclasses.replace(surrogate, alpha=alpha)


@pytest.mark.parametrize("fn", [None, 1.0, "tanh"], ids=["None", "float", "str"])
def test_custom_needs_a_callable(fn):
    with pytest.raises(TypeError, match=named("fn")):
        Custom(fn)


@pytest.mark.parametrize("bad", [torch.sigmoid, "atan", 2.0], ids=["function", "str", "float"])
def test_surrogate_must_be_a_surrogate(bad):
    x = torch.ones(T, B, *FEAT)
    for f in (lambda: spikeforge.nn.LIF(surrogate=bad), lambda: F.lif(x, surrogate=bad),
              lambda: F.lif_step(x[0], surrogate=bad), lambda: spike(x, bad)):
        with pytest.raises(TypeError, match=named("surrogate")):
            f()


# -- backends --------------------------------------------------------------------------
def test_unknown_backend_in_environment(monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "bogus")
    with pytest.raises(ValueError, match="SPIKEFORGE_BACKEND.*bogus"):
        F.lif(torch.ones(T, B, 1))
    with pytest.raises(ValueError, match="SPIKEFORGE_BACKEND"):
        spikeforge.nn.LIF()(torch.ones(T, B, 1))


def test_unknown_backend_argument():
    with pytest.raises(ValueError, match=named("backend") + ".*bogus"):
        F.lif(torch.ones(T, B, 1), backend="bogus")
    with pytest.raises(ValueError, match=named("backend")):
        spikeforge.nn.LIF(backend="bogus")(torch.ones(T, B, 1))


def test_triton_forced_on_cpu_tensor():
    for f in (lambda: F.lif(torch.ones(T, B, 1), backend="triton"),
              lambda: spikeforge.nn.LIF(backend="triton")(torch.ones(T, B, 1))):
        with pytest.raises(BackendError, match="triton"):
            f()


def test_environment_backend_is_obeyed(monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "triton")
    with pytest.raises(BackendError, match="triton"):
        F.lif(torch.ones(T, B, 1))  # forced through the environment: refused, not a silent fallback


def test_backends_report_every_name_with_a_reason():
    got = spikeforge.backends("cpu")
    assert set(got) == set(spikeforge.kernels.NAMES) and got["reference"] is None
    assert all(v is None or (isinstance(v, str) and v) for v in got.values())


# -- the registry ----------------------------------------------------------------------
def test_registry_refuses_duplicates_and_empty_specs():
    before = dict(REGISTRY)

    @dataclasses.dataclass(frozen=True)
    class LIF(NeuronSpec):  # noqa: N801 - same name as the registered one on purpose
        state = ("v",)
        params = {"tau": Param(1.0)}

    with pytest.raises(ValueError, match="LIF.*already registered"):
        register_neuron(LIF)

    @dataclasses.dataclass(frozen=True)
    class Empty(NeuronSpec):
        pass

    with pytest.raises(TypeError, match="Empty.*state"):
        register_neuron(Empty)
    assert REGISTRY == before


def test_set_validation_returns_previous_and_disables_checks():
    import spikeforge.functional as F
    from spikeforge.neurons import LIF

    x = torch.full((2, 1, 3), float("nan"))
    previous = F.set_validation(False)
    try:
        assert previous is True
        F.run(LIF(), x, backend="reference")  # unchecked: NaN goes through
        assert F.set_validation(False) is False
    finally:
        F.set_validation(previous)
    with pytest.raises(ValueError, match="NaN"):
        F.run(LIF(), x, backend="reference")


# -- sequence shapes --------------------------------------------------------------------
@pytest.mark.parametrize("call", ["module", "functional", "batch_first"])
def test_two_dim_sequence_names_both_conventions(call):
    """A (B, N) tensor is not silently read as (T, B): the error names both layouts and step."""
    x = torch.ones(B, 5)
    f = {"module": spikeforge.nn.LIF(), "batch_first": spikeforge.nn.LIF(batch_first=True),
         "functional": F.lif}[call]
    with pytest.raises(ValueError, match=r"\(T, B, \.\.\.\).*batch_first.*\(B, T, \.\.\.\).*step"):
        f(x)
    assert spikeforge.nn.LIF().step(x).shape == x.shape   # one step of (B, N) is fine


def test_zero_time_steps():
    for f in (spikeforge.nn.LIF(), F.lif, spikeforge.nn.LIF(backend="reference")):
        with pytest.raises(ValueError, match="T = 0"):
            f(torch.ones(0, B, 3))


def test_non_finite_input_names_the_module_and_the_switch():
    net = torch.nn.Sequential(torch.nn.Linear(3, 4), spikeforge.nn.LIF())
    x = torch.ones(T, B, 3)
    x[1, 0, 0] = float("nan")
    for backend in ("reference", "cpu"):
        net[1].backend = backend
        with pytest.raises(ValueError, match=re.escape("net[1] (LIF)") + ".*NaN.*set_validation\\(False\\)"):
            net(x)
    with pytest.raises(ValueError, match=re.escape("net[1] (LIF)")):
        spikeforge.step(net, torch.full((B, 3), float("inf")))


def test_the_module_path_ignores_unrelated_nets_on_the_stack():
    class Body(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body = torch.nn.Sequential(torch.nn.Linear(3, 4), spikeforge.nn.LIF())

        def forward(self, x):
            return self.body(x)

    model = Body()
    x = torch.ones(T, B, 3)
    x[0, 0, 0] = float("nan")

    def caller():
        net = torch.nn.Linear(3, 3)   # a stray local named net
        assert net is not None
        return model(x)

    with pytest.raises(ValueError, match=re.escape("net.body[1] (LIF)")):
        caller()
