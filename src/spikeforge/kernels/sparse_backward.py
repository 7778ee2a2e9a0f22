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

from ._threads import threads
from .sparse import DTYPES, load

__all__ = ["build", "linear_form", "active_set", "adjoint_scan", "grad_input_at", "NotSparse"]

_PARALLEL_MIN = 1 << 16
#: the active test is |u| < support * (1 + SLACK): a boundary entry that rounding puts just
#: outside is kept (its exact surrogate value, possibly 0, is used), never dropped
SLACK = 1e-6


class NotSparse(ValueError):
    """A neuron, surrogate or parameter the sparse backward cannot take (the message says which)."""


_SOURCE = r"""
typedef scalar_t V_SUF __attribute__((vector_size(32), aligned(sizeof(scalar_t)), may_alias));
#define V V_SUF
#define VW ((int64_t)(32 / sizeof(scalar_t)))

/* Reverse-time adjoint of h for every (b, j): dh[t] = gate[t] * dv + sum of ds at active
   entries of row (t, b); gI[t] = c dh[t]; dv = a dh[t] (the leak to the step before).
   gate is 1 where z == 0, g1[j] where z != 0. dv (B, N) holds the final state's gradient. */
void sf_sbw_scan_SUF(int64_t T, int64_t B, int64_t N, int threads,
                     const int64_t* restrict off, const int32_t* restrict idx,
                     const scalar_t* restrict sg, const scalar_t* restrict gz,
                     const scalar_t* restrict z, const scalar_t* restrict a,
                     const scalar_t* restrict c, const scalar_t* restrict g1,
                     scalar_t* restrict dv, scalar_t* restrict gi) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t b = 0; b < B; b++) {
    scalar_t* restrict d = dv + b * N;
    for (int64_t t = T - 1; t >= 0; t--) {
      int64_t r = t * B + b;
      const scalar_t* restrict zr = z + r * N;
      scalar_t* restrict gr = gi + r * N;
      for (int64_t j = 0; j < N; j++) gr[j] = (zr[j] != 0 ? g1[j] : (scalar_t)1) * d[j];
      const scalar_t* restrict gzr = gz + r * N;
      for (int64_t k = off[r]; k < off[r + 1]; k++) gr[idx[k]] += gzr[idx[k]] * sg[k];
      for (int64_t j = 0; j < N; j++) { scalar_t h = gr[j]; gr[j] = c[j] * h; d[j] = a[j] * h; }
    }
  }
}

/* gx[r, i] = dot(wt[i, :], gi[r, :]) for the active entries (r, i) of the CSR (off, idx);
   gx is zero elsewhere (the caller zeroes it). */
void sf_sbw_gx_SUF(int64_t R, int64_t N, int64_t IN, int threads, const int64_t* restrict off,
                   const int32_t* restrict idx, const scalar_t* restrict gi,
                   const scalar_t* restrict wt, scalar_t* restrict gx) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 64)
  for (int64_t r = 0; r < R; r++) {
    const scalar_t* restrict g = gi + r * N;
    for (int64_t k = off[r]; k < off[r + 1]; k++) {
      const scalar_t* restrict w = wt + (int64_t)idx[k] * N;
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
      gx[r * IN + idx[k]] = s;
    }
  }
}
#undef V
#undef VW
"""
_HEADER = "#include <stdint.h>\n"


@lru_cache(maxsize=None)
def build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes, one library, the loader of ``kernels.sparse``), or why not."""
    return load(_HEADER, _SOURCE, {"sf_sbw_scan": None, "sf_sbw_gx": None})


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


def active_set(u: Tensor, surrogate, width: float) -> tuple[Tensor, Tensor, Tensor]:
    """``(off, idx, sg)`` for ``u`` (T, B, N), the spike function's argument: the CSR over the
    T*B rows of the entries with ``|u| < width`` (int64 offsets, int32 columns) and the
    surrogate derivative there (zero where ``|u| >= width`` even if the surrogate is not)."""
    T, B, N = u.shape
    u2 = u.reshape(T * B, N)
    mask = u2.abs() < width * (1 + SLACK)
    rows, cols = mask.nonzero(as_tuple=True)
    off = torch.zeros(T * B + 1, dtype=torch.int64)
    torch.cumsum(torch.bincount(rows, minlength=T * B), 0, out=off[1:])
    uk = u2[rows, cols]
    sg = torch.where(uk.abs() < width, surrogate.grad(uk), torch.zeros_like(uk))
    return off, cols.to(torch.int32), sg.contiguous()


def adjoint_scan(gz: Tensor, z: Tensor, off: Tensor, idx: Tensor, sg: Tensor, a: Tensor, c: Tensor,
                 g1: Tensor) -> Tensor:
    """``gI`` (T, B, N), the gradient of the synaptic current, from the spikes' gradient ``gz``
    read at the active entries only (see the module docstring)."""
    T, B, N = gz.shape
    gz, z, a, c, g1 = (t.contiguous() for t in (gz, z, a, c, g1))   # kept alive across the call
    gi = torch.empty_like(gz)
    dv = torch.zeros(B, N, dtype=gz.dtype)
    _fn("scan", gz.dtype)(c_int64(T), c_int64(B), c_int64(N), threads(gz.numel(), _PARALLEL_MIN), _p(off),
                          _p(idx), _p(sg), _p(gz), _p(z), _p(a), _p(c), _p(g1), _p(dv), _p(gi))
    return gi


def grad_input_at(off: Tensor, idx: Tensor, gi2: Tensor, weight: Tensor) -> Tensor:
    """``gx`` (R, in) equal to ``gi2 @ weight`` at the entries of the CSR ``(off, idx)`` over the
    R rows, and 0 elsewhere."""
    R, N = gi2.shape
    IN = weight.shape[1]
    wt, gi2 = weight.detach().t().contiguous(), gi2.contiguous()
    gx = torch.zeros(R, IN, dtype=gi2.dtype)
    _fn("gx", gi2.dtype)(c_int64(R), c_int64(N), c_int64(IN), threads(int(idx.numel()) * N, _PARALLEL_MIN),
                         _p(off), _p(idx), _p(gi2), _p(wt), _p(gx))
    return gx
