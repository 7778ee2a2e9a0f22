"""Neuron modules are real classes: pickle, torch.save, deepcopy, help/inspect, re-registration."""
from __future__ import annotations

import copy
import inspect
import io
import pickle
from dataclasses import dataclass

import pytest
import torch

import spikeforge as sf
from spikeforge import functional as F
from spikeforge.neurons import REGISTRY, NeuronSpec, Param, Reset, register_neuron, reset_membrane
from spikeforge.nn import MODULES

from conftest import make_input

T, B, N = 6, 3, 4


def _layers():
    """One of every spikeforge layer type, for round trips."""
    return {
        "TimeDistributed": sf.nn.TimeDistributed(torch.nn.Linear(N, N)),
        "Flatten": sf.nn.Flatten(),
        "TimeDropout": sf.nn.TimeDropout(0.3),
        "BatchNorm1d": sf.nn.BatchNorm1d(N),
        "Recurrent": sf.nn.Recurrent(sf.nn.LIF(carry_state=True), N),
        "Delay": sf.nn.Delay(2, N),
        "DelaySynapse": sf.nn.Delay(2, N, per=sf.nn.delay.DelayPer.SYNAPSE, out_features=N),
        "SpikeLinear": sf.nn.SpikeLinear(N, N),
        "AvgPool1d": sf.nn.AvgPool1d(2),
    }


def _round_trips(m):
    yield "pickle", pickle.loads(pickle.dumps(m))
    yield "deepcopy", copy.deepcopy(m)
    buf = io.BytesIO()
    torch.save(m, buf)
    buf.seek(0)
    yield "torch.save", torch.load(buf, weights_only=False)


@pytest.mark.parametrize("neuron", sorted(MODULES))
def test_neuron_module_round_trips_with_carried_state(neuron):
    m = MODULES[neuron](carry_state=True, record=True).double()
    x = make_input(neuron, (T, B, N))
    m(x[:3])
    for how, m2 in _round_trips(m):
        assert type(m2) is type(m), how
        assert type(m2.state) is type(m.state) and m2.spec == m.spec, how
        for a, b in zip(m2.state, m.state):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        torch.testing.assert_close(m2(x[3:]), copy.deepcopy(m)(x[3:]), rtol=0, atol=0)


@pytest.mark.parametrize("name", sorted(_layers()))
def test_every_layer_round_trips(name):
    m = _layers()[name].eval()
    x = torch.rand(T, B, N).round()
    y = m(x)
    for how, m2 in _round_trips(m):
        assert type(m2) is type(m), how
        torch.testing.assert_close(m2(x), y, rtol=0, atol=0)


def test_sequential_with_streaming_state_round_trips():
    net = torch.nn.Sequential(torch.nn.Linear(N, 8), sf.nn.CubaLIF(), sf.nn.Delay(1, 8),
                              torch.nn.Linear(8, 2), sf.nn.LI())
    x = torch.rand(T, B, N) * 2
    for x_t in x[:3]:
        sf.step(net, x_t)
    for how, net2 in _round_trips(net):
        rest = [sf.step(net2, x_t) for x_t in x[3:]]
        same = [sf.step(copy.deepcopy(net), x_t) for x_t in x[3:4]]
        torch.testing.assert_close(rest[0], same[0], rtol=0, atol=0)


def test_state_and_params_tuples_are_importable_classes():
    spec = sf.neurons.CubaLIF
    s = spec.State(i=torch.zeros(2), v=torch.ones(2))
    assert spec.State.__qualname__ == "CubaLIF.State" and spec.State._fields == ("i", "v")
    s2 = pickle.loads(pickle.dumps(s))
    assert type(s2) is spec.State and all(torch.equal(a, b) for a, b in zip(s2, s))
    assert sf.neurons.PLIF.Params is not sf.neurons.LIF.Params   # each spec has its own


@pytest.mark.parametrize("neuron", sorted(MODULES))
def test_signature_lists_options_parameters_and_flags(neuron):
    cls, spec = MODULES[neuron], REGISTRY[neuron]
    sig = inspect.signature(cls)
    params = sig.parameters
    for f in spec.options():
        assert params[f].default == getattr(spec, f)
    for name, p in spec.params.items():
        assert params[name].default == p.default
        assert params[f"learn_{name}"].default == p.learnable
    for flag in ("surrogate", "backend", "record", "carry_state", "batch_first"):
        assert flag in params
    assert all(p.kind is inspect.Parameter.KEYWORD_ONLY for p in params.values())
    assert cls.__module__ == "spikeforge.nn.neuron" and cls.__qualname__ == neuron
    assert getattr(sf.nn.neuron, neuron) is cls
    doc = inspect.getdoc(cls)
    assert all(name in doc for name in spec.params)


