"""Custom neurons written naturally (``torch.where``, ``clamp``, ``relu``, ...) run on the fused
backends with the values and gradients of the reference, and every op that
docs/backends.md lists as supported really fuses (one small step per op, tests/custom_neurons.py).

Each test runs on the ``cpu`` backend and on ``triton`` in Triton's CPU interpreter (and
compiled when there is a GPU), like tests/test_triton.py; the specs are passed directly to
``functional.run``, not registered.
"""
from __future__ import annotations

import re
import subprocess
from collections import namedtuple
from pathlib import Path

import pytest
import torch
from conftest import CUSTOM, margins
from custom_neurons import CUSTOM_NEURONS, OPS, OpLIF

import spikeforge as sf
from spikeforge import functional as F
from spikeforge.kernels import cpu
from spikeforge.surrogate import ATan, Sigmoid

try:
    import triton  # noqa: F401

    from spikeforge.kernels import triton as tk
except ImportError:
    tk = None

pytestmark = pytest.mark.filterwarnings("ignore::RuntimeWarning")  # numpy NaN/overflow in the interpreter
TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-9)}
BACKENDS = (["cpu"] if sf.backends()["cpu"] is None else []) + (["triton"] if tk else []) \
    + (["triton-cuda"] if tk and torch.cuda.is_available() else [])


@pytest.fixture(params=BACKENDS)
def backend(request, monkeypatch):
    """(backend name, device); ``triton`` on CPU tensors runs in the interpreter."""
    if request.param == "triton":
        monkeypatch.setenv("TRITON_INTERPRET", "1")
        monkeypatch.setattr(tk, "BLOCK", 16)
    elif request.param == "triton-cuda":
        monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    return request.param.split("-")[0], "cuda" if request.param.endswith("cuda") else "cpu"


def _uniform(shape, gen, lo, hi):
    return lo + (hi - lo) * torch.rand(shape, generator=gen, dtype=torch.float64)


def _params(spec, **values):
    p = {k: torch.tensor(values.get(k, d.default), dtype=torch.float64) for k, d in spec.params.items()}
    return p, namedtuple("P", spec.params)(*p.values())


def separated(spec, shape, lo, hi, boundary=(), min_margin=1e-3):
    """Input and initial state (float64) of the first seed whose run never comes within
    ``min_margin`` of the threshold (no spike flips under rounding); ``boundary`` values
    are mixed into x exactly, where derivative conventions show."""
    p, pt = _params(spec)
    for seed in range(50):
        g = torch.Generator().manual_seed(seed)
        x = _uniform(shape, g, lo, hi)
        if boundary:
            pick = torch.rand(shape, generator=g) < 0.3
            choice = torch.tensor(boundary, dtype=torch.float64)[torch.randint(len(boundary), shape, generator=g)]
            x = torch.where(pick, choice, x)
        s0 = tuple(_uniform(shape[1:], g, 0.0, 0.5) for _ in spec.state)
        if margins(spec, x, s0, pt) > min_margin:
            return x, s0, p
    raise AssertionError(f"{spec.key()}: no seed keeps the membrane {min_margin} away from threshold")


def run_both(spec, x, s0, params, surrogate, backend, device, dtype):
    """(z, final state, trace, grads w.r.t. x, initial state, parameters) from the reference
    (on CPU) and from ``backend``."""
    gz = _uniform(x.shape, torch.Generator().manual_seed(5), -0.5, 0.5)
    out = {}
    for b in ("reference", backend):
        dev = "cpu" if b == "reference" else device
        xb = x.to(dev, dtype).requires_grad_()
        sb = tuple(s.to(dev, dtype).requires_grad_() for s in s0)
        pb = {k: v.to(dev, dtype).requires_grad_() for k, v in params.items()}
        z, s, tr, used = F.run(spec, xb, sb, pb, surrogate=surrogate, backend=b, record=True)
        assert used == b
        loss = (z * gz.to(z)).sum() + sum((v * v).sum() for v in s)
        grads = torch.autograd.grad(loss, [xb, *sb, *pb.values()], allow_unused=True)
        host = lambda t: None if t is None else t.detach().cpu()  # noqa: E731
        out[b] = (host(z), [host(v) for v in s], [host(v) for v in tr], [host(g) for g in grads])
    return out["reference"], out[backend]


def assert_same(ref, got, tol):
    torch.testing.assert_close(got[0], ref[0], **tol)
    for a, b in zip(got[1] + got[2], ref[1] + ref[2]):
        torch.testing.assert_close(a, b, **tol)
    for a, b in zip(got[3], ref[3]):
        if b is None:  # not reached by the reference graph: the kernel says zero
            assert a is None or not a.any()
        else:
            torch.testing.assert_close(a, b, **tol)


