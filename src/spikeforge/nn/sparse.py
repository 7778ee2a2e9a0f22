"""``SpikeLinear``: a drop-in ``nn.Linear`` that skips the zeros of a binary spike input.

For ``x`` in {0, 1}, ``y[n] = b + sum(W[:, i] for i with x[n, i] = 1)``: only the weight
columns of active inputs are read and added, so the forward costs ``density x`` the dense
product. Backward is exact: ``grad W = grad_y^T x`` is a sum of sparse outer products (each
active (n, i) adds ``grad_y[n]`` to column ``i``), ``grad x = grad_y W`` stays dense (the
neuron layer before this one needs it at every position) and ``grad b = sum_n grad_y[n]``.

The sparse path is a small C kernel (compiled on first use with the fused CPU backend's
``build``, cached on disk). Per call: one pass counts each row's nonzeros and the entries
that are not 0 or 1; a second pass writes the active indices (CSR, kept for backward) and,
for blocks of rows, adds the active rows of ``W^T`` tile by tile (a tile of 8 vectors of the
output stays in registers; a block of rows reuses one column tile of ``W^T`` from cache). The
weight gradient runs over the same column tiles in parallel, so no two threads write one.

``mode``: ``SparseMode.DENSE`` always runs ``F.linear``; ``SparseMode.SPARSE`` always runs the
kernel and raises ``ValueError`` if the input holds a value other than 0 and 1 (the check is
part of the counting pass, free) or cannot run it (not a CPU float32/float64 tensor, no C
compiler); ``SparseMode.AUTO`` runs the counting pass and takes the sparse path only for a
{0, 1} input on CPU whose density is below the measured crossover (``CROSSOVER_FORWARD``
without a weight gradient, ``CROSSOVER_TRAIN`` with one) and whose product is not tiny
(``MIN_WORK``). ``module.last_path`` says which path ran ('dense' or 'sparse') and
``module.last_density`` the density it measured (``None`` when it did not count). Formulations measured and the crossovers: benchmarks/sparse_linear.py,
benchmarks/RESULTS_sparse.md.
"""
from __future__ import annotations

import ctypes
import enum
import logging
import math
from functools import lru_cache

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = ["SparseMode", "SpikeLinear", "spike_linear", "count_active",
           "CROSSOVER_FORWARD", "CROSSOVER_TRAIN", "MIN_WORK"]

log = logging.getLogger("spikeforge")

# Densities (fraction of nonzero inputs) below which the sparse path beats F.linear on this
# project's 2-core CPU (float32, 2 threads), measured by benchmarks/sparse_linear.py and
# recorded in benchmarks/RESULTS_sparse.md: the smallest crossover over the five sizes
# measured (8000x2048->2048, the largest, has it: 0.153 forward, 0.129 forward+backward with
# the input's gradient, 0.122 without), rounded down. Smaller layers cross at 0.18-0.34.
CROSSOVER_FORWARD = 0.15   # forward only (inference, or no gradient for the weight)
CROSSOVER_TRAIN = 0.12     # forward + backward with a weight gradient
# Below this many multiply-adds of the dense product (rows x in x out) AUTO stays dense without
# counting: per-call overheads win there (same benchmark, tiny sizes at 5 % density: 2M
# multiply-adds ran 0.6-0.7x as fast as dense, 13M and 17M ran 1.3-1.4x as fast).
MIN_WORK = 10_000_000
_PARALLEL_MIN = 1 << 16    # input elements below which one thread runs the kernels
_DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_ERRORS: set = set()


class SparseMode(enum.Enum):
    """How ``SpikeLinear`` computes its product."""
    AUTO = "auto"      # sparse below the measured crossover density, for {0, 1} CPU input
    DENSE = "dense"    # always F.linear
    SPARSE = "sparse"  # always the spike kernel; non-binary input raises ValueError