@pytest.fixture
def scratch_registry():
    """Undo registrations made by a test (registry, module classes, functional shortcuts)."""
    saved = (dict(REGISTRY), dict(MODULES), dict(vars(sf.nn.neuron)), dict(vars(F)), list(F.__all__))
    yield
    for live, old in zip((REGISTRY, MODULES, vars(sf.nn.neuron), vars(F)), saved[:4]):
        for k in set(live) - set(old):
            del live[k]
        live.update(old)
    F.__all__[:] = saved[4]


_CELL = """
@register_neuron
@dataclass(frozen=True)
class Leaky2(NeuronSpec):
    \"\"\"``h = v + (x - v) / tau``; hard reset.\"\"\"
    dt: float = 1.0
    state = ("v",)
    params = {"tau": Param(3.0, "time", positive=True), "v_threshold": Param(THRESHOLD, "potential")}

    def step(self, x, s, p, fire):
        h = s[0] + (x - s[0]) / p.tau
        z = fire(h - p.v_threshold)
        return z, (reset_membrane(h, z, p.v_threshold, 0.0, Reset.HARD, False),)
"""


def _define(threshold: float):
    """Run the 'notebook cell' above at this module's top level (as a re-run cell does)."""
    exec(_CELL.replace("THRESHOLD", repr(threshold)), globals())
    return globals()["Leaky2"]


def test_registering_a_rerun_definition_replaces_it(scratch_registry):
    first = _define(1.0)
    second = _define(0.5)          # the same cell run again, edited
    assert REGISTRY["Leaky2"] is second and MODULES["Leaky2"].spec_type is second
    assert sf.nn.Leaky2 is MODULES["Leaky2"] and sf.nn.Leaky2().v_threshold.item() == 0.5
    assert F.leaky2(torch.ones(T, B, 2))[0].shape == (T, B, 2)
    m = sf.nn.Leaky2(carry_state=True)
    m(torch.ones(2, B, 2))
    m2 = pickle.loads(pickle.dumps(m))
    assert type(m2) is type(m) and type(m2.state) is second.State
    assert first is not second


def test_registering_another_class_under_a_taken_name_is_an_error(scratch_registry):
    @dataclass(frozen=True)
    class LIF(NeuronSpec):
        state = ("v",)
        params = {}

    with pytest.raises(ValueError, match="'LIF' is already registered"):
        register_neuron(LIF)
    assert REGISTRY["LIF"] is sf.neurons.LIF


def test_an_unregistered_spec_cannot_take_a_registered_name(scratch_registry):
    @dataclass(frozen=True)
    class LIF(NeuronSpec):
        state = ("v",)
        params = {}

    with pytest.raises(ValueError, match="'LIF' is registered"):
        sf.nn.neuron_module(LIF)
    assert pickle.loads(pickle.dumps(sf.nn.LIF())).spec == sf.nn.LIF().spec


def test_a_failed_registration_leaves_the_registry_alone(scratch_registry):
    @dataclass(frozen=True)
    class where(NeuronSpec):   # noqa: N801 - the name clashes with a function of spikeforge.nn.neuron
        state = ("v",)
        params = {}

    with pytest.raises(ValueError, match="name is taken"):
        register_neuron(where)
    assert "where" not in REGISTRY


def test_a_parameter_that_is_not_a_number_is_named():
    with pytest.raises(TypeError, match="LIF parameter tau must be a number or a tensor, got 'x'"):
        sf.nn.LIF(tau="x")


def test_batch_first_names_the_shape_given():
    with pytest.raises(ValueError, match=r"batch_first=True as here, \(B, T, \.\.\.\); got shape \(4, 3\)"):
        sf.nn.LIF(batch_first=True)(torch.randn(4, 3))
    with pytest.raises(ValueError, match=r"no time steps: shape \(2, 0, 3\) \(B, T, \.\.\.\) has T = 0"):
        sf.nn.LIF(batch_first=True)(torch.randn(2, 0, 3))
