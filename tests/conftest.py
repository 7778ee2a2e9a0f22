"""Shared test matrix: every registered neuron x every surrogate x dtype x backend.

Nothing here names a neuron model: the lists come from ``spikeforge.neurons.REGISTRY``,
``spikeforge.surrogate.BUILTIN`` and ``spikeforge.backends()``, so a newly registered
neuron, surrogate or backend joins every test on its own.

The helpers deliberately avoid the code under test where they can: ``loop`` runs a
spec's ``step`` in a plain Python loop with a ``fire`` function of our choosing (not
``spikeforge.surrogate.spike``), and ``PRIMITIVES`` holds, for each surrogate, a smooth
function written independently here whose derivative *is* the surrogate.
"""
from __future__ import annotations

import math
import os
from functools import cache

import pytest
import torch
from hypothesis import settings

import spikeforge
from spikeforge import functional as F
from spikeforge.neurons import REGISTRY
from spikeforge.surrogate import BUILTIN, Custom

# Property tests are deterministic (the same examples on every run and machine: a failure is
# reproducible, never a lucky draw) and have no per-example deadline (a loaded 2-core CI machine
# must not fail a correct test for being slow). Tests' own @settings keep these unless they say.
settings.register_profile("spikeforge", derandomize=True, deadline=None, print_blob=True)
settings.load_profile("spikeforge")

NEURONS = sorted(REGISTRY)
SPIKING = [n for n in NEURONS if REGISTRY[n].spiking]


def tanh_grad(x, alpha):
    """The tests' user-supplied surrogate: derivative of ``tanh(alpha x) / 2``."""
    t = torch.tanh(alpha * x)
    return 0.5 * alpha * (1.0 - t * t)


CUSTOM = Custom(tanh_grad, alpha=1.5)
SURROGATES = [cls() for cls in BUILTIN] + [CUSTOM]
SURROGATE_IDS = [type(s).__name__ for s in SURROGATES]


def _ramp(x, a):
    """Integral of the triangle ``a * max(0, 1 - a|x|)`` (clamp's gradient is the indicator)."""
    c = torch.clamp(x, -1.0 / a, 1.0 / a)
    return a * c - 0.5 * a * a * c * torch.abs(c)


# surrogate type -> smooth primitive P(x, alpha) with dP/dx = the surrogate derivative.
PRIMITIVES = {
    "StraightThrough": lambda x, a: a * x,
    "Sigmoid": lambda x, a: torch.sigmoid(a * x),
    "ATan": lambda x, a: torch.atan(0.5 * math.pi * a * x) / math.pi,
    "FastSigmoid": lambda x, a: x / (1.0 + a * torch.abs(x)),
    "Triangle": _ramp,
    "Erf": lambda x, a: 0.5 * torch.erf(a * x),
    "PiecewiseQuadratic": _ramp,
    "Gaussian": lambda x, a: 0.5 * torch.erf(a * x / math.sqrt(2.0)),
    "Custom": lambda x, a: 0.5 * torch.tanh(a * x),
}


def primitive(surrogate):
    name = type(surrogate).__name__
    assert name in PRIMITIVES, f"add an independent primitive for surrogate {name} to tests/conftest.py"
    return lambda x: PRIMITIVES[name](x, surrogate.alpha)


def heaviside(u):
    return (u >= 0).to(u.dtype)


def straight_through_fire(surrogate):
    """Heaviside forward; backward = autograd of the primitive (independent of ``spike``).
    ``P(u) - P(u).detach()`` is exactly 0 in the forward pass."""
    prim = primitive(surrogate)

    def fire(u):
        p = prim(u)
        return heaviside(u).detach() + (p - p.detach())

    return fire


def loop(spec, x, state, params, fire):
    """Run ``spec.step`` over time in plain Python. Returns (z (T, ...), final state, per-step states)."""
    s, zs, trace = tuple(state), [], []
    for t in range(x.shape[0]):
        z, s = spec.step(x[t], s, params, fire)
        zs.append(z)
        trace.append(tuple(s))
    return torch.stack(zs), tuple(s), [torch.stack(v) for v in zip(*trace)]


def default_params(spec_cls, dtype, requires_grad=False):
    """The spec's defaults as 0-dim leaf tensors (built without ``functional.make_params``)."""
    vals = [torch.tensor(p.default, dtype=dtype, requires_grad=requires_grad) for p in spec_cls.params.values()]
    return spec_cls.Params(*vals)


def rest(spec, params, shape, dtype):
    """Resting state built from ``spec.rest`` (without ``functional.rest_state``)."""
    return tuple(torch.broadcast_to(torch.as_tensor(r, dtype=dtype), shape) for r in spec.rest(params))


def margins(spec, x, state, params):
    """Smallest |v - threshold| the forward pass meets (how close a spike was to flipping)."""
    seen = []

    def fire(u):
        seen.append(u.detach().abs().min())
        return heaviside(u)

    with torch.no_grad():
        loop(spec, x, state, params, fire)
    return min(seen).item() if seen else math.inf


def _uniform(shape, seed, dtype, lo, hi):
    g = torch.Generator().manual_seed(seed)
    return (lo + (hi - lo) * torch.rand(shape, generator=g, dtype=torch.float64)).to(dtype)


