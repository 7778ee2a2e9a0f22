"""Sparse spiking backward (Perez-Nieves & Goodman, "Sparse Spiking Gradient Descent",
NeurIPS 2021): the backward pass of a Linear synapse fused with its neuron, computed from
the *active* entries only, those where the surrogate derivative is nonzero.

What the paper computes (read from the paper and its reference implementation; no code
taken): with ``u[t] = h[t] - v_threshold`` the argument of the spike function, an entry
``(t, b, j)`` is active when ``|u| < B`` (the paper: ``B_th < v < 2 v_th - B_th``) and the
surrogate is taken as zero elsewhere. The reset is not differentiated (its spike is a
constant in the backward). Under these two choices the gradient is *exact*, and sparse:

* ``ds = grad_z * g(u)`` is nonzero only at active entries (``g`` the surrogate derivative);
* the membrane adjoint follows the leak backwards through time, ``dh[t] = ds[t] +
  gate[t] * a * dh[t+1]`` (``a`` the leak ``dh[t+1]/dv[t]``; ``gate`` is 1, or the slope of
  the detached reset at a spike: 0 for a hard reset, 1 for a soft one); it is not dropped;
* the synaptic current's gradient is ``gI = c * dh`` (``c = dh/dI``); the weight gradient
  ``gW = gI^T x`` and the input gradient ``gx = gI W`` are needed by the previous layer only
  where *its* surrogate is nonzero, so ``gx`` is computed only at the previous layer's
  active entries (the paper's "active input" set) and left 0 elsewhere.

Here: the forward runs the neuron's own fused kernel and records the active set compactly
(CSR over the (t, b) rows: column indices and the surrogate derivative there); the backward
is one reverse scan of ``dh`` (C, O(T B N), no recomputation), ``gW`` by scattering the
input's active entries (``kernels.sparse.grad_weight``, O(nnz(x) N)) for a {0, 1} input,
and ``gx`` by one dot product per active entry of the previous layer (O(|A_prev| N)).

Which neurons: single-state spiking neurons whose sub-threshold step is affine in the
membrane and the input (``h = a v + c I + d``: IF, LIF in both input forms, either reset);
``a``, ``c`` and the reset's slope are read from the neuron's own ``step`` by probing it
(and the probe checks the affinity), so no neuron is named here. Others (several state
variables, a nonlinear membrane, learnable parameters) are refused with an error naming
them. Which surrogates: those with bounded support (``Surrogate.support``: ``Triangle``,
``PiecewiseQuadratic``) give the dense gradient exactly; for the others a ``cutoff`` must
be given, and the gradient is that of the surrogate truncated to ``|u| < cutoff``.
"""
from __future__ import annotations

import ctypes
from ctypes import c_int64
from functools import lru_cache

import torch
from torch import Tensor

from ..allocator import empty
from ._threads import threads
from .sparse import DTYPES, load

__all__ = ["build", "linear_form", "cutoff_of", "active_set", "spikes_csr", "gated", "by_neuron", "leak_trace", "uniform_leak", "backward",
           "NotSparse"]

_PARALLEL_MIN = 1 << 16
#: the active test is |u| < support * (1 + SLACK): a boundary entry that rounding puts just
#: outside is kept (its exact surrogate value, possibly 0, is used), never dropped
SLACK = 1e-6


class NotSparse(ValueError):
    """A neuron, surrogate or parameter the sparse backward cannot take (the message says which)."""


