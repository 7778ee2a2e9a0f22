"""The generated CPU kernels against the reference scan: shapes, layouts, strides, dtypes,
custom surrogates, unsupported graphs and backend reporting. (The full neuron x surrogate
matrix against every available backend lives in test_neurons.py.)"""
from __future__ import annotations

import ctypes
import logging
import os
import re
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

import spikeforge as sf
from spikeforge import functional as F
from spikeforge.kernels import BackendError, cpu
from spikeforge.neurons import REGISTRY, NeuronSpec, Param
from spikeforge.surrogate import ATan, Custom

pytestmark = pytest.mark.skipif(sf.backends()["cpu"] is not None, reason=f"cpu backend: {sf.backends()['cpu']}")

TOL = {torch.float32: dict(atol=1e-5, rtol=1e-5), torch.float64: dict(atol=1e-10, rtol=1e-9)}


def _run_both(spec, x, params, surrogate=ATan(), state=None, record=True):
    out = {}
    gen = torch.Generator().manual_seed(1)
    gz = torch.randn(x.shape, generator=gen, dtype=x.dtype)
    for b in ("reference", "cpu"):
        xb = x.detach().clone().requires_grad_()
        pb = {k: v.detach().clone().requires_grad_() for k, v in params.items()}
        sb = None if state is None else tuple(s.detach().clone().requires_grad_() for s in state)
        z, s, trace, used = F.run(spec, xb, sb, pb, surrogate=surrogate, backend=b, record=record)
        assert used == b
        loss = (z * gz).sum() + sum((v * v).sum() for v in s)
        leaves = [xb, *pb.values(), *(sb or ())]
        grads = torch.autograd.grad(loss, leaves)
        out[b] = (z.detach(), [v.detach() for v in s], trace, grads)
    return out


def _assert_same(out, dtype):
    ref, fused = out["reference"], out["cpu"]
    torch.testing.assert_close(fused[0], ref[0], **TOL[dtype])
    for a, b in zip(fused[1], ref[1]):
        torch.testing.assert_close(a, b, **TOL[dtype])
    if ref[2] is not None:
        for a, b in zip(fused[2], ref[2]):
            torch.testing.assert_close(a, b.detach(), **TOL[dtype])
    for a, b in zip(fused[3], ref[3]):
        torch.testing.assert_close(a, b, **TOL[dtype])


@settings(max_examples=12, deadline=None)
@given(T=st.integers(1, 6), B=st.integers(1, 3), feat=st.lists(st.integers(1, 5), min_size=1, max_size=2),
       per_neuron=st.booleans(), seed=st.integers(0, 2**16))
def test_random_shapes_and_layouts(T, B, feat, per_neuron, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(T, B, *feat, generator=g, dtype=torch.float64) + 0.6
    features = tuple(feat)
    tau = 1.5 + torch.rand(features, generator=g, dtype=torch.float64) if per_neuron else torch.tensor(2.0,
                                                                                                    dtype=torch.float64)
    params = {"tau": tau, "v_threshold": torch.tensor(1.0, dtype=torch.float64)}
    _assert_same(_run_both(REGISTRY["LIF"](), x, params), torch.float64)


def test_large_rows_cross_chunks_and_threads():
    # N larger than one work item (csource.CH) and enough elements for the parallel path.
    g = torch.Generator().manual_seed(0)
    x = torch.randn(3, 2, 2 * 512 + 37, generator=g) * 0.5 + 0.7
    assert x.numel() * 100 > cpu._PARALLEL_MIN
    xs = x.repeat(100, 1, 1)
    _assert_same(_run_both(REGISTRY["CubaLIF"](), xs, {"tau_mem": torch.tensor(3.0)}), torch.float32)


def test_non_contiguous_input_and_carried_state():
    g = torch.Generator().manual_seed(3)
    base = torch.randn(6, 4, 5, generator=g, dtype=torch.float64)
    x = base.transpose(1, 2) + 0.8  # (6, 4->5, 4): non-contiguous
    assert not x.is_contiguous()
    spec = REGISTRY["ALIF"]()
    state = tuple(torch.rand(x.shape[1:], generator=g, dtype=torch.float64) for _ in spec.state)
    params = {"beta": torch.full((4,), 0.3, dtype=torch.float64)}
    _assert_same(_run_both(spec, x, params, state=state), torch.float64)


def test_custom_surrogate_is_fused():
    sur = Custom(lambda x, a: a / (1.0 + (a * x) ** 2), alpha=3.0)
    x = torch.randn(5, 2, 3, dtype=torch.float64) + 0.5
    _assert_same(_run_both(REGISTRY["IF"](), x, {}, surrogate=sur), torch.float64)


def test_unsupported_op_is_reported_and_auto_falls_back(caplog):
    sur = Custom(lambda x, a: torch.special.i0(a * x), alpha=1.0)  # no C template for i0
    spec = REGISTRY["LIF"]()
    reason = cpu.BACKEND.support_reason(spec, sur, torch.float32)
    assert reason is not None and "i0" in reason
    x = torch.randn(4, 2, 3)
    with pytest.raises(BackendError, match="i0"):
        F.run(spec, x, surrogate=sur, backend="cpu")
    with caplog.at_level(logging.WARNING, logger="spikeforge"):
        _, _, _, used = F.run(spec, x, surrogate=sur)
    assert used == "reference"
    assert "i0" in caplog.text


def test_auto_picks_cpu_and_module_reports_it():
    m = sf.nn.LIF()
    m(torch.rand(3, 2, 4))
    assert m.last_backend == "cpu"


def test_env_forces_backend(monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_BACKEND", "reference")
    assert F.run(REGISTRY["LIF"](), torch.rand(3, 2, 4))[3] == "reference"


def test_kernel_source_is_cached_on_disk(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path))
    tr = cpu.trace(REGISTRY["QIF"](), ATan(), torch.float64)
    src = cpu.csource.source(tr, (False,) * tr.n_params)
    cpu.build(src)
    files = list(tmp_path.glob("sf_*.so"))
    assert len(files) == 1
    mtime = files[0].stat().st_mtime_ns
    cpu.build(src)  # second build reuses the file
    assert files[0].stat().st_mtime_ns == mtime


def test_no_compiler_is_a_clear_reason(monkeypatch):
    monkeypatch.setattr(cpu, "compiler", lambda: None)
    assert "compiler" in cpu.BACKEND.unavailable_reason(torch.device("cpu"), torch.float32)
    assert "float32" in cpu.BACKEND.unavailable_reason(torch.device("cpu"), torch.float16)


def test_required_backend_without_a_compiler_stops_the_run(tmp_path):
    """``make test`` (and so CI) sets SPIKEFORGE_REQUIRE_BACKENDS=cpu: with no C compiler the
    test run must stop with an error, not skip every fused test and end green."""
    env = {**os.environ, "CC": str(tmp_path / "no-cc"), "PATH": str(tmp_path), "SPIKEFORGE_REQUIRE_BACKENDS": "cpu"}
    r = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-p", "no:cacheprovider",
                        str(Path(__file__).parent / "test_sparse.py")],
                       env=env, cwd=Path(__file__).parents[1], capture_output=True, text=True)
    assert r.returncode == pytest.ExitCode.USAGE_ERROR, r.stdout + r.stderr
    assert "backend 'cpu' is not available" in r.stderr and "no C compiler" in r.stderr, r.stderr