_HEADER = r"""
#include <stdint.h>
#include <string.h>
#define NV 8                                   /* vectors per output tile (in registers) */
#define RB 512                                 /* rows per block, sharing a W^T tile in cache */
#define UNROLL _Pragma("GCC unroll 8")
"""
_SOURCE = r"""
typedef scalar_t V_SUF __attribute__((vector_size(32), aligned(sizeof(scalar_t)), may_alias));
#define V V_SUF
#define TW (NV * (int64_t)(32 / sizeof(scalar_t)))

/* Per-row nonzero counts; returns how many entries are neither 0 nor 1 (NaN included). */
int64_t sf_spl_count_SUF(int64_t N, int64_t IN, int threads, const scalar_t* restrict x,
                         int64_t* restrict cnt) {
  int64_t bad = 0;
  #pragma omp parallel for num_threads(threads) schedule(static) reduction(+:bad)
  for (int64_t n = 0; n < N; n++) {
    const scalar_t* restrict xr = x + n * IN;
    int64_t k = 0, b = 0;
    for (int64_t i = 0; i < IN; i++) { k += xr[i] != 0; b += (xr[i] != 0) & (xr[i] != 1); }
    cnt[n] = k;
    bad += b;
  }
  return bad;
}

/* Writes the active indices of every row (CSR, offsets `off`) and y = x W^T + bias. */
void sf_spl_forward_SUF(int64_t N, int64_t IN, int64_t OUT, int threads,
                        const scalar_t* restrict x, const int64_t* restrict off,
                        int32_t* restrict idx, const scalar_t* restrict wt,
                        const scalar_t* restrict bias, scalar_t* restrict y) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n0 = 0; n0 < N; n0 += RB) {
    int64_t n1 = n0 + RB < N ? n0 + RB : N, j0 = 0;
    for (int64_t n = n0; n < n1; n++) {
      const scalar_t* restrict xr = x + n * IN;
      int32_t* restrict o = idx + off[n];
      for (int64_t i = 0, k = 0, end = off[n + 1] - off[n]; i < IN && k < end; i++) {
        o[k] = (int32_t)i;
        k += xr[i] != 0;
      }
    }
    for (; j0 + TW <= OUT; j0 += TW)
      for (int64_t n = n0; n < n1; n++) {
        V a[NV];
        UNROLL for (int u = 0; u < NV; u++) a[u] = bias ? ((const V*)(bias + j0))[u] : (V){0};
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          const V* w = (const V*)(wt + (int64_t)idx[q] * OUT + j0);
          UNROLL for (int u = 0; u < NV; u++) a[u] += w[u];
        }
        UNROLL for (int u = 0; u < NV; u++) ((V*)(y + n * OUT + j0))[u] = a[u];
      }
    for (int64_t n = n0; n < n1 && j0 < OUT; n++) {   /* the last, narrower tile */
      scalar_t* restrict yr = y + n * OUT;
      for (int64_t t = j0; t < OUT; t++) yr[t] = bias ? bias[t] : 0;
      for (int64_t q = off[n]; q < off[n + 1]; q++) {
        const scalar_t* restrict w = wt + (int64_t)idx[q] * OUT;
        for (int64_t t = j0; t < OUT; t++) yr[t] += w[t];
      }
    }
  }
}

/* gwt (IN, OUT) = x^T g from the CSR of x; output tiles in parallel, no two threads share one. */
void sf_spl_grad_weight_SUF(int64_t N, int64_t IN, int64_t OUT, int threads,
                            const int64_t* restrict off, const int32_t* restrict idx,
                            const scalar_t* restrict g, scalar_t* restrict gwt) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t j0 = 0; j0 < OUT; j0 += TW) {
    int64_t m = OUT - j0 < TW ? OUT - j0 : TW;
    for (int64_t i = 0; i < IN; i++) memset(gwt + i * OUT + j0, 0, m * sizeof(scalar_t));
    for (int64_t n = 0; n < N; n++) {
      const scalar_t* restrict gr = g + n * OUT + j0;
      if (m == TW) {
        V h[NV];
        UNROLL for (int u = 0; u < NV; u++) h[u] = ((const V*)gr)[u];
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          V* o = (V*)(gwt + (int64_t)idx[q] * OUT + j0);
          UNROLL for (int u = 0; u < NV; u++) o[u] += h[u];
        }
      } else {
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          scalar_t* restrict o = gwt + (int64_t)idx[q] * OUT + j0;
          for (int64_t t = 0; t < m; t++) o[t] += gr[t];
        }
      }
    }
  }
}
#undef V
#undef TW
"""