_SOURCE = r"""
/* Per row of u (R, N): how many entries have |u| < w. */
void sf_sbw_count_SUF(int64_t R, int64_t N, int threads, const scalar_t* restrict u, scalar_t w,
                      int64_t* restrict cnt) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < R; r++) {
    const scalar_t* restrict ur = u + r * N;
    int64_t k = 0;
    for (int64_t j = 0; j < N; j++) k += (ur[j] < w) & (ur[j] > -w);
    cnt[r] = k;
  }
}

/* The columns and values of those entries, row by row at the offsets `off`. */
void sf_sbw_compact_SUF(int64_t R, int64_t N, int threads, const scalar_t* restrict u, scalar_t w,
                        const int64_t* restrict off, int32_t* restrict idx, scalar_t* restrict uk) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < R; r++) {
    const scalar_t* restrict ur = u + r * N;
    int64_t k = off[r];
    for (int64_t j = 0; j < N && k < off[r + 1]; j++)
      if ((ur[j] < w) & (ur[j] > -w)) { idx[k] = (int32_t)j; uk[k] = ur[j]; k++; }
  }
}

/* The input filtered by the leak: tr[t, b] = a tr[t - 1, b] + x[t, b] (rows r = t * B + b). */
void sf_sbw_trace_SUF(int64_t T, int64_t B, int64_t IN, int threads, scalar_t a,
                      const scalar_t* restrict x, scalar_t* restrict tr) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < B; b++)
    for (int64_t t = 0; t < T; t++) {
      const scalar_t* restrict xr = x + (t * B + b) * IN;
      scalar_t* restrict o = tr + (t * B + b) * IN;
      if (t == 0) for (int64_t i = 0; i < IN; i++) o[i] = xr[i];
      else { const scalar_t* restrict p = o - B * IN; for (int64_t i = 0; i < IN; i++) o[i] = a * p[i] + xr[i]; }
    }
}

typedef scalar_t V_SUF __attribute__((vector_size(32), aligned(sizeof(scalar_t)), may_alias));
#define V V_SUF
#define VW ((int64_t)(32 / sizeof(scalar_t)))

/* gW (N, IN) from the coefficients the backward recorded: for each neuron j (in parallel), over its
   active entries k (perm, grouped by j at joff): gW[j] += coef[k] tr[rows[k]] - fval[k] tr[frow[k]]
   (the second term where frow[k] >= 0). Row j stays in cache while its entries add up. */
void sf_sbw_gw_SUF(int64_t N, int64_t IN, int threads, const int64_t* restrict joff,
                   const int64_t* restrict perm, const int64_t* restrict rows,
                   const scalar_t* restrict coef, const scalar_t* restrict fval,
                   const int32_t* restrict frow, const scalar_t* restrict tr, scalar_t* restrict gw) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 4)
  for (int64_t j = 0; j < N; j++) {
    scalar_t* restrict o = gw + j * IN;
    for (int64_t i = 0; i < IN; i++) o[i] = 0;
    for (int64_t q = joff[j]; q < joff[j + 1]; q++) {
      int64_t k = perm[q];
      scalar_t e = coef[k];
      if (e != 0) {
        const scalar_t* restrict x1 = tr + rows[k] * IN;
        for (int64_t i = 0; i < IN; i++) o[i] += e * x1[i];
      }
      if (frow[k] >= 0) {
        const scalar_t* restrict x0 = tr + (int64_t)frow[k] * IN;
        scalar_t f = fval[k];
        for (int64_t i = 0; i < IN; i++) o[i] -= f * x0[i];
      }
    }
  }
}

static inline scalar_t dot_SUF(const scalar_t* restrict w, const scalar_t* restrict g, int64_t N) {
  V acc0 = {0}, acc1 = {0};
  int64_t j = 0;
  for (; j + 2 * VW <= N; j += 2 * VW) {
    acc0 += *(const V*)(w + j) * *(const V*)(g + j);
    acc1 += *(const V*)(w + j + VW) * *(const V*)(g + j + VW);
  }
  acc0 += acc1;
  scalar_t s = 0;
  for (int u = 0; u < VW; u++) s += acc0[u];
  for (; j < N; j++) s += w[j] * g[j];
  return s;
}

/* The whole backward, one pass per batch row b in reverse time, gI never leaving the cache:
   dh = gate * dv + (ds at the active entries of row r = (t, b)), gate 1, or g1 at the spikes
   (CSR soff/sidx; none given: no gate); gI = c dh; dv = a dh. Then, from gI: the bias gradient, the weight gradient
   (gwt[i] += gI for each active input i of row r, CSR xoff/xidx; or gI is written to `gi` for a
   dense product when xoff is NULL), and gx[r, i] = dot(W^T[i], gI) at the previous layer's active
   entries (CSR poff/pidx; none when poff is NULL). Each thread adds into its own slice of
   gwt_p (threads, IN, N) and gb_p (threads, N), zeroed by the caller; dv (B, N) holds the final
   state's gradient. */
void sf_sbw_backward_SUF(int64_t T, int64_t B, int64_t N, int64_t IN, int threads,
                         const int64_t* restrict off, const int32_t* restrict idx,
                         const scalar_t* restrict sg, const scalar_t* restrict gz,
                         const scalar_t* restrict a, const scalar_t* restrict c,
                         const scalar_t* restrict g1, const int64_t* restrict xoff, const int32_t* restrict xidx,
                         const int64_t* restrict poff, const int32_t* restrict pidx,
                         int hard, const int64_t* restrict soff, const int32_t* restrict sidx,
                         const scalar_t* restrict apow, scalar_t* restrict coef, scalar_t* restrict fval,
                         int32_t* restrict frow, int64_t* restrict lastk_p,
                         const scalar_t* restrict wt, scalar_t* restrict dv,
                         scalar_t* restrict gwt_p, scalar_t* restrict gb_p,
                         scalar_t* restrict gx, scalar_t* restrict gi, scalar_t* restrict work) {
  #pragma omp parallel num_threads(threads)
  {
    FTZ_ON
    int tid = omp_get_thread_num();
    scalar_t* restrict gw = gwt_p ? gwt_p + (int64_t)tid * IN * N : 0;
    int64_t* restrict lastk = lastk_p ? lastk_p + (int64_t)tid * 2 * N : 0;
    int64_t* restrict ptime = lastk ? lastk + N : 0;
    scalar_t* restrict gb = gb_p + (int64_t)tid * N;
    scalar_t* restrict h = work + (int64_t)tid * 2 * N;
    scalar_t* restrict pend = h + N;
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < B; b++) {
      scalar_t* restrict d = dv + b * N;
      for (int64_t j = 0; j < N; j++) pend[j] = 0;
      for (int64_t t = T - 1; t >= 0; t--) {
        int64_t r = t * B + b;
        for (int64_t j = 0; j < N; j++) h[j] = d[j];
        if (soff)   /* the detached reset's slope at the spikes of row r (CSR soff/sidx) */
          for (int64_t q = soff[r]; q < soff[r + 1]; q++) h[sidx[q]] *= g1[sidx[q]];
        if (coef && hard)   /* a spike at t ends the segment of the entries after it: their coefficients
                               decayed to t (pend, kept at time ptime), times tr[t], are subtracted */
          for (int64_t q = soff[r]; q < soff[r + 1]; q++) {
            int64_t j = sidx[q];
            if (pend[j] != 0) {
              fval[lastk[j]] = pend[j] * apow[ptime[j] - t];
              frow[lastk[j]] = (int32_t)r;
              pend[j] = 0;
            }
          }
        const scalar_t* restrict gzr = gz + r * N;
        for (int64_t k = off[r]; k < off[r + 1]; k++) {
          int64_t j = idx[k];
          scalar_t ds = gzr[j] * sg[k];
          h[j] += ds;
          if (coef) {   /* gW[j] += c ds tr[t] (the input filtered by the leak up to t): sf_sbw_gw */
            scalar_t e = c[j] * ds;
            coef[k] = e;
            frow[k] = -1;
            if (hard && e != 0) {
              pend[j] = pend[j] != 0 ? pend[j] * apow[ptime[j] - t] + e : e;
              ptime[j] = t;
              lastk[j] = k;
            }
          }
        }
        for (int64_t j = 0; j < N; j++) { scalar_t u = h[j]; h[j] = c[j] * u; d[j] = a[j] * u; gb[j] += h[j]; }
        if (gi) for (int64_t j = 0; j < N; j++) gi[r * N + j] = h[j];
        if (xoff)
          for (int64_t q = xoff[r]; q < xoff[r + 1]; q++) {
            scalar_t* restrict o = gw + (int64_t)xidx[q] * N;
            for (int64_t j = 0; j < N; j++) o[j] += h[j];
          }
        if (poff)
          for (int64_t k = poff[r]; k < poff[r + 1]; k++)
            gx[r * IN + pidx[k]] = dot_SUF(wt + (int64_t)pidx[k] * N, h, N);
      }
    }
    FTZ_OFF
  }
}
#undef V
#undef VW
"""
# FTZ_ON/OFF: the backward's adjoints decay geometrically through the leak; where one would become
# subnormal (|x| < 1.2e-38 in float32) it is flushed to 0, which costs nothing instead of a microcode
# assist per operation (measured: the hard-reset bookkeeping ran 5x slower without it)
_HEADER = r"""
#include <stdint.h>
#include <omp.h>
#if defined(__SSE2__)
#include <xmmintrin.h>
#define FTZ_ON unsigned int sf_csr_ = _mm_getcsr(); _mm_setcsr(sf_csr_ | 0x8040);
#define FTZ_OFF _mm_setcsr(sf_csr_);
#else
#define FTZ_ON
#define FTZ_OFF
#endif
"""