# -- the three natural custom neurons ---------------------------------------------------
CASES = [(torch.float32, ATan()), (torch.float64, Sigmoid()), (torch.float64, CUSTOM)]


@pytest.mark.parametrize("dtype, surrogate", CASES, ids=["f32-ATan", "f64-Sigmoid", "f64-Custom"])
@pytest.mark.parametrize("name", sorted(CUSTOM_NEURONS))
def test_custom_neuron_matches_reference(name, dtype, surrogate, backend):
    spec = CUSTOM_NEURONS[name]()
    b, device = backend
    assert b == "cpu" or tk.BACKEND.unavailable_reason(torch.device(device), dtype) is None
    support = (cpu.BACKEND if b == "cpu" else tk.BACKEND).support_reason(spec, surrogate, dtype)
    assert support is None, support
    x, s0, p = separated(spec, (8, 2, 7), -1.0, 3.0)
    ref, got = run_both(spec, x, s0, p, surrogate, b, device, dtype)
    assert 0.05 < ref[0].mean() < 0.6, "the neuron should spike at a moderate rate"
    assert_same(ref, got, TOL[dtype])


def test_custom_neurons_reach_their_selects():
    """The inputs above exercise what each neuron was written for: refractory steps, both
    clamp bounds, both sides of relu (so that the comparison is not vacuous)."""
    tr, grad = {}, {}
    for name, cls in CUSTOM_NEURONS.items():
        spec = cls()
        x, s0, p = separated(spec, (8, 2, 7), -1.0, 3.0)
        p = {k: v.requires_grad_() for k, v in p.items()}
        z, _, tr[name], _ = F.run(spec, x, s0, p, backend="reference", record=True)
        grad[name] = dict(zip(p, torch.autograd.grad(z.sum(), list(p.values()), allow_unused=True)))
    assert (tr["RefractoryLIF"].r > 0).double().mean() > 0.1
    assert grad["BoundedLIF"]["v_min"] != 0 and grad["BoundedLIF"]["v_max"] != 0
    assert (tr["ReluAdaptiveLIF"].v < 0).any() and grad["ReluAdaptiveLIF"]["beta"] != 0


# -- one step per supported op ---------------------------------------------------------
def documented_ops() -> list[str]:
    """The op names (the backticked words of the list items) in the supported-operations
    section of docs/backends.md."""
    text = (Path(__file__).parents[1] / "docs" / "backends.md").read_text()
    section = text.split("\n## Supported operations\n", 1)[1].split("\n## ", 1)[0]
    items = [item.split("\n\n")[0] for item in section.split("\n* ")[1:]]  # an item may span lines
    return [name for item in items for name in re.findall(r"`(\w+)`", item)]


def test_every_documented_op_has_a_step_here():
    ops = documented_ops()
    assert ops and sorted(set(ops)) == sorted(OPS), (set(ops) ^ set(OPS))


@pytest.mark.parametrize("op", sorted(OPS))
def test_documented_op_fuses(op, backend):
    spec, dtype = OpLIF(op=op), torch.float64
    b, device = backend
    support = (cpu.BACKEND if b == "cpu" else tk.BACKEND).support_reason(spec, ATan(), dtype)
    assert support is None, support
    x, s0, p = separated(spec, (6, 2, 5), -1.5, 2.5, boundary=(0.0, -0.0, 0.5, -0.5, 1.0, -1.0), min_margin=1e-6)
    assert_same(*run_both(spec, x, s0, p, ATan(), b, device, dtype), TOL[dtype])


@pytest.mark.parametrize("op", ["relu", "clamp", "clamp_min", "maximum", "minimum", "sign", "heaviside", "where",
                                "hardtanh", "abs", "isnan"])
def test_nan_propagates_as_in_torch(op, backend, no_validation):
    spec = OpLIF(op=op)
    b, device = backend
    x = torch.tensor([[[float("nan"), 0.5, -1.0, 2.0]], [[1.0, float("nan"), 0.0, -0.5]]], dtype=torch.float64)
    s0 = (torch.tensor([[0.1, 0.2, float("nan"), 0.3]], dtype=torch.float64),)
    p, _ = _params(spec)
    with torch.no_grad():
        zr, sr, _, _ = F.run(spec, x, s0, p, backend="reference")
        z, s, _, _ = F.run(spec, x.to(device), tuple(v.to(device) for v in s0), p, backend=b)
    torch.testing.assert_close(z.cpu(), zr, equal_nan=True, atol=0, rtol=0)
    torch.testing.assert_close(s.v.cpu(), sr.v, equal_nan=True, atol=0, rtol=0)