@lru_cache(maxsize=None)
def _build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes in one library), or why they cannot be built."""
    try:
        from ..kernels.cpu import build

        lib = build(_source())
    except Exception as e:  # no compiler, or it failed: reported, never silent
        return f"its kernel cannot be built: {type(e).__name__}: {e}"
    for s in _DTYPES.values():
        getattr(lib, f"sf_spl_count_{s}").restype = ctypes.c_int64
        getattr(lib, f"sf_spl_forward_{s}").restype = None
        getattr(lib, f"sf_spl_grad_weight_{s}").restype = None
    return lib


def _lib() -> ctypes.CDLL:
    lib = _build()
    if isinstance(lib, str):
        raise RuntimeError(f"SpikeLinear's sparse path: {lib}")
    return lib


def _source() -> str:
    return _HEADER + "".join(_SOURCE.replace("scalar_t", c).replace("_SUF", "_" + s)
                   for c, s in (("float", "f32"), ("double", "f64")))


def _unsupported(x: Tensor, weight: Tensor) -> str | None:
    """Why the sparse kernel cannot run on these tensors, or None."""
    if x.device.type != "cpu" or weight.device.type != "cpu":
        return f"it runs on CPU tensors only, got {x.device.type}"
    if x.dtype not in _DTYPES or weight.dtype != x.dtype:
        return f"it needs float32 or float64 input and weight of one dtype, got {x.dtype} and {weight.dtype}"
    lib = _build()
    return lib if isinstance(lib, str) else None


def _p(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def _threads(numel: int) -> int:
    return 1 if numel < _PARALLEL_MIN else torch.get_num_threads()


def count_active(x2: Tensor) -> tuple[Tensor, int]:
    """For a contiguous (N, in) CPU float tensor: CSR row offsets (N + 1,) of its nonzeros and
    the number of entries that are neither 0 nor 1. One pass over ``x2``."""
    n, k = x2.shape
    cnt = torch.empty(n, dtype=torch.int64)
    bad = getattr(_lib(), f"sf_spl_count_{_DTYPES[x2.dtype]}")(
        ctypes.c_int64(n), ctypes.c_int64(k), _threads(x2.numel()), _p(x2), _p(cnt))
    off = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(cnt, 0, out=off[1:])
    return off, int(bad)


class _SpikeLinearFn(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x2, off, weight, bias):
        (n, k), out = x2.shape, weight.shape[0]
        idx = torch.empty(int(off[-1]), dtype=torch.int32)
        y = torch.empty(n, out, dtype=x2.dtype)
        wt = weight.detach().t().contiguous()
        b = None if bias is None else bias.detach().contiguous()
        getattr(_lib(), f"sf_spl_forward_{_DTYPES[x2.dtype]}")(
            ctypes.c_int64(n), ctypes.c_int64(k), ctypes.c_int64(out), _threads(x2.numel()),
            _p(x2), _p(off), _p(idx), _p(wt), _p(b), _p(y))
        ctx.save_for_backward(off, idx, weight)
        ctx.in_features = k
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, gy):
        off, idx, weight = ctx.saved_tensors
        gy = gy.contiguous()
        gx = gy @ weight if ctx.needs_input_grad[0] else None
        gw = gb = None
        if ctx.needs_input_grad[2]:
            (n, out), k = gy.shape, ctx.in_features
            gwt = torch.empty(k, out, dtype=gy.dtype)
            getattr(_lib(), f"sf_spl_grad_weight_{_DTYPES[gy.dtype]}")(
                ctypes.c_int64(n), ctypes.c_int64(k), ctypes.c_int64(out), _threads(gy.numel()),
                _p(off), _p(idx), _p(gy), _p(gwt))
            gw = gwt.t()
        if ctx.needs_input_grad[3]:
            gb = gy.sum(0)
        return gx, None, gw, gb


def _flat(x: Tensor, weight: Tensor) -> Tensor:
    if x.dim() == 0 or x.shape[-1] != weight.shape[1]:
        raise ValueError(f"input must have shape (..., {weight.shape[1]}), got {tuple(x.shape)}")
    return x.reshape(math.prod(x.shape[:-1]), x.shape[-1]).contiguous()


def _sparse(x: Tensor, x2: Tensor, off: Tensor, weight: Tensor, bias: Tensor | None) -> Tensor:
    y = _SpikeLinearFn.apply(x2, off, weight, bias)
    return y.reshape(*x.shape[:-1], weight.shape[0])


def spike_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None,
                 mode: SparseMode = SparseMode.AUTO) -> tuple[Tensor, str, float | None]:
    """``F.linear(x, weight, bias)`` computed as ``mode`` says; returns
    ``(y, path, density)`` with ``path`` 'dense' or 'sparse' and the measured density of
    nonzero inputs (``None`` when it was not counted)."""
    if not isinstance(mode, SparseMode):
        raise TypeError(f"mode must be a SparseMode, got {mode!r}")
    if mode is SparseMode.DENSE or (mode is SparseMode.AUTO and x.numel() * weight.shape[0] < MIN_WORK):
        return F.linear(x, weight, bias), "dense", None
    reason = _unsupported(x, weight)
    if reason is not None:
        if mode is SparseMode.SPARSE:
            raise ValueError(f"SpikeLinear's sparse path cannot run: {reason}")
        if reason not in _ERRORS:
            _ERRORS.add(reason)
            log.warning("spikeforge: SpikeLinear runs dense (sparse path: %s)", reason)
        return F.linear(x, weight, bias), "dense", None
    x2 = _flat(x, weight)
    off, bad = count_active(x2)
    density = int(off[-1]) / max(1, x2.numel())
    if mode is SparseMode.SPARSE:
        if bad:
            raise ValueError(f"SpikeLinear's sparse path needs binary input (every value 0 or 1); "
                             f"{bad} of {x2.numel()} values are neither (use SparseMode.AUTO or DENSE)")
        return _sparse(x, x2, off, weight, bias), "sparse", density
    train = torch.is_grad_enabled() and weight.requires_grad
    if bad or density >= (CROSSOVER_TRAIN if train else CROSSOVER_FORWARD):
        return F.linear(x, weight, bias), "dense", density
    return _sparse(x, x2, off, weight, bias), "sparse", density


class SpikeLinear(nn.Linear):
    """``nn.Linear`` (same parameters, initialisation and state dict) whose product skips the
    zeros of a binary spike input ``(..., in_features)``, e.g. ``(T, B, in)`` or ``(N, in)``.

    ``mode``: ``SparseMode.AUTO`` (sparse below the measured crossover density, for {0, 1}
    input on CPU and products of at least ``MIN_WORK`` multiply-adds), ``DENSE`` or ``SPARSE`` (raises ``ValueError`` on input that is not all 0/1).
    After each call ``last_path`` is 'dense' or 'sparse' and ``last_density`` the measured
    fraction of nonzero inputs (``None`` if not counted)."""

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 mode: SparseMode = SparseMode.AUTO, device=None, dtype=None) -> None:
        if not isinstance(mode, SparseMode):
            raise TypeError(f"mode must be a SparseMode, got {mode!r}")
        super().__init__(in_features, out_features, bias=bias, device=device, dtype=dtype)
        self.mode = mode
        self.last_path: str | None = None
        self.last_density: float | None = None

    def forward(self, x: Tensor) -> Tensor:
        y, self.last_path, self.last_density = spike_linear(x, self.weight, self.bias, self.mode)
        return y

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, mode={self.mode.name}"