@lru_cache(maxsize=None)
def build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes, one library, the loader of ``kernels.sparse``), or why not."""
    return load(_HEADER, _SOURCE, {"sf_sbw_count": None, "sf_sbw_compact": None, "sf_sbw_trace": None,
                                   "sf_sbw_backward": None, "sf_sbw_gw": None})


def _fn(name: str, dtype: torch.dtype):
    lib = build()
    if isinstance(lib, str):
        raise RuntimeError(f"sparse spiking backward: {lib}")
    return getattr(lib, f"sf_sbw_{name}_{DTYPES[dtype]}")


def _p(t: Tensor) -> ctypes.c_void_p:
    return ctypes.c_void_p(t.data_ptr())


def _name(spec) -> str:
    return type(spec).__name__


def linear_form(spec, params, n: int, dtype: torch.dtype) -> tuple[Tensor, Tensor, Tensor]:
    """``(a, c, g1)``, each (n,): the neuron's step is ``h = a v + c I + d`` below threshold and
    the detached reset has slope ``g1`` in ``h`` at a spike. Read by probing ``spec.step`` (in
    float64) and checked at random points; raises ``NotSparse`` naming the neuron otherwise."""
    if not spec.spiking or len(spec.state) != 1:
        raise NotSparse(f"{_name(spec)}: the sparse backward takes single-state spiking neurons (IF, LIF); "
                        f"{_name(spec)} has state {spec.state} and spiking={spec.spiking}")
    for name, p in zip(spec.params, params):
        if isinstance(p, Tensor) and p.requires_grad:
            raise NotSparse(f"{_name(spec)}: parameter {name} requires a gradient, which the sparse backward "
                            f"does not compute; detach it or use the dense backward")
    p64 = type(params)(*(torch.as_tensor(p).detach().double().expand(n) for p in params))

    def h(v, x, spikes: bool):
        fire = (lambda u: torch.ones_like(u)) if spikes else (lambda u: torch.zeros_like(u))
        return spec.step(x + torch.zeros(n, dtype=torch.float64), (v + torch.zeros(n, dtype=torch.float64),),
                         p64, fire)[1][0]

    d = h(0.0, 0.0, False)
    a, c = h(1.0, 0.0, False) - d, h(0.0, 1.0, False) - d
    g = torch.Generator().manual_seed(0)
    v, x = torch.randn(n, generator=g, dtype=torch.float64), torch.randn(n, generator=g, dtype=torch.float64)
    err = (h(v, x, False) - (a * v + c * x + d)).abs()
    if not bool((err <= 1e-9 * (1 + (a * v).abs() + (c * x).abs() + d.abs())).all()):
        raise NotSparse(f"{_name(spec)}: its membrane step is not affine in the membrane and the input, so "
                        f"the adjoint does not reduce to a leak; the sparse backward takes IF/LIF-type neurons")
    r0 = h(0.0, 0.0, True)
    sv, sx = h(1.0, 0.0, True) - r0, h(0.0, 1.0, True) - r0
    g1 = torch.where(a.abs() >= c.abs(), sv / torch.where(a == 0, 1.0, a), sx / torch.where(c == 0, 1.0, c))
    return a.to(dtype), c.to(dtype), g1.to(dtype)


def cutoff_of(surrogate, cutoff: float | None) -> float:
    """The half-width of the active set: ``cutoff`` if given (a positive number), else the
    surrogate's bounded ``support``; a surrogate without one and no cutoff is refused."""
    if cutoff is not None:
        if isinstance(cutoff, bool) or not isinstance(cutoff, (int, float)) or not cutoff > 0:
            raise ValueError(f"cutoff must be a positive number, got {cutoff!r}")
        return float(cutoff)
    if surrogate.support is None:
        raise NotSparse(f"{surrogate!r} has no bounded support: give cutoff= (the gradient is then that of the "
                        f"surrogate set to 0 where |v - v_threshold| >= cutoff) or use Triangle/PiecewiseQuadratic")
    return float(surrogate.support)