def test_inference_path_matches_without_grad():
    x = torch.randn(7, 3, 6) + 0.5
    with torch.no_grad():
        zc, sc, tc, _ = F.run(REGISTRY["Izhikevich"](), x * 20, backend="cpu", record=True)
        zr, sr, tr, _ = F.run(REGISTRY["Izhikevich"](), x * 20, backend="reference", record=True)
    torch.testing.assert_close(zc, zr)
    for a, b in zip(tc, tr):
        torch.testing.assert_close(a, b, **TOL[torch.float32])


def _grads_both(spec, x, s0, params, loss_fn, record=False, wanted=None):
    """Gradients of ``loss_fn(z, final_state)`` w.r.t. x, initial state and params on both backends
    (``wanted``: which of these leaves require grad; default all)."""
    out = {}
    for b in ("reference", "cpu"):
        tensors = (x, *s0, *params)
        wants = wanted or [True] * len(tensors)
        leaves = [t.detach().clone().requires_grad_(w) for t, w in zip(tensors, wants)]
        ns = len(s0)
        z, s, _, _ = F.run(spec, leaves[0], tuple(leaves[1: 1 + ns]), spec.Params(*leaves[1 + ns:]),
                           backend=b, record=record)
        g = torch.autograd.grad(loss_fn(z, s), [v for v in leaves if v.requires_grad], allow_unused=True)
        # a parameter the reference graph never touches (ALIF's adaptation at T = 1) gets None
        out[b] = [torch.zeros_like(v) if d is None else d for d, v in zip(g, [v for v in leaves if v.requires_grad])]
    return out


class _Calls:
    """A loaded kernel library that records the segment length K passed to each C call:
    ``("forward", K, nsave)`` and ``("backward", K)`` (argument positions as in csource)."""

    def __init__(self, lib, seen):
        self._lib, self._seen = lib, seen

    def __getattr__(self, name):
        fn = getattr(self._lib, name)
        if name == "sf_forward":  # (T, B, N, threads, x, z, state, saved, K, nsave, params)
            return lambda *a: self._seen.append(("forward", a[8], a[9])) or fn(*a)
        if name == "sf_backward":  # (T, B, N, threads, x, state, saved, K, ...)
            return lambda *a: self._seen.append(("backward", a[7])) or fn(*a)
        return fn


@contextmanager
def _segment_length(K):
    """Every CPU kernel's forward and backward run with segment length K (whichever kernel
    object runs, cached or not) and record their C calls in the yielded list (``_Calls``)."""
    seen = []

    def forced(method):
        def call(self, *args, **kw):
            saved = self.K, self.lib
            self.K, self.lib = K, _Calls(self.lib, seen)
            try:
                return method(self, *args, **kw)
            finally:
                self.K, self.lib = saved
        return call

    with pytest.MonkeyPatch.context() as mp:
        for name in ("forward", "backward"):
            mp.setattr(cpu.Kernel, name, forced(getattr(cpu.Kernel, name)))
        yield seen


@settings(max_examples=40, deadline=None)
@given(neuron=st.sampled_from(sorted(REGISTRY)), T=st.integers(1, 14), K=st.integers(2, 5),
       state_noise=st.sampled_from([0.0, 0.05]), grads=st.sampled_from(["all", "x", "x and state", "params"]))