@cache
def drive_scale(name: str) -> float:
    """An input scale at which the default neuron spikes at a moderate rate (5 %..50 %), found by
    search so that no per-model constant lives in the tests; non-spiking models get 1."""
    cls = REGISTRY[name]
    if not cls.spiking:
        return 1.0
    spec, p = cls(), default_params(cls, torch.float64)
    for k in range(-3, 10):  # measured on a sequence as short as the tests use
        scale = 2.0 ** k
        x = _uniform((10, 4, 6), 1234, torch.float64, -0.25 * scale, scale)
        z, _, _ = loop(spec, x, rest(spec, p, x.shape[1:], torch.float64), p, heaviside)
        if 0.05 <= z.mean().item() <= 0.5:
            return scale
    raise AssertionError(f"{name}: no input scale in 2^-3..2^9 makes the default neuron spike at 5-50 %")


def make_input(name, shape, dtype=torch.float64, seed=0):
    """Deterministic input for neuron ``name``, mostly positive, scaled to make it spike."""
    s = drive_scale(name)
    return _uniform(shape, seed, dtype, -0.25 * s, s)


def separated_input(name, shape, dtype=torch.float64, min_margin=1e-3, state_noise=0.0):
    """``make_input`` with the first seed whose run never comes within ``min_margin`` of the
    threshold: values there do not flip under rounding or finite-difference perturbation.
    Returns (x, initial state)."""
    cls = REGISTRY[name]
    spec, p = cls(), default_params(cls, torch.float64)
    for seed in range(50):
        x = make_input(name, shape, torch.float64, seed)
        s0 = tuple(s + state_noise * _uniform(s.shape, seed + 99, torch.float64, -1, 1)
                   for s in rest(spec, p, shape[1:], torch.float64))
        if margins(spec, x, s0, p) > min_margin:
            return x.to(dtype), tuple(s.to(dtype) for s in s0)
    raise AssertionError(f"{name}: no seed below 50 keeps the membrane {min_margin} away from threshold")


def grads(out, inputs, weights):
    """Gradients of ``sum(w * o)`` w.r.t. ``inputs`` (zeros where unused)."""
    loss = sum((w * o).sum() for w, o in zip(weights, out))
    gs = torch.autograd.grad(loss, inputs, allow_unused=True)
    return [torch.zeros_like(i) if g is None else g for g, i in zip(gs, inputs)]


def weights_like(tensors, seed=7):
    return [_uniform(t.shape, seed + i, t.dtype, -1, 1) for i, t in enumerate(tensors)]


def tol(dtype):
    return dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-6)


# -- fixtures ---------------------------------------------------------------------------
@pytest.fixture(params=NEURONS)
def neuron(request):
    """The name of a registered neuron."""
    return request.param


@pytest.fixture(params=SPIKING)
def spiking_neuron(request):
    return request.param


@pytest.fixture(params=SURROGATES, ids=SURROGATE_IDS)
def surrogate(request):
    return request.param


@pytest.fixture(params=[torch.float32, torch.float64], ids=["f32", "f64"])
def dtype(request):
    return request.param


@pytest.fixture
def reference_backend(monkeypatch):
    """Pin automatic backend selection to the reference scan (the fused backends are compared
    with it explicitly, through the ``fused`` fixture)."""
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "reference")


@pytest.fixture
def no_validation():
    """Turn the per-call input checks off for one test (restored afterwards)."""
    F.set_validation(False)
    yield
    F.set_validation(True)


def _fused_backends():
    """(device, name) of every non-reference backend usable here; empty until one exists."""
    return [(d, n) for d in _devices() for n, why in spikeforge.backends(d).items() if n != "reference" and why is None]


def _devices():
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


FUSED = _fused_backends()
FUSED_IDS = [f"{n}-{d}" for d, n in FUSED]


def pytest_configure(config):
    """``SPIKEFORGE_REQUIRE_BACKENDS=cpu[,triton]`` (``make test``, hence CI, sets ``cpu``): the
    run stops with an error unless each named backend is live here. Without it, a machine with
    no C compiler would skip every fused-backend test and still end green."""
    required = [n.strip() for n in os.environ.get("SPIKEFORGE_REQUIRE_BACKENDS", "").split(",") if n.strip()]
    live = {"reference"} | {n for _, n in FUSED}
    for name in required:
        if name not in spikeforge.kernels.NAMES:
            raise pytest.UsageError(f"SPIKEFORGE_REQUIRE_BACKENDS names {name!r}; backends: "
                                    f"{', '.join(spikeforge.kernels.NAMES)}")
        if name not in live:
            why = "; ".join(f"on {d}: {spikeforge.backends(d)[name]}" for d in _devices())
            raise pytest.UsageError(f"SPIKEFORGE_REQUIRE_BACKENDS={os.environ['SPIKEFORGE_REQUIRE_BACKENDS']}: "
                                    f"backend {name!r} is not available ({why})")


@pytest.fixture(params=FUSED, ids=FUSED_IDS)
def fused(request):
    """(device, backend name) of an available fused backend."""
    return request.param