def _band(u2: Tensor, centre: float, w: float) -> tuple[Tensor, Tensor, Tensor]:
    """CSR ``(off, idx, values)`` of the entries of ``u2`` (R, N) with ``|u - centre| < w``."""
    u2 = (u2 - centre if centre else u2).contiguous()
    R, N = u2.shape
    w, th = u2.new_tensor(w).item(), threads(u2.numel(), _PARALLEL_MIN)
    scalar = ctypes.c_float if u2.dtype == torch.float32 else ctypes.c_double
    cnt = torch.empty(R, dtype=torch.int64)
    _fn("count", u2.dtype)(c_int64(R), c_int64(N), th, _p(u2), scalar(w), _p(cnt))
    off = torch.zeros(R + 1, dtype=torch.int64)
    torch.cumsum(cnt, 0, out=off[1:])
    idx = torch.empty(int(off[-1]), dtype=torch.int32)
    vals = torch.empty(int(off[-1]), dtype=u2.dtype)
    _fn("compact", u2.dtype)(c_int64(R), c_int64(N), th, _p(u2), scalar(w), _p(off), _p(idx), _p(vals))
    return off, idx, vals


def spikes_csr(z: Tensor) -> tuple[Tensor, Tensor]:
    """CSR ``(off, idx)`` over the T * B rows of the spikes (entries equal to 1) of ``z`` (T, B, N)."""
    off, idx, _ = _band(z.reshape(-1, z.shape[-1]), 1.0, 0.5)
    return off, idx