def test_recomputed_backward_matches_for_any_segment_length(neuron, T, K, state_noise, grads):
    """Without record the CPU backward rebuilds K-step segments from checkpoints: any T, K
    (T < K, T a multiple of K or not) gives the reference gradients, for any set of wanted
    gradients (the values kept from the recomputation depend on it: csource.kept). The C calls
    really get that K: forward saves (T - 1) // K checkpoints, backward rebuilds K-step segments."""
    from conftest import default_params, separated_input

    spec, dtype = REGISTRY[neuron](), torch.float64
    assume(cpu.csource.recomputes(cpu.trace(spec, sf.surrogate.ATan(), dtype)))  # else backward has no segments
    x, s0 = separated_input(neuron, (T, 2, 3), dtype, state_noise=state_noise)
    params = list(default_params(REGISTRY[neuron], dtype))
    ns, n = len(s0), 1 + len(s0) + len(params)
    wanted = {"all": [True] * n, "x": [True] + [False] * (n - 1), "x and state": [True] * (1 + ns) + [False] * len(params),
              "params": [False] * (1 + ns) + [True] * len(params)}[grads]
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(T), dtype=dtype)
    with _segment_length(K) as seen:
        out = _grads_both(spec, x, s0, params, lambda z, s: (z * w).sum() + sum((v * v).sum() for v in s),
                          wanted=wanted)
    assert seen == [("forward", K, (T - 1) // K), ("backward", K)]
    for a, b in zip(out["cpu"], out["reference"]):
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("loss", ["sum", "mean", "row", "time-batch", "final-state-only"])
def test_broadcast_and_missing_output_gradients(loss):
    """The gradient of sum()/mean() is broadcast (stride 0) and read in place; one broadcast
    over features only is made contiguous; a loss on the final state alone sends no gz."""
    from conftest import default_params, separated_input

    spec, dtype = REGISTRY["LIF"](), torch.float64
    x, s0 = separated_input("LIF", (10, 3, 5), dtype)
    row, tb = torch.rand(5, dtype=dtype), torch.rand(10, 3, 1, dtype=dtype)
    fn = {"sum": lambda z, s: z.sum(), "mean": lambda z, s: z.mean(), "row": lambda z, s: (z * row).sum(),
          "time-batch": lambda z, s: (z * tb).sum(), "final-state-only": lambda z, s: (s[0] ** 2).sum()}[loss]
    out = _grads_both(spec, x, s0, list(default_params(REGISTRY["LIF"], dtype)), fn)
    for a, b in zip(out["cpu"], out["reference"]):
        torch.testing.assert_close(a, b, **TOL[dtype])
    assert out["cpu"][0].is_contiguous()


def test_rows_view_reads_broadcast_gradients_in_place():
    g = torch.ones(()).expand(4, 3, 5)
    base, sT, sB = cpu._rows(g)
    assert (base.shape, sT, sB) == ((5,), 0, 0)
    g = torch.rand(5).expand(4, 3, 5)
    base, sT, sB = cpu._rows(g)
    assert base.data_ptr() == g.data_ptr() and (sT, sB) == (0, 0)
    g = torch.rand(4, 3, 1).expand(4, 3, 5)
    base, sT, sB = cpu._rows(g)
    assert base.is_contiguous() and (sT, sB) == (15, 5)
    g = torch.rand(3, 4, 5).transpose(0, 1)  # rows contiguous, time and batch swapped
    base, sT, sB = cpu._rows(g)
    assert base.data_ptr() == g.data_ptr() and (sT, sB) == (5, 20)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")], ids=["nan", "inf", "-inf"])
@pytest.mark.parametrize("where", [(0, 0, 0), (2, 1, -1), (1, 0, 16384)], ids=["first", "last", "second-item"])
def test_kernel_reports_nonfinite_input_without_a_separate_pass(dtype, bad, where, monkeypatch):
    """The CPU forward checks x on the way (rows longer than one work item, vector tails,
    the last step) instead of the functional API's extra pass over it."""
    seen = []
    real = F.all_finite
    monkeypatch.setattr(F, "all_finite", lambda t: seen.append(t.numel()) or real(t))
    x = torch.rand(3, 2, 16384 + 37, dtype=dtype)
    x[where] = bad
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        F.run(REGISTRY["LIF"](), x, backend="cpu")
    with pytest.raises(ValueError, match="x contains NaN or inf"):
        F.run(REGISTRY["LIF"](), x.clone().requires_grad_(), backend="cpu")
    assert x.numel() not in seen
    x[where] = 0.5
    z, _, _, _ = F.run(REGISTRY["LIF"](), x, backend="cpu")  # finite again: runs
    assert torch.isfinite(z).all()


def test_nonfinite_input_passes_when_validation_is_off():
    x = torch.rand(4, 2, 3)
    x[1, 1, 1] = float("nan")
    previous = F.set_validation(False)
    try:
        z, s, _, _ = F.run(REGISTRY["LIF"](), x, backend="cpu")
    finally:
        F.set_validation(previous)
    assert torch.isnan(s.v[1, 1])


def _loop_end(lines, start):
    """Index of the line that closes the braces opened from ``lines[start]`` on."""
    depth = 0
    for j in range(start, len(lines)):
        depth += lines[j].count("{") - lines[j].count("}")
        if depth == 0 and "{" in "".join(lines[start: j + 1]):
            return j
    raise AssertionError("unbalanced braces in generated C")


def _gcc() -> bool:
    cc = cpu.compiler()
    return cc is not None and "Free Software Foundation" in subprocess.run(
        [cc, "--version"], capture_output=True, text=True).stdout


VECTOR_CASES = ([(n, s, torch.float32) for s in ("ATan", "Sigmoid") for n in sorted(REGISTRY)]
                + [("LIF", "Sigmoid", torch.float64), ("EIF", "Gaussian", torch.float64)])


@pytest.mark.skipif(not _gcc(), reason="reads gcc's vectorisation report (-fopt-info-vec)")
def test_compute_loops_vectorise(tmp_path):
    """Every loop that evaluates a traced graph (forward, recomputation, backward) is
    vectorised: a scalar loop costs 5-10x here (EIF's libm exp did, before sf_exp), and
    nothing else would notice."""
    from concurrent.futures import ThreadPoolExecutor

    sur = {c.__name__: c() for c in sf.surrogate.BUILTIN}

    def scalar_loops(case_src):
        (name, s, dtype), src = case_src
        lines = src.splitlines()
        compute = [(i + 1, _loop_end(lines, i + 1) + 1) for i, ln in enumerate(lines)
                   if "omp simd" in ln and "const " in lines[i + 2]]  # 1-based (pragma, closing brace)
        c = tmp_path / f"{name}-{s}-{dtype}.c".replace("torch.", "")
        c.write_text(src)
        flags = [f for f in cpu.FLAGS if f != "-shared"]
        r = subprocess.run([cpu.compiler(), *flags, "-c", "-fopt-info-vec-optimized", str(c), "-o", str(c) + ".o"],
                           capture_output=True, text=True)
        done = [int(m) for m in re.findall(r":(\d+):\d+: optimized: loop vectorized", r.stderr)]
        assert len(compute) >= 3, "forward, recomputation and backward loops expected"
        # gcc names some line of the loop (its header, its pragma or a statement in it)
        return case_src[0], [a for a, b in compute if not any(a <= d <= b for d in done)]

    sources = []
    for name, s, dtype in VECTOR_CASES:  # tracing is not thread-safe; compiling is
        tr = cpu.trace(REGISTRY[name](), sur[s], dtype)
        sources.append(((name, s, dtype), cpu.csource.source(tr, (False,) * tr.n_params)))
    with ThreadPoolExecutor(2) as pool:
        missed = [(case, m) for case, m in pool.map(scalar_loops, sources) if m]
    assert not missed, f"compute loops left scalar (source line numbers): {missed}"


@pytest.fixture(scope="module")
def sf_exp_lib():
    # the bounds as the kernels pass them: variables the compiler cannot fold (csource.c_target)
    (hf, lf), (hd, ld) = (cpu.csource._EXP_CONSTANTS[t][3:5] for t in ("float", "double"))
    src = cpu.csource._HEAD.format(ctype="float") + cpu.csource._EXP + f"""
static inline double opaque_d(double c) {{ __asm__("" : "+m"(c)); return c; }}
void expf_all(int64_t n, const float* x, float* y) {{
    const float hi = sf_opaque({hf}f), lo = sf_opaque({lf}f);
    for (int64_t i = 0; i < n; ++i) y[i] = sf_expf(x[i], hi, lo);
}}
void exp_all(int64_t n, const double* x, double* y) {{
    const double hi = opaque_d({hd}), lo = opaque_d({ld});
    #pragma omp simd
    for (int64_t i = 0; i < n; ++i) y[i] = sf_exp(x[i], hi, lo);
}}
"""
    return cpu.build(src)


def _sf_exp(lib, x):
    y = torch.empty_like(x)
    fn = lib.expf_all if x.dtype == torch.float32 else lib.exp_all
    fn(ctypes.c_int64(x.numel()), ctypes.c_void_p(x.data_ptr()), ctypes.c_void_p(y.data_ptr()))
    return y


@pytest.mark.parametrize("dtype,lo,hi", [(torch.float32, -86.5, 88.72), (torch.float64, -708.0, 709.78)])
def test_sf_exp_is_within_two_ulp_of_exp(sf_exp_lib, dtype, lo, hi):
    """The kernels' exp (vectorisable; the same bits in vector and scalar lanes) against an
    exact exp: < 2 ulp over the normal range, inf above it, 0 below it (no subnormals)."""
    x = torch.cat([torch.linspace(lo, hi, 200_001, dtype=torch.float64), torch.tensor([0.0, 1e-30, -1e-30])]).to(dtype)
    y = _sf_exp(sf_exp_lib, x).double()
    ref = torch.exp(x.double())
    ulp = torch.finfo(dtype).eps * ref
    assert ((y - ref).abs() / ulp).max() < 2.0
    edge = torch.tensor([hi + 1, lo - 1, float("inf"), -float("inf"), float("nan")], dtype=dtype)
    out = _sf_exp(sf_exp_lib, edge)
    assert out[0] == float("inf") and out[1] == 0 and out[2] == float("inf") and out[3] == 0 and out[4].isnan()


def test_backward_of_a_broadcast_gradient_runs_on_all_threads(monkeypatch):
    """gz of sum() is one broadcast row: the thread count follows the sequence, not gz."""
    seen = []
    real = cpu._threads
    monkeypatch.setattr(cpu, "_threads", lambda n: seen.append(n) or real(n))
    x = torch.rand(64, 4, 1024, requires_grad=True)
    assert x.numel() >= cpu._PARALLEL_MIN
    F.run(REGISTRY["LIF"](), x, backend="cpu")[0].sum().backward()
    assert seen == [x.numel(), x.numel()]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_subnormals_flush_to_zero_in_the_kernels_only(dtype):
    """A silent LIF's membrane (and its adjoint) halves every step into the subnormal range,
    where x86 arithmetic is ~100x slower: the cpu kernels flush subnormal operands and results
    to zero, so their values differ from the reference only where it is subnormal, and by less
    than the smallest normal number (here v - v/2 stays at it: v/2 flushes to 0); the caller's
    floating-point flags are restored (torch still makes subnormals afterwards)."""
    tiny = torch.finfo(dtype).tiny
    spec = REGISTRY["LIF"]()
    steps = 40 if dtype is torch.float32 else 100
    x = torch.zeros(steps, 2, 3, dtype=dtype)
    v0 = torch.full((2, 3), tiny * 2.0 ** 20, dtype=dtype, requires_grad=True)
    out = {}
    for backend in ("reference", "cpu"):
        z, s, trace, used = F.run(spec, x, (v0,), {"tau": 2.0}, surrogate=ATan(), backend=backend, record=True)
        assert used == backend
        out[backend] = trace[0]
    ref, cpu = out["reference"], out["cpu"]
    normal = ref.abs() >= tiny
    assert (~normal).any() and normal.any() and (ref[~normal] != 0).any()
    assert torch.equal(cpu[normal], ref[normal])
    low = cpu[~normal].detach()       # no subnormal there; within the smallest normal number of the reference
    assert ((low == 0) | (low.abs() >= tiny)).all() and ((low - ref[~normal]).abs() <= tiny).all()
    assert (torch.tensor(tiny, dtype=dtype) / 4).item() != 0.0        # the flags are back


def test_vector_width_follows_the_traced_operation_count():
    """512-bit vectors (``cpu.WIDE``) for kernels with at least ``WIDE_MIN_OPS`` traced operations, 256-bit
    for the memory-bound ones with fewer; the flags are part of the cached library's name."""
    from spikeforge.kernels.trace import trace
    from spikeforge.neurons import EIF, LI

    def ops(tr):
        return sum(n.op == "call_function" for g in (tr.forward, tr.backward) for n in g.graph.nodes)
    few, many = trace(LI(), ATan(), torch.float32), trace(EIF(), ATan(), torch.float32)
    assert ops(few) < cpu.WIDE_MIN_OPS <= ops(many)
    assert cpu.width(few) == [] and cpu.width(many) == cpu.WIDE
    assert cpu.WIDE == (["-mprefer-vector-width=512"] if os.uname().machine in ("x86_64", "amd64", "AMD64") else [])
    if cpu.WIDE:
        src = "int sf_probe(void) { return 1; }\n"
        assert cpu.build(src)._name != cpu.build(src, cpu.WIDE)._name


def test_clamp_maximum_minimum_keep_nan_and_signed_zero_as_torch():
    """clamp/clamp_min/clamp_max with number bounds print as one compare and select each: NaN in x
    stays NaN, and x is kept where it equals the bound (-0.0 stays -0.0), bit for bit as torch. With
    tensor bounds, and maximum/minimum, NaN and the values agree (the sign of a zero result does not:
    torch's own vectorised and scalar paths differ there)."""
    from dataclasses import dataclass

    from spikeforge.neurons import NeuronSpec, Param

    @dataclass(frozen=True)
    class Clamped(NeuronSpec):
        state = ("a", "b", "c", "d", "e", "f")
        params = {"lo": Param(0.0), "hi": Param(1.0)}

        def step(self, x, s, p, fire):
            return fire(x - 9.0), (torch.clamp(x, 0.0, 1.0), torch.clamp_min(x, -0.0), torch.clamp_max(x, 0.0),
                                   torch.clamp(x, p.lo, p.hi), torch.maximum(x, p.lo), torch.minimum(x, p.lo))

    vals = [-0.0, 0.0, 1.0, -1.0, float("nan"), 0.5, 2.0, -3.0, float("inf"), -float("inf")]
    x = torch.tensor(vals * 7).view(1, 1, -1).expand(3, 2, -1).contiguous()
    previous = F.set_validation(False)
    try:
        _, ref, _, _ = F.run(Clamped(), x, backend="reference")
        _, got, _, _ = F.run(Clamped(), x, backend="cpu")
    finally:
        F.set_validation(previous)
    for k, (r, g) in enumerate(zip(ref, got)):
        assert torch.equal(r.isnan(), g.isnan()) and r.isnan().any()
        keep = ~r.isnan()
        assert torch.equal(r[keep], g[keep])
        if k < 3:   # the number bounds
            assert torch.equal(r[keep].signbit(), g[keep].signbit())


def _reverse_loop(src: str) -> str:
    """The generated backward's reverse-time step loop (up to the end of its segment loop)."""
    start = src.index("for (int64_t t = t1 - 1; t >= t0; --t)")
    lines = src[start:].splitlines()
    return "\n".join(lines[: _loop_end(lines, 0) + 1])


@pytest.mark.parametrize("neuron", sorted(REGISTRY))
def test_reverse_step_reads_x_once_and_keeps_costly_values(neuron):
    """A recomputing backward keeps values from the segment's recomputation (csource.kept): with
    only x's gradient wanted, its reverse step reads no x (x is streamed once per backward, not
    twice), and no exp is evaluated there (EIF: 2 of 3 evaluations per element and step left)."""
    spec, dtype = REGISTRY[neuron](), torch.float32
    tr = cpu.trace(spec, ATan(), dtype)
    if not cpu.csource.recomputes(tr):
        pytest.skip(f"{neuron}'s backward reads no state: it has no recomputation to keep values from")
    want = (True,) + (False,) * tr.n_params
    src = cpu.csource.backward_source(tr, (False,) * tr.n_params, cpu.csource.c_target(dtype), want)
    rev = _reverse_loop(src)
    assert not re.search(r"\bxt\[i\]", rev) and "sf_exp" not in rev
    keep, _ = cpu.csource.kept(tr, want)
    assert cpu.csource.step_values(tr, want) == tr.n_state + len(keep)
    if neuron == "EIF":  # exp, and the membrane before the spike
        assert "exp" in keep and len(keep) == 2
        # with every gradient wanted, a parameter's gradient reads x (r's); the exp is still kept
        assert cpu.csource.kept(tr)[0] == ["exp"]


def test_reverse_step_reads_the_next_states_it_would_recompute(monkeypatch):
    """A value the step returns as a new state is in the segment already (the next step's slots): the
    reverse step reads it there instead of evaluating it again. XyloLIF's synaptic current after its
    shift decay (a floor, compares and selects per element) is read; CubaLIF's next current, the value
    x enters through, needs no kept slot (2 values per step: its states)."""
    want = lambda tr: (True,) + (False,) * tr.n_params
    xy = cpu.trace(REGISTRY["XyloLIF"](), ATan(), torch.float32)
    keep, reads = cpu.csource.kept(xy, want(xy))
    nq = xy.n_state + len(keep)
    assert sorted(j for j in reads.values() if j >= nq) == [nq]   # the next synaptic current (state 0)
    rev = _reverse_loop(cpu.csource.backward_source(xy, (False,) * xy.n_params, cpu.csource.c_target(torch.float32),
                                                    want(xy)))
    cuba = cpu.trace(REGISTRY["CubaLIF"](), ATan(), torch.float32)
    assert cpu.csource.kept(cuba, want(cuba))[0] == [] and cpu.csource.step_values(cuba, want(cuba)) == 2
    monkeypatch.setattr(cpu.csource, "KEEP", cpu.csource.KEEP - {"next"})
    rev_without = _reverse_loop(cpu.csource.backward_source(xy, (False,) * xy.n_params,
                                                            cpu.csource.c_target(torch.float32), want(xy)))
    assert f"q[{nq} * E + loc + i]" in rev and f"q[{nq} * E + loc + i]" not in rev_without
    assert rev.count("floorf(") < rev_without.count("floorf(")
    assert cpu.csource.step_values(cuba, want(cuba)) == 3


def test_truth_values_become_floats_by_a_select_unless_a_where_takes_them():
    """A spike (a comparison's truth value) used in arithmetic is printed as `b ? 1 : 0` (a compare and an
    and: EIF's forward 5 % faster than through an int -> float conversion); one that a `where` takes stays a
    conversion (XyloLIF's backward was 3.5 % slower with the select there). Same values either way: the
    fused-against-reference tests check them."""
    def src(name):
        tr = cpu.trace(REGISTRY[name](), ATan(), torch.float32)
        return cpu.csource.source(tr, (False,) * tr.n_params)
    eif, xylo = src("EIF"), src("XyloLIF")
    assert "(n_ge ? 1.0f : 0.0f)" in eif and "((float)(n_ge))" not in eif
    assert "((float)(n_gt))" in xylo and "(n_ge_8 ? 1.0f : 0.0f)" in xylo


def test_kept_values_make_the_segment_shorter():
    """Kept values share the segment's bytes with the states: K = states x SEGMENT_BYTES / (values per step)."""
    k = cpu.Kernel(REGISTRY["EIF"](), ATan(), torch.float32, (False,) * len(REGISTRY["EIF"].params),
                   (True,) + (False,) * len(REGISTRY["EIF"].params))
    assert cpu.csource.step_values(k.tr, k.want) == 3 and k.K == cpu.segment_steps(3, 1, 4)


def test_a_kept_boolean_is_read_back_as_a_boolean():
    """GatedLIF's input reaches the state's gradient through a comparison only: the recomputation keeps
    that boolean (stored as 0/1 in the segment buffer, read back as a truth value), and the gradients
    still equal the reference's for any segment length."""
    sys.path.insert(0, os.path.dirname(__file__))
    from custom_neurons import GatedLIF

    spec, dtype = GatedLIF(), torch.float64
    tr = cpu.trace(spec, ATan(), dtype)
    assert cpu.csource.kept(tr)[0] == ["gt"]
    src = cpu.csource.backward_source(tr, (False,) * tr.n_params, cpu.csource.c_target(dtype))
    assert "(q[1 * E + loc + i] != 0)" in _reverse_loop(src) and not re.search(r"\bxt\[i\]", _reverse_loop(src))
    gen = torch.Generator().manual_seed(3)
    x = torch.rand(11, 2, 5, generator=gen, dtype=dtype)
    s0 = (torch.rand(2, 5, generator=gen, dtype=dtype) * 0.5,)
    params = [torch.tensor(v.default, dtype=dtype) for v in spec.params.values()]
    w = torch.randn(x.shape, generator=gen, dtype=dtype)
    for K in (2, 3, 20):
        with _segment_length(K):
            out = _grads_both(spec, x, s0, params, lambda z, s: (z * w).sum() + (s[0] ** 2).sum())
        for a, b in zip(out["cpu"], out["reference"]):
            torch.testing.assert_close(a, b, **TOL[dtype])


def test_streaming_stores_only_on_intel(tmp_path):
    """Streaming stores measured faster on an Intel CPU and slower on an AMD one: the default
    threshold streams only where /proc/cpuinfo names Intel (never where it cannot tell)."""
    import sys
    for vendor, intel in [("GenuineIntel", True), ("AuthenticAMD", False), ("", False)]:
        info = tmp_path / f"cpuinfo-{vendor or 'none'}"
        info.write_text(f"processor\t: 0\nvendor_id\t: {vendor}\nflags\t\t: sse2\n" if vendor else "processor\t: 0\n")
        assert cpu._intel(str(info)) is intel
    assert cpu._intel(str(tmp_path / "missing")) is False
    assert cpu.STREAM_BYTES == (64 << 20 if cpu._intel() else sys.maxsize)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("neuron", sorted(REGISTRY))
def test_streaming_stores_write_the_same_bits(neuron, dtype, monkeypatch):
    """Outputs of at least cpu.STREAM_BYTES are written with streaming stores (through a row buffer,
    with an unaligned head and a scalar tail) and the forward prefetches the next step's input:
    z, the final state and every gradient are bit for bit those of ordinary stores, and match the
    reference. 37 and 1100 neurons: rows that start and end off the vector alignment."""
    from conftest import default_params, make_input, rest, separated_input

    spec = REGISTRY[neuron]()
    params = list(default_params(REGISTRY[neuron], dtype))
    calls = []
    real = cpu.streams
    monkeypatch.setattr(cpu, "streams", lambda out: calls.append(real(out)) or real(out))

    def run(x, s0, w):
        leaves = [t.detach().clone().requires_grad_() for t in (x, *s0, *params)]
        ns = len(s0)
        z, s, _, _ = F.run(spec, leaves[0], tuple(leaves[1: 1 + ns]), spec.Params(*leaves[1 + ns:]), backend="cpu")
        grads = torch.autograd.grad((z * w).sum() + sum((v * v).sum() for v in s), leaves, allow_unused=True)
        return [z.detach(), *(v.detach() for v in s), *(g for g in grads if g is not None)]

    for shape in [(7, 3, 37), (5, 2, 1100)]:
        x = make_input(neuron, shape, dtype, seed=1)
        s0 = rest(spec, default_params(REGISTRY[neuron], dtype), shape[1:], dtype)
        w = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
        got = {}
        for limit in (1 << 60, 0):
            monkeypatch.setattr(cpu, "STREAM_BYTES", limit)
            calls.clear()
            got[limit] = run(x, s0, w)
            assert calls and all(c == (limit == 0) for c in calls)   # every output streamed, or none
        assert len(got[0]) == len(got[1 << 60])
        for a, b in zip(got[0], got[1 << 60]):
            assert torch.equal(a, b)
    x, s0 = separated_input(neuron, (7, 3, 37), dtype)   # spikes that rounding cannot flip
    w = torch.randn(x.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
    ref = _grads_both(spec, x, s0, params, lambda z, s: (z * w).sum() + sum((v * v).sum() for v in s))
    for a, b in zip(ref["cpu"], ref["reference"]):   # streamed (STREAM_BYTES is still 0)
        torch.testing.assert_close(a, b, **TOL[dtype])


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_state_of_another_dtype_is_refused_and_follows_the_module(backend):
    # a kernel reads the state's memory as x's dtype: a float32 state with float64 x is refused by
    # name (it was read as raw bytes); a module's carried state follows .double()/.to()
    x = torch.randn(6, 2, 4) + 0.8
    with pytest.raises(ValueError, match="state.v must have x's dtype torch.float32"):
        F.run(REGISTRY["LIF"](), x, (torch.zeros(2, 4, dtype=torch.float64),), backend=backend)
    m = sf.nn.LIF(backend=backend, carry_state=True)
    ref = sf.nn.LIF(backend=backend, carry_state=True).double()
    m(x)
    ref(x.double())
    m.double()
    assert m.state.v.dtype == torch.float64
    torch.testing.assert_close(m(x.double()), ref(x.double()))
    m.float()
    with pytest.raises(ValueError, match="state.v must have x's dtype torch.float64"):
        m(x.double())
    s = sf.nn.LIF(backend=backend)
    s.step(x[0])
    with pytest.raises(ValueError, match="carried state.v is .* torch.float32"):
        s.step(x[0].double())


@pytest.mark.parametrize("loss", ["sum", "sum_both", "transposed"])
def test_trace_gradient_of_any_layout(loss):
    # the recorded trace's gradient broadcast (v.sum()) or transposed is laid out before the kernel reads it
    g = torch.Generator().manual_seed(0)
    x0 = torch.randn(6, 2, 5, generator=g, dtype=torch.float64) + 0.5
    w = torch.randn(2, 6, 5, generator=g, dtype=torch.float64)
    grads = []
    for b in ("cpu", "reference"):
        m = sf.nn.LIF(backend=b, record=True)
        x = x0.clone().requires_grad_()
        z = m(x)
        v = m.trace.v
        {"sum": v.sum(), "sum_both": v.sum() + z.sum(), "transposed": (v.transpose(0, 1) * w).sum()}[loss].backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float64])


@pytest.mark.parametrize("name", ["LIF", "CubaLIF", "PLIF"])
def test_no_features(name):
    # N = 0 features (the kernels' work split divided by it: SIGFPE) and B = 0: empty outputs, zero gradients
    for shape in [(3, 2, 4, 0), (3, 0, 4)]:
        m = sf.nn.MODULES[name](backend="cpu", record=True)
        x = torch.randn(*shape, requires_grad=True)
        z = m(x)
        (z.sum() + m.trace[0].sum()).backward()
        assert z.shape == x.shape and x.grad.shape == x.shape
        assert all(p.grad is None or float(p.grad) == 0 for p in m.parameters())
    assert sf.nn.LIF(backend="cpu").step(torch.randn(2, 0)).shape == (2, 0)


@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_state_carried_from_inference_mode_trains(mode):
    # a carried state made under torch.inference_mode (evaluation) then a training call: as the reference
    grads = []
    for b in ("cpu", "reference"):
        m = sf.nn.LIF(backend=b, carry_state=True)
        with torch.inference_mode():
            m(torch.ones(4, 2, 3)) if mode == "sequence" else m.step(torch.ones(2, 3))
        x = (torch.arange(24.0).view(4, 2, 3) / 10).requires_grad_()
        (m(x) if mode == "sequence" else m.step(x[0])).sum().backward()
        grads.append(x.grad)
    torch.testing.assert_close(grads[0], grads[1], **TOL[torch.float32])


def test_forward_steps_of_much_arithmetic_run_as_two_loops():
    """A forward step with much arithmetic on a long chain runs as two loops over each block of SB
    neurons, the values the second needs crossing in small arrays (csource._staged), in the forward
    and in the backward's recomputation: EIF's (its exp, evaluated in the first loop, crosses alone)
    and XyloLIF's (two values cross). The reverse steps, and the forward steps of less work (LIF,
    Izhikevich), stay one loop."""
    def src(name, dtype=torch.float32):
        tr = cpu.trace(REGISTRY[name](), ATan(), dtype)
        return cpu.csource.source(tr, (False,) * tr.n_params)
    for dtype in (torch.float32, torch.float64):
        eif = src("EIF", dtype)
        assert eif.count("sf_c0[SB];") == 2 and "sf_c1[SB]" not in eif
        fwd = eif[eif.index("int sf_forward"): eif.index("void sf_backward")]
        first, second = fwd.split("n_exp = sf_c0[i - i0];")
        assert "sf_exp" in first.split("sf_c0[SB];")[1] and "sf_exp" not in second
    xylo = src("XyloLIF")
    assert xylo.count("sf_c1[SB];") == 2 and "sf_c2[SB]" not in xylo
    for s in (eif, xylo):
        assert "sf_c0" not in _reverse_loop(s)
    assert "sf_c0" not in src("LIF") and "sf_c0" not in src("Izhikevich")


@dataclass(frozen=True)
class _PowLIF(NeuronSpec):
    """Enough work (a pow) to be cut, but no cut in the middle of the chain carries anything."""

    state = ("v",)
    params = {"v_threshold": Param(1.0, "potential")}

    def step(self, x, s, p, fire):
        h = 0.9 * s[0] + x.abs() ** 2.7
        z = fire(h - p.v_threshold)
        return z, (h - p.v_threshold * z,)


@dataclass(frozen=True)
class _MixedLIF(NeuronSpec):
    """A float32 step with a float64 value in the middle of its chain, which the cut carries."""

    state = ("v",)
    params = {"v_threshold": Param(1.0, "potential")}

    def step(self, x, s, p, fire):
        d = x.double() / 3.0
        d = d / 7.0 + d / 11.0
        d = d / 13.0 + d / 17.0
        h = 0.9 * s[0] + (d * 1e9 - (d * 1e9).float().double()).float()
        z = fire(h - p.v_threshold)
        return z, (h - p.v_threshold * z,)


def test_a_cut_carries_at_least_one_value_in_its_own_type(monkeypatch):
    """A step whose cuts would carry nothing stays one loop (two loops would only add a pass), and a
    carried value keeps its C type: a double in a float kernel is carried as a double (as a float it
    lost the digits this step keeps), with the values of one loop."""
    def fwd(spec):
        tr = cpu.trace(spec, ATan(), torch.float32)
        src = cpu.csource.source(tr, (False,) * tr.n_params)
        return src[src.index("int sf_forward"): src.index("void sf_backward")]
    assert "sf_c0" not in fwd(_PowLIF())
    monkeypatch.setattr(cpu.csource, "STAGE_WORK", 0)
    monkeypatch.setattr(cpu.csource, "MAX_CARRY", 10 ** 6)
    assert "sf_c0" not in fwd(_PowLIF())
    assert "double sf_c0[SB];" in fwd(_MixedLIF())
    x = torch.rand(5, 2, 300, generator=torch.Generator().manual_seed(0))
    s0 = [torch.zeros(2, 300)]
    one, two, _ = _one_and_two_loops(_MixedLIF(), torch.float32, [torch.tensor([1.0])], x, s0, monkeypatch)
    assert len(one) == len(two) and all(torch.equal(a, b) for a, b in zip(one, two))
    assert one[1].abs().max() > 0


def _kernel_values(spec, dtype, params, x, s0):
    """Outputs, final states and every gradient of a freshly built cpu kernel, over segments of 4
    steps; and its source."""
    gen = torch.Generator().manual_seed(2)
    gz = torch.randn(x.shape, generator=gen, dtype=dtype)
    gs = [torch.randn(s.shape, generator=gen, dtype=dtype) for s in s0]
    k = cpu.Kernel(spec, ATan(), dtype, (False,) * len(params), None)
    k.K = 4
    z, final, _, saved = k.forward(x, s0, params, False, True)
    gx, gstate, gp = k.backward(x, s0, saved, params, gz, [g.clone() for g in gs], [None] * len(s0))
    return [z, *final, gx, *gstate, *gp], cpu.csource.source(k.tr, k.layout, k.want)


def _one_and_two_loops(spec, dtype, params, x, s0, monkeypatch, force=True):
    """``_kernel_values`` with each forward step as one loop and as two (every step forced when
    ``force``): (values of one, values of two, source of two)."""
    monkeypatch.setattr(cpu.csource, "STAGE_WORK", float("inf"))
    one, _ = _kernel_values(spec, dtype, params, x, s0)
    monkeypatch.setattr(cpu.csource, "STAGE_WORK", 0 if force else 80)
    if force:
        monkeypatch.setattr(cpu.csource, "MAX_CARRY", 10 ** 6)
    two, src = _kernel_values(spec, dtype, params, x, s0)
    return one, two, src


@pytest.mark.parametrize("neuron,dtype", [(n, torch.float32) for n in ("EIF", "XyloLIF", "Izhikevich", "CubaLIF",
                                                                    "ALIF")] + [("EIF", torch.float64)])
def test_two_loops_compute_the_same_bits(neuron, dtype, monkeypatch):
    """Any forward step cut in two loops (forced here for every neuron, however many values cross)
    computes bit for bit what one loop does: outputs, final states, and the gradients of x, the state
    and every parameter, over several segments and rows longer than a block."""
    from conftest import default_params, make_input, rest

    spec = REGISTRY[neuron]()
    params = [p.reshape(1) for p in default_params(REGISTRY[neuron], dtype)]
    shape = (9, 2, 300)
    x = make_input(neuron, shape, dtype, seed=1)
    s0 = [s.contiguous() for s in rest(spec, default_params(REGISTRY[neuron], dtype), shape[1:], dtype)]
    one, two, src = _one_and_two_loops(spec, dtype, params, x, s0, monkeypatch)
    assert src.count("sf_c0[SB];") == 2, "forward and recomputation each cut in two"
    assert len(one) == len(two)
    for a, b in zip(one, two):
        assert torch.equal(a, b)


def test_a_truth_value_crosses_between_the_two_loops(monkeypatch):
    """ExpGatedLIF's cheapest cut carries its gate, a comparison's truth value, in an int array: the
    values are those of one loop, bit for bit, and the reference's."""
    sys.path.insert(0, os.path.dirname(__file__))
    from custom_neurons import ExpGatedLIF

    spec, dtype = ExpGatedLIF(), torch.float64
    gen = torch.Generator().manual_seed(4)
    x = torch.rand(9, 2, 300, generator=gen, dtype=dtype) * 1.5
    s0 = [torch.rand(2, 300, generator=gen, dtype=dtype)]
    params = [torch.tensor([v.default], dtype=dtype) for v in spec.params.values()]
    one, two, src = _one_and_two_loops(spec, dtype, params, x, s0, monkeypatch, force=False)
    fwd = src[src.index("int sf_forward"): src.index("void sf_backward")]
    assert "int sf_c0[SB];" in fwd and "const int n_gt = sf_c0[i - i0];" in fwd
    assert len(one) == len(two) and all(torch.equal(a, b) for a, b in zip(one, two))
    gate = torch.exp(s0[0]) > params[1]
    assert gate.any() and not gate.all(), "the gate opens for some neurons only"
    out = _grads_both(spec, x, tuple(s0), [p.reshape(()) for p in params],
                      lambda z, s: (z * x).sum() + (s[0] ** 2).sum())
    for a, b in zip(out["cpu"], out["reference"]):
        torch.testing.assert_close(a, b, **TOL[dtype])


def test_a_clamps_gradient_mask_is_an_equality_with_the_clamp(monkeypatch):
    """clamp's gradient mask ``(a >= lo) & (a <= hi)`` is printed as ``clamp(a, lo, hi) == a`` where
    the step clamps ``a`` anyway (printer._clamped; XyloLIF's three saturating sums in its reverse
    step: backward 4-5 % faster): the same truth values inside, at and beyond the bounds, so the
    gradients are bit for bit those of the two comparisons, and the reference's. The input saturates:
    with the masks forced true the gradients differ."""
    import types

    from conftest import default_params, rest

    spec, dtype = REGISTRY["XyloLIF"](), torch.float32
    masks = lambda src: (len(re.findall(r"= \(n_clamp\w* == n_add\w*\);", _reverse_loop(src))),
                         len(re.findall(r"= \(n_ge\w* & n_le\w*\);", _reverse_loop(src))))
    gen = torch.Generator().manual_seed(5)
    # saturating sums: inputs up to twice the 16-bit range, both signs, and values exactly at a bound
    x = torch.randint(-65536, 65536, (9, 2, 300), generator=gen).to(dtype)
    x[::3, :, ::7] = 32767.0
    x[1::3, :, ::5] = -32768.0
    params = [p.reshape(1) for p in default_params(REGISTRY["XyloLIF"], dtype)]
    s0 = [s.contiguous() for s in rest(spec, default_params(REGISTRY["XyloLIF"], dtype), x.shape[1:], dtype)]
    eq, src = _kernel_values(spec, dtype, params, x, s0)
    # (the reverse loop is printed twice: streamed and not; the kept input sum's clamp is not evaluated there)
    assert masks(src) == (2 * 3, 2 * 1)
    monkeypatch.setattr(cpu.csource.printer, "RANGE_EQ", False)
    both, src = _kernel_values(spec, dtype, params, x, s0)
    assert masks(src) == (0, 2 * 4)
    assert len(eq) == len(both) and all(torch.equal(a, b) for a, b in zip(eq, both))
    monkeypatch.setattr(cpu.csource.printer, "RANGE_EQ", True)
    monkeypatch.setattr(cpu.csource.printer, "_clamped",   # prints (a == a): true but for NaN
                        lambda n, env: types.SimpleNamespace(name=n.args[0].args[0].name, args=(n.args[0].args[0],)))
    true, _ = _kernel_values(spec, dtype, params, x, s0)
    assert not all(torch.equal(a, b) for a, b in zip(eq, true)), "the input should saturate some sums"
    monkeypatch.undo()
    w = torch.randn(x.shape, generator=gen, dtype=dtype)
    out = _grads_both(spec, x, tuple(s0), [p.reshape(()) for p in params],
                      lambda z, s: (z * w).sum() + sum((v * v).sum() for v in s) * 1e-6)
    for a, b in zip(out["cpu"], out["reference"]):
        torch.testing.assert_close(a, b, **TOL[dtype])
