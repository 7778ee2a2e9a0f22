"""The fused CPU backend: C printed from the traced step, compiled once, cached on disk.

Kernels are plain C on raw pointers (no torch headers), compiled with the system C
compiler (``$CC``, else ``cc``/``gcc``) with OpenMP, and loaded with ctypes. The cache
directory is ``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge``; a kernel's file name is a
hash of its source, flags and compiler, so a changed definition recompiles by itself.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache
from pathlib import Path

import torch

from .. import _validation
from ..allocator import empty
from . import csource
from ._fused import FusedBackend, cache_dir, dims
from ._threads import threads
from .trace import UnsupportedGraph, trace

# -ffp-contract=off: every operation rounded on its own, as in the reference. -fno-math-errno
# and -fno-trapping-math change no result; without them gcc leaves loops with math calls or
# conditional selects scalar.
FLAGS = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC", "-ffp-contract=off", "-fno-math-errno",
         "-fno-trapping-math"]
# gcc vectorises with 256-bit registers even where the CPU has AVX-512. 512-bit ones made the kernels
# with many operations per element up to 30 % faster on an AVX-512 Xeon, and the memory-bound ones with
# few up to 16 % slower (benchmarks/RESULTS.md 19h): a neuron kernel takes WIDE when its traced
# forward and backward steps have at least WIDE_MIN_OPS operations; the sparse kernels always do.
# Each lane computes what it did before; without AVX-512 (or off x86) WIDE changes nothing.
WIDE = ["-mprefer-vector-width=512"] if os.uname().machine in ("x86_64", "amd64", "AMD64") else []
WIDE_MIN_OPS = 48
_DTYPES = (torch.float32, torch.float64)
_PARALLEL_MIN = 1 << 18  # elements of (T, B, N) below which one thread runs the call
# recomputed values (states and kept values, csource.step_values) per backward segment and thread, per
# state variable. 2 MiB measured 0-16 % faster per forward + backward than 512 KiB on an AMD host with
# 512 KiB L2 caches (fewer checkpoints written and read: two-state neurons gained most; benchmarks/
# RESULTS.md 19f), where 4 MiB was no faster for one state; on an Intel host with 2 MiB L2 caches, once
# backward kept values too, 4 MiB was 1-4 % faster than 2 MiB for the two-state neurons and 0-1 % slower
# for the one-state ones (RESULTS.md 19k): hence per state variable
SEGMENT_BYTES = 1 << 21


def _intel(cpuinfo: str = "/proc/cpuinfo") -> bool:
    """Whether the CPU is Intel's (``vendor_id`` in Linux's /proc/cpuinfo; False where it cannot tell)."""
    try:
        with open(cpuinfo) as f:
            return next((line for line in f if line.startswith("vendor_id")), "").split(":")[-1].strip() == "GenuineIntel"
    except OSError:
        return False


# Outputs (z, grad x) of at least this many bytes are written with streaming stores (csource._STREAM),
# on Intel CPUs only: there they made the neurons alone 5-21 % faster (RESULTS.md 19n); on an AMD EPYC
# (Zen 3) the same kernels ran 6-26 % slower streamed, forward 10-45 % (RESULTS.md 19p); elsewhere they
# were never measured. sys.maxsize: never.
STREAM_BYTES = 64 << 20 if _intel() else sys.maxsize


def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, else ``gcc`` (looked up once per CC and PATH)."""
    return _compiler(os.environ.get("CC"), os.environ.get("PATH"))


@lru_cache(maxsize=None)
def _compiler(cc_env: str | None, path: str | None) -> str | None:
    for cc in (cc_env, "cc", "gcc"):
        if cc and shutil.which(cc, path=path):
            return shutil.which(cc, path=path)
    return None


@lru_cache(maxsize=None)
def _compiler_id(cc: str) -> str:
    out = subprocess.run([cc, "--version"], capture_output=True, text=True)
    return out.stdout.splitlines()[0] if out.stdout else cc


def build(src: str, extra: list[str] | tuple[str, ...] = ()) -> ctypes.CDLL:
    """Compile ``src`` with ``FLAGS`` and ``extra`` (or reuse the cached library) and load it."""
    cc = compiler()
    if cc is None:
        raise RuntimeError("no C compiler found: install gcc or set CC")
    flags = [*FLAGS, *extra]
    h = hashlib.sha256("\n".join([src, " ".join(flags), _compiler_id(cc), os.uname().machine]).encode())
    so = cache_dir() / f"sf_{h.hexdigest()[:20]}.so"
    if not so.exists():  # concurrent builds of one source are harmless: the rename is atomic
        with tempfile.TemporaryDirectory(dir=so.parent) as tmp:
            c = Path(tmp) / "k.c"
            c.write_text(src)
            r = subprocess.run([cc, *flags, str(c), "-o", str(Path(tmp) / "k.so"), "-lm"],
                               capture_output=True, text=True)
            if r.returncode != 0:
                raise RuntimeError(f"compiling a generated kernel failed:\n{r.stderr[-2000:]}")
            os.replace(Path(tmp) / "k.so", so)
    return ctypes.CDLL(str(so))