def active_set(u: Tensor, surrogate, width: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(off, idx, sg)`` for ``u`` (T, B, N), the spike function's argument: the CSR over the
    T*B rows of the entries with ``|u| < width`` (int64 offsets, int32 columns) and the
    surrogate derivative there (zero where ``|u| >= width`` even if the surrogate is not)."""
    T, B, N = u.shape
    off, idx, uk = _band(u.reshape(T * B, N), 0.0, width * (1 + SLACK))
    sg = torch.where(uk.abs() < width, surrogate.grad(uk), torch.zeros_like(uk))
    return off, idx, sg.contiguous()


def _opt(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def leak_trace(x2: Tensor, T: int, B: int, a: float) -> Tensor:
    """``tr`` (T * B, IN): the input filtered by the leak, ``tr[t] = a tr[t - 1] + x[t]``."""
    x2 = x2.contiguous()
    tr = empty(tuple(x2.shape), x2.dtype)
    scalar = ctypes.c_float if x2.dtype == torch.float32 else ctypes.c_double
    _fn("trace", x2.dtype)(c_int64(T), c_int64(B), c_int64(x2.shape[1]), threads(x2.numel(), _PARALLEL_MIN),
                           scalar(a), _p(x2), _p(tr))
    return tr


def by_neuron(off: Tensor, idx: Tensor, N: int) -> tuple[Tensor, Tensor, Tensor]:
    """``(joff, perm, rows)``: the active entries grouped by neuron (``perm[joff[j]:joff[j+1]]`` are
    neuron j's) and the row of each entry."""
    joff = torch.zeros(N + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(idx, minlength=N), 0, out=joff[1:])
    perm = torch.sort(idx, stable=True)[1]
    rows = torch.repeat_interleave(torch.arange(off.numel() - 1), off.diff())
    return joff, perm, rows


def gated(g1: Tensor) -> bool:
    """Whether the adjoint changes at a spike (a reset slope other than 1): backward then reads the
    spikes' CSR."""
    return not bool((g1 == 1).all())


def uniform_leak(a: Tensor, g1: Tensor) -> float | None:
    """The leak ``a`` when the weight gradient can run from the active set and a leak trace of the
    input: one leak for all neurons and a reset slope of 0 (hard) or 1 (soft/none); else None."""
    if not (bool((a == a[0]).all()) and bool((g1 == g1[0]).all()) and float(g1[0]) in (0.0, 1.0)):
        return None
    return float(a[0])


def backward(gz: Tensor, spikes: tuple | None, active: tuple, coef: tuple, weight: Tensor, x_csr: tuple | None,
             prev: tuple | None, want_gi: bool, by_trace: tuple | None = None) -> tuple:
    """``(gI or None, gW or None, gb, gx or None)`` for gz (T, B, N); ``spikes`` = (off, idx), the
    spikes' CSR (``spikes_csr``; ``None`` when the reset's slope is 1), ``active`` = (off, idx,
    sg) of this layer, ``coef`` = (a, c, g1) (``linear_form``). The weight gradient: with
    ``by_trace`` = (tr, joff, perm, rows): the leak trace of the input (``leak_trace``) and the
    active entries grouped by neuron (``by_neuron``), from the active entries
    (O(|A| IN); with a hard reset the entries between two spikes share one correction at the
    earlier spike, which stops the adjoint);
    else with ``x_csr`` = (off, idx) of a {0, 1} input by scattering the input's spikes
    (O(nnz(x) N)); else ``want_gi`` returns ``gI`` (R, N) for a dense product. ``prev`` = (off,
    idx) of the previous layer's active set gives ``gx`` (R, IN), exact there and 0 elsewhere."""
    T, B, N = gz.shape
    IN, dt = weight.shape[1], gz.dtype
    (off, idx, sg), (a, c, g1) = active, (t.contiguous() for t in coef)
    gz = gz.contiguous()
    wt = weight.detach().t().contiguous() if prev is not None else gz   # (W^T is read only for gx)
    nt = threads(gz.numel() * max(1, IN // 16), _PARALLEL_MIN).value
    if by_trace is not None:
        x_csr = None
    gwt = torch.zeros(nt, IN, N, dtype=dt) if x_csr is not None else None
    hard, nA = ctypes.c_int(int(float(g1[0]) == 0)), idx.numel()
    coef, fval = (torch.empty(nA, dtype=dt), torch.empty(nA, dtype=dt)) if by_trace is not None else (None, None)
    frow = torch.empty(nA, dtype=torch.int32) if by_trace is not None else None
    lastk = torch.empty(nt, 2 * N, dtype=torch.int64) if by_trace is not None else None
    tr, joff, perm, rows = by_trace if by_trace is not None else (None,) * 4
    soff, sidx = spikes if spikes is not None else (None, None)
    apow = (a[0].double() ** torch.arange(T + 1, dtype=torch.float64)).to(dt) if by_trace is not None else None
    gb, work, dv = torch.zeros(nt, N, dtype=dt), torch.empty(nt, 2 * N, dtype=dt), torch.zeros(B, N, dtype=dt)
    gx = empty((T * B, IN), dt).zero_() if prev is not None else None   # pooled: no fresh page faults
    gi = empty((T * B, N), dt) if want_gi else None
    xo, xi = x_csr if x_csr is not None else (None, None)
    po, pi = prev if prev is not None else (None, None)
    _fn("backward", dt)(c_int64(T), c_int64(B), c_int64(N), c_int64(IN), ctypes.c_int(nt), _p(off), _p(idx),
                        _p(sg), _p(gz), _p(a), _p(c), _p(g1), _opt(xo), _opt(xi), _opt(po), _opt(pi),
                        hard, _opt(soff), _opt(sidx), _opt(apow), _opt(coef), _opt(fval), _opt(frow),
                        _opt(lastk),
                        _p(wt), _p(dv), _opt(gwt), _p(gb), _opt(gx), _opt(gi), _p(work))
    gW = gwt.sum(0).t() if gwt is not None else None
    if by_trace is not None:
        gW = torch.empty(N, IN, dtype=dt)
        _fn("gw", dt)(c_int64(N), c_int64(IN), threads(nA * IN, _PARALLEL_MIN), _p(joff), _p(perm), _p(rows),
                      _p(coef), _p(fval), _p(frow), _p(tr), _p(gW))
    return gi, gW, gb.sum(0), gx