def test_heaviside_of_a_differentiable_value_is_torch_error():
    """torch defines no derivative for heaviside: a step that differentiates through it is
    reported by name (and runs on the reference, whose backward raises torch's error)."""
    OPS["heaviside_grad"] = lambda x, w: torch.heaviside(x - w, torch.full_like(x, 0.5))
    try:
        spec = OpLIF(op="heaviside_grad")
        reason = cpu.BACKEND.support_reason(spec, ATan(), torch.float64)
        assert reason is not None and "heaviside" in reason
        x = torch.rand(3, 2, 4, dtype=torch.float64, requires_grad=True)
        z = F.run(spec, x, backend="reference")[0]
        with pytest.raises(RuntimeError, match="heaviside"):
            z.sum().backward()
    finally:
        del OPS["heaviside_grad"]


def test_unsupported_dtype_is_reported():
    """An integer intermediate (the kernels compute floats and bools) is named, not crashed on."""
    OPS["long"] = lambda x, w: x * (x > w).long()
    try:
        reason = cpu.BACKEND.support_reason(OpLIF(op="long"), ATan(), torch.float64)
        assert reason is not None and "int64" in reason
    finally:
        del OPS["long"]


# -- the generated C still vectorises ---------------------------------------------------
SELECT_OPS = ["abs", "sign", "sgn", "relu", "hardtanh", "leaky_relu", "clamp", "clamp_min", "clamp_max", "maximum",
              "minimum", "where", "masked_fill", "heaviside", "isnan", "logical_and", "logical_or", "logical_xor",
              "logical_not", "to"]


def test_selects_vectorise(tmp_path):
    """Every compute loop (forward, recomputation, backward) of the custom neurons and of the
    select-like ops is vectorised, as tests/test_kernels_cpu.py checks for the registered neurons."""
    from concurrent.futures import ThreadPoolExecutor

    from test_kernels_cpu import _gcc, _loop_end

    if sf.backends()["cpu"] is not None or not _gcc():
        pytest.skip("reads gcc's vectorisation report (-fopt-info-vec)")
    cases = [(n, cls(), dt) for n, cls in CUSTOM_NEURONS.items() for dt in (torch.float32, torch.float64)]
    cases += [(op, OpLIF(op=op), torch.float32) for op in SELECT_OPS]
    sources = [(f"{name}-{str(dt)[6:]}", cpu.csource.source(cpu.trace(spec, ATan(), dt), (False,) * len(spec.params)))
               for name, spec, dt in cases]

    def scalar_loops(case):
        name, src = case
        lines = src.splitlines()
        compute = [(i + 1, _loop_end(lines, i + 1) + 1) for i, ln in enumerate(lines)
                   if "omp simd" in ln and "const " in lines[i + 2]]
        c = tmp_path / f"{name}.c"
        c.write_text(src)
        flags = [f for f in cpu.FLAGS if f != "-shared"]
        r = subprocess.run([cpu.compiler(), *flags, "-c", "-fopt-info-vec-optimized", str(c), "-o", f"{c}.o"],
                           capture_output=True, text=True)
        done = [int(m) for m in re.findall(r":(\d+):\d+: optimized: loop vectorized", r.stderr)]
        assert len(compute) >= 3, "forward, recomputation and backward loops expected"
        return name, [a for a, b in compute if not any(a <= d <= b for d in done)]

    with ThreadPoolExecutor(2) as pool:
        missed = [(name, m) for name, m in pool.map(scalar_loops, sources) if m]
    assert not missed, f"compute loops left scalar (source line numbers): {missed}"


def test_tensor_literals_in_a_step_fuse():
    """``torch.tensor(c)`` inside a step is a constant of the traced graph, printed as a number."""
    from dataclasses import dataclass
    from spikeforge.neurons import NeuronSpec, Param

    @dataclass(frozen=True)
    class Capped(NeuronSpec):
        state = ("v",)
        params = {"tau": Param(2.0, positive=True)}

        def step(self, x, s, p, fire):
            h = torch.minimum(s[0] + (x - s[0]) / p.tau, torch.tensor(1.5))
            z = fire(h - 1.0)
            return z, (h * (1.0 - z),)

    x = (torch.rand(6, 2, 3, dtype=torch.float64) * 3).requires_grad_()
    z_cpu, s_cpu, _, used = F.run(Capped(), x, backend="cpu")
    z_ref, s_ref, _, _ = F.run(Capped(), x, backend="reference")
    assert used == "cpu"
    torch.testing.assert_close(z_cpu, z_ref)
    g_cpu, = torch.autograd.grad((z_cpu + s_cpu.v.sum()).sum(), x)
    g_ref, = torch.autograd.grad((z_ref + s_ref.v.sum()).sum(), x)
    torch.testing.assert_close(g_cpu, g_ref)