def prebuild(items, workers: int | None = None) -> None:
    """Compile the kernels of ``(spec, surrogate, dtype, layout[, want])`` items in parallel,
    so that first calls find them cached (warm-up, test suites)."""
    traced = [(trace(spec, sur, dtype), rest) for spec, sur, dtype, *rest in items]
    with ThreadPoolExecutor(workers or os.cpu_count() or 1) as pool:
        list(pool.map(lambda a: build(csource.source(a[0], *a[1]), width(a[0])), traced))


def width(tr) -> list[str]:
    """The vector-width flags of a traced neuron's kernels: ``WIDE`` for at least ``WIDE_MIN_OPS``
    operations in its forward and backward steps together."""
    ops = sum(n.op == "call_function" for g in (tr.forward, tr.backward) for n in g.graph.nodes)
    return WIDE if ops >= WIDE_MIN_OPS else []


def segment_steps(values: int, states: int, itemsize: int, segment_bytes: int | None = None) -> int:
    """K, the steps of one backward segment (and the checkpoint interval): as many as fit
    ``states`` times ``segment_bytes`` (default ``SEGMENT_BYTES``) of ``values`` recomputed values
    per element and step (``csource.step_values``), per work item; at least 2."""
    size = (SEGMENT_BYTES if segment_bytes is None else segment_bytes) * states
    return max(2, size // (values * csource.CHUNK * itemsize))


class Kernel:
    """The compiled forward/backward pair for one spec, surrogate, dtype and parameter
    layout (which parameters are per-neuron vectors rather than scalars), and the
    gradients backward computes (``want``: x, then each parameter; default all).

    Backward recomputes: forward saves the state only every ``K`` steps (checkpoints,
    1/K of a full tensor per state variable), and backward rebuilds each K-step segment's
    states in a per-thread buffer of about ``SEGMENT_BYTES``. With ``record`` the trace is
    an output anyway, and backward reads it (K = 1)."""

    def __init__(self, spec, surrogate, dtype, layout: tuple[bool, ...], want: tuple[bool, ...] | None):
        self.tr = trace(spec, surrogate, dtype)
        self.layout, self.want = layout, want or (True,) * (1 + self.tr.n_params)
        self.reads_x, self.recompute = self.tr.backward_reads()[0], csource.recomputes(self.tr)
        self.K = segment_steps(csource.step_values(self.tr, self.want), self.tr.n_state, dtype.itemsize)
        self.lib = build(csource.source(self.tr, layout, self.want), width(self.tr))
        i64, i32, ptr, ptrs = ctypes.c_int64, ctypes.c_int, ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)
        self.lib.sf_forward.restype = ctypes.c_int
        self.lib.sf_forward.argtypes = [i64, i64, i64, i32, ptr, ptr, ptrs, ptrs, i64, i64, ptrs, i32]
        self.lib.sf_backward.restype = None
        self.lib.sf_backward.argtypes = [i64, i64, i64, i32, ptr, ptrs, ptrs, i64, ptrs, ptr, i64, i64, ptrs, ptrs,
                                         ptr, ptrs, i32]
        self._nulls = _ptrs([None] * self.tr.n_state)
        self._param_ptrs: dict[tuple, ctypes.Array] = {}   # streaming passes the same parameters each step

    def _nsave(self, T: int, record: bool, grad: bool) -> tuple[int, int]:
        """(K, number of saved states): the trace (K = 1) when recording, checkpoints every
        K steps when backward recomputes, else nothing."""
        if record:
            return 1, T
        if grad and self.recompute:
            return self.K, (T - 1) // self.K if T else 0
        return 1, 0

    def saved_shapes(self, x_shape, record: bool, grad: bool) -> list[tuple[int, ...]]:
        _, nsave = self._nsave(x_shape[0], record, grad)
        return [] if record or not nsave else [(self.tr.n_state, nsave, *x_shape[1:])]

    def forward(self, x, state, params, record: bool, grad: bool):
        """(z, final_state, trace, saved): ``saved`` is ``[checkpoints]``, one tensor of shape
        (n_state, nsave, B, ...) (one allocation: fewer holes in the heap), or ``[]`` (when
        recording, backward reads the trace instead)."""
        T, B, N = dims(x)
        z = empty(x.shape, x.dtype)
        final = [s.contiguous().clone() for s in state]
        K, nsave = self._nsave(T, record, grad)
        if record:
            saved = [empty(x.shape, x.dtype) for _ in state]
        else:
            block = empty((len(state), nsave, *x.shape[1:]), x.dtype) if nsave else None
            saved = list(block.unbind(0)) if nsave else [None] * len(state)
        bad = 0 if not x.numel() else self.lib.sf_forward(   # (B or N = 0: the work split would divide by 0)
            T, B, N, _threads(T * B * N), x.data_ptr(), z.data_ptr(), _ptrs(final),
            _ptrs(saved) if nsave else self._nulls, K, nsave, self._params(params), streams(z))
        if bad and _validation.enabled():
            raise _validation.not_finite("x")
        if record:
            return z, final, saved, []
        return z, final, [], ([block] if nsave else [])

    def backward(self, x, state, saved, params, gz, gstate, gtrace):
        """Reverse time; computes the gradients in ``want`` (``None`` for the others).
        ``saved`` is the trace (one (T, B, ...) tensor per state: K = 1) or ``[checkpoints]``."""
        T, B, N = dims(gz)
        if not self.recompute:
            K = max(T, 1)
        elif saved and saved[0].dim() == gz.dim():   # the recorded trace
            K = 1
        else:                                        # checkpoints (none when T <= K)
            K, saved = self.K, (saved[0].unbind(0) if saved else [])
        gx = empty(gz.shape, gz.dtype) if self.want[0] else None
        gp = [torch.empty(B * N, dtype=gz.dtype) if w else None for w in self.want[1:]]
        gz, gsT, gsB = _rows(gz)
        saved = list(saved) or [None] * len(state)
        if T * B * N:
            self.lib.sf_backward(T, B, N, _threads(T * B * N), _addr(x), _ptrs(state), _ptrs(saved), K,
                                 self._params(params), gz.data_ptr(), gsT, gsB, _ptrs(gstate), _ptrs(gtrace),
                                 _addr(gx), _ptrs(gp), streams(gx))
        return gx, gstate, gp

    def _params(self, params) -> ctypes.Array:
        key = tuple(p.data_ptr() for p in params)
        arr = self._param_ptrs.get(key)
        if arr is None:
            if len(self._param_ptrs) > 64:
                self._param_ptrs.clear()
            arr = self._param_ptrs[key] = _ptrs(params)
        return arr


def streams(out) -> int:
    """1 if the kernel writes ``out`` with streaming stores (``csource._STREAM``): at least
    ``STREAM_BYTES``, far more than the caches hold."""
    return int(out is not None and out.numel() * out.element_size() >= STREAM_BYTES)


def _rows(g):
    """``(base, sT, sB)``: ``g`` as rows of N contiguous values, row (t, b) at ``t * sT + b * sB``.
    A gradient broadcast over time and batch (that of ``sum()`` or ``mean()``) is read in
    place instead of being materialised."""
    T, B, N = dims(g)
    if g.is_contiguous() or T * B * N == 0:
        return g.contiguous(), B * N, N
    if g[0, 0].is_contiguous():
        return g, g.stride(0), g.stride(1)
    if g.stride(0) == 0 and g.stride(1) == 0:
        return g[0, 0].contiguous(), 0, 0
    return g.contiguous(), B * N, N


def _addr(t):
    return t.data_ptr() if t is not None else None


def _ptrs(ts):
    return (ctypes.c_void_p * max(1, len(ts)))(*[t.data_ptr() if t is not None else 0 for t in ts])


def _threads(numel: int) -> ctypes.c_int:
    """Threads for a call over ``numel`` elements of (T, B, N) (not the size of gz, which may
    be one broadcast row)."""
    return threads(numel, _PARALLEL_MIN)


class CPU(FusedBackend):
    name = "cpu"
    checks_finite = True  # the forward kernel reports a NaN or inf in x (see _validation)
    description = "fused C kernels generated from the neuron definition (OpenMP + SIMD)"

    def unavailable_reason(self, device, dtype):
        if device.type != "cpu":
            return f"runs on CPU tensors only, got device {device}"
        if dtype not in _DTYPES:
            return f"supports float32 and float64, got {dtype}"
        if compiler() is None:
            return "no C compiler found (install gcc or set CC)"
        return None

    def support_reason(self, spec, surrogate, dtype):
        return _support_reason(spec, surrogate, dtype)

    @staticmethod
    @lru_cache(maxsize=None)
    def kernel(spec, surrogate, dtype, layout, want=None) -> Kernel:
        return Kernel(spec, surrogate, dtype, layout, want)


@lru_cache(maxsize=None)
def _support_reason(spec, surrogate, dtype):
    """None if the C printer can emit the spec's step and its backward, else why not."""
    try:
        tr = trace(spec, surrogate, dtype)
        target = csource.c_target(dtype)
        csource.forward_source(tr, (False,) * tr.n_params, target)
        csource.backward_source(tr, (False,) * tr.n_params, target)
    except UnsupportedGraph as e:
        return str(e)
    return None


BACKEND = CPU()
kernel = CPU.kernel
