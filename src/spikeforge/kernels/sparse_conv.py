"""The spike-sparse 2-D convolution kernels behind ``spikeforge.nn.SpikeConv2d``.

For a binary input ``x`` (N, C, H, W), the counting pass of the linear kernels
(``kernels.sparse.count_active`` on the (N*C, H*W) view) gives each (n, c) plane's number of
ones and the entries that are not 0 or 1. ``forward`` then writes the active positions of
every plane (CSR, kept for backward) and scatters each active event (n, c, h, w) into the
outputs it reaches: for each tap (kh, kw) whose output position (oh, ow) exists, the weight
vector ``W[g's outputs, c, kh, kw]`` is added to ``y[n, :, oh, ow]``. One thread owns one
sample ``n`` at a time and accumulates it channels-last in its own scratch (a contiguous
vector add per tap), then writes it out channels-first with the bias, so no two threads
write one output. ``grad_weight`` scatters the same events the other way
(``gW[o, c, kh, kw] += gy[n, o, oh, ow]``), input channels in parallel, so no two threads
write one weight gradient row. Both dtypes live in one library, compiled on first use with
the fused CPU backend's ``build`` and cached on disk.
"""
from __future__ import annotations

import ctypes
import enum
import math
from ctypes import c_int64
from dataclasses import dataclass
from functools import lru_cache

import torch
from torch import Tensor

from ..allocator import empty
from ._threads import threads
from .sparse import DTYPES, NONZEROS, TRANSPOSE, _p, load

__all__ = ["DTYPES", "Formulation", "Geometry", "build", "forward", "grad_weight", "grad_input_at"]

_PARALLEL_MIN = 1 << 16    # input elements below which one thread runs the kernels


class Formulation(enum.Enum):
    """How the forward kernel forms y (benchmarks/sparse_conv.py measures both)."""

    SCATTER = "scatter"    # each active event adds its weight vectors to the outputs it reaches (the default)
    GATHER = "gather"      # each output position sums the active taps that reach it (measured no faster)


FORMULATION = Formulation.SCATTER

_HEADER = r"""
#include <stdint.h>
#include <string.h>
#include <omp.h>
#define NV 8                                   /* vectors per output tile (in registers) */
#define UNROLL _Pragma("GCC unroll 8")
/* The output coordinate that input coordinate i reaches through tap k, or -1. */
static inline int64_t sf_spc_out(int64_t i, int64_t k, int64_t pad, int64_t dil, int64_t str, int64_t n) {
  int64_t t = i + pad - k * dil;
  if (t < 0 || t % str) return -1;
  t /= str;
  return t < n ? t : -1;
}
/* The taps (kh, kw) through which input position (h, w) reaches an output (oh, ow), the statement after
   it run for each (needs the geometry's names in scope). */
#define SF_TAPS(h, w)                                                                 \
  for (int64_t kh = 0, oh; kh < KH; kh++)                                             \
    if ((oh = sf_spc_out(h, kh, PH, DH, SH, OH)) >= 0)                                \
      for (int64_t kw = 0, ow; kw < KW; kw++)                                         \
        if ((ow = sf_spc_out(w, kw, PW, DW, SW, OW)) >= 0)
"""
_SOURCE = NONZEROS + TRANSPOSE + r"""
typedef scalar_t V_SUF __attribute__((vector_size(32), aligned(sizeof(scalar_t)), may_alias));
#define V V_SUF
#define VL ((int64_t)(32 / sizeof(scalar_t)))
#define TW (NV * VL)
/* Geometry: N, C, H, W, G, OG (outputs per group), KH, KW, OH, OW, SH, SW, PH, PW, DH, DW. */
#define GEOM int64_t N, int64_t C, int64_t H, int64_t W, int64_t G, int64_t OG, int64_t KH, \
  int64_t KW, int64_t OH, int64_t OW, int64_t SH, int64_t SW, int64_t PH, int64_t PW, int64_t DH, int64_t DW

/* Active positions of every (n, c) plane (CSR, offsets `off`) and y (N, G*OG, OH, OW). */
void sf_spc_forward_SUF(GEOM, int threads, const scalar_t* restrict x, const int64_t* restrict off,
                        int32_t* restrict idx, const scalar_t* restrict wt,
                        const scalar_t* restrict bias, scalar_t* restrict y, scalar_t* restrict scratch,
                        const uint64_t* restrict mask) {
  const int64_t O = G * OG, CG = C / G, P = OH * OW, HW = H * W, NW = (HW + 63) / 64;
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n = 0; n < N; n++) {
    scalar_t* restrict acc = scratch + (int64_t)omp_get_thread_num() * P * O;
    memset(acc, 0, P * O * sizeof(scalar_t));
    for (int64_t c = 0; c < C; c++) {
      const int64_t r = n * C + c, end = off[r + 1] - off[r];
      int32_t* restrict o = idx + off[r];
      if (mask) sf_bits_SUF(mask + r * NW, NW, o); else sf_nonzeros_SUF(x + r * HW, HW, o);
      const scalar_t* restrict wc = wt + c * KH * KW * OG;
      const int64_t go = (c / CG) * OG;
      for (int64_t q = 0; q < end; q++) {
        const int64_t h = o[q] / W, w = o[q] % W;
        SF_TAPS(h, w) {
          scalar_t* restrict a = acc + (oh * OW + ow) * O + go;
          const scalar_t* restrict v = wc + (kh * KW + kw) * OG;
          if (OG % TW == 0)
            for (int64_t t0 = 0; t0 < OG; t0 += TW) {
              V* restrict av = (V*)(a + t0);
              const V* restrict vv = (const V*)(v + t0);
              UNROLL for (int u = 0; u < NV; u++) av[u] += vv[u];
            }
          else
            for (int64_t t = 0; t < OG; t++) a[t] += v[t];
        }
      }
    }
    sf_transpose_SUF(acc, O, y + n * O * P, P, bias, P, O);
  }
}

/* The same y by gathering: per sample, the active (c, kh, kw) rows of wt that reach each output
   position (a CSR built from the events: `cnt` P*G + 1, `lst` the sample's events x KH*KW),
   summed in registers tile by tile of a group's outputs and stored channels-first directly. */
void sf_spc_forward_gather_SUF(GEOM, int threads, const scalar_t* restrict x, const int64_t* restrict off,
                               int32_t* restrict idx, const scalar_t* restrict wt,
                               const scalar_t* restrict bias, scalar_t* restrict y, scalar_t* restrict scratch,
                               int32_t* restrict iscratch, int64_t per_thread, const uint64_t* restrict mask) {
  const int64_t O = G * OG, CG = C / G, P = OH * OW, HW = H * W, KK = KH * KW, NW = (HW + 63) / 64;
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n = 0; n < N; n++) {
    scalar_t* restrict acc = scratch + (int64_t)omp_get_thread_num() * P * O;
    int32_t* restrict cnt = iscratch + (int64_t)omp_get_thread_num() * per_thread;
    int32_t* restrict lst = cnt + P * G + 1;
    memset(cnt, 0, (P * G + 1) * sizeof(int32_t));
    for (int pass = 0; pass < 2; pass++) {         /* 0: count per (position, group); 1: fill */
      for (int64_t c = 0; c < C; c++) {
        const int64_t r = n * C + c, end = off[r + 1] - off[r], g = c / CG;
        int32_t* restrict o = idx + off[r];
        if (pass == 0) {
          if (mask) sf_bits_SUF(mask + r * NW, NW, o); else sf_nonzeros_SUF(x + r * HW, HW, o);
        }
        for (int64_t q = 0; q < end; q++) {
          const int64_t h = o[q] / W, w = o[q] % W;
          SF_TAPS(h, w) {
            const int64_t pg = (oh * OW + ow) * G + g;
            if (pass == 0) cnt[pg + 1]++;
            else lst[cnt[pg]++] = (int32_t)((c * KH + kh) * KW + kw);
          }
        }
      }
      if (pass == 0) for (int64_t i = 0; i < P * G; i++) cnt[i + 1] += cnt[i];
    }
    /* after the fill, cnt[pg] is the end of pg's list and cnt[pg - 1] (0 for pg = 0) its start */
    for (int64_t g = 0; g < G; g++)
      for (int64_t t0 = 0; t0 < OG; t0 += TW) {
        const int64_t m = OG - t0 < TW ? OG - t0 : TW;
        for (int64_t p = 0; p < P; p++) {
          const int64_t pg = p * G + g, q0 = pg ? cnt[pg - 1] : 0, q1 = cnt[pg];
          scalar_t* restrict a = acc + p * O + g * OG + t0;
          if (m == TW) {
            V v[NV];
            UNROLL for (int u = 0; u < NV; u++) v[u] = (V){0};
            for (int64_t q = q0; q < q1; q++) {
              const V* w = (const V*)(wt + (int64_t)lst[q] * OG + t0);
              UNROLL for (int u = 0; u < NV; u++) v[u] += w[u];
            }
            UNROLL for (int u = 0; u < NV; u++) ((V*)a)[u] = v[u];
          } else {
            for (int64_t t = 0; t < m; t++) a[t] = 0;
            for (int64_t q = q0; q < q1; q++) {
              const scalar_t* restrict w = wt + (int64_t)lst[q] * OG + t0;
              for (int64_t t = 0; t < m; t++) a[t] += w[t];
            }
          }
        }
      }
    sf_transpose_SUF(acc, O, y + n * O * P, P, bias, P, O);
  }
}

/* gwt (C, KH, KW, OG) from the CSR of x and the output gradient g (N, O, OH, OW). Each thread
   owns a range of input channels (its rows of gwt), walks the samples in order and copies each
   sample's gradient channels-last into its own scratch (P x O), from which a tap's output vector
   is one contiguous read. */
void sf_spc_grad_weight_SUF(GEOM, int threads, const int64_t* restrict off, const int32_t* restrict idx,
                            const scalar_t* restrict g, scalar_t* restrict gwt, scalar_t* restrict scratch) {
  const int64_t O = G * OG, CG = C / G, P = OH * OW;
  memset(gwt, 0, C * KH * KW * OG * sizeof(scalar_t));
  #pragma omp parallel num_threads(threads)
  {
    const int64_t nt = omp_get_num_threads(), id = omp_get_thread_num();
    const int64_t c0 = C * id / nt, c1 = C * (id + 1) / nt;
    scalar_t* restrict gt = scratch + id * P * O;
    for (int64_t n = 0; n < N; n++) {
      if (off[n * C + c1] == off[n * C + c0]) continue;     /* no event of this thread's channels */
      sf_transpose_SUF(g + n * O * P, P, gt, O, 0, O, P);
      for (int64_t c = c0; c < c1; c++) {
        scalar_t* restrict gc = gwt + c * KH * KW * OG;
        const int64_t go = (c / CG) * OG, r = n * C + c;
        for (int64_t q = off[r]; q < off[r + 1]; q++) {
          const int64_t h = idx[q] / W, w = idx[q] % W;
          SF_TAPS(h, w) {
            const scalar_t* restrict s = gt + (oh * OW + ow) * O + go;
            scalar_t* restrict v = gc + (kh * KW + kw) * OG;
            for (int64_t t = 0; t < OG; t++) v[t] += s[t];
          }
        }
      }
    }
  }
}
/* gx (N, C, H, W) at the entries (CSR poff/pidx over the N samples, columns c * H * W + h * W + w)
   that the layer which produced x reads, 0 elsewhere: gx[n, c, h, w] = the sum over the taps (kh, kw)
   that reach an output (oh, ow) of dot(wt[c, kh, kw, :], g[n, c's group's outputs, oh, ow]). Samples
   in parallel; each thread copies a sample's gradient channels-last into its scratch (P x O) first. */
void sf_spc_grad_input_at_SUF(GEOM, int threads, const int64_t* restrict poff, const int32_t* restrict pidx,
                              const scalar_t* restrict wt, const scalar_t* restrict g, scalar_t* restrict gx,
                              scalar_t* restrict scratch) {
  const int64_t O = G * OG, CG = C / G, P = OH * OW, HW = H * W;
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n = 0; n < N; n++) {
    scalar_t* restrict gxn = gx + n * C * HW;
    memset(gxn, 0, C * HW * sizeof(scalar_t));
    if (poff[n + 1] == poff[n]) continue;
    scalar_t* restrict gt = scratch + (int64_t)omp_get_thread_num() * P * O;
    sf_transpose_SUF(g + n * O * P, P, gt, O, 0, O, P);
    for (int64_t k = poff[n]; k < poff[n + 1]; k++) {
      const int64_t e = pidx[k], c = e / HW, h = (e - c * HW) / W, w = (e - c * HW) % W, go = (c / CG) * OG;
      const scalar_t* restrict wc = wt + c * KH * KW * OG;
      V acc = {0};        /* the taps' products summed lane-wise, reduced once */
      scalar_t s = 0;
      SF_TAPS(h, w) {
        const scalar_t* restrict a = wc + (kh * KW + kw) * OG, * restrict b = gt + (oh * OW + ow) * O + go;
        int64_t j = 0;
        for (; j + VL <= OG; j += VL) acc += *(const V*)(a + j) * *(const V*)(b + j);
        for (; j < OG; j++) s += a[j] * b[j];
      }
      for (int u = 0; u < VL; u++) s += acc[u];
      gxn[e] = s;
    }
  }
}
#undef GEOM
#undef V
#undef VL
#undef TW
"""


@dataclass(frozen=True)
class Geometry:
    """Shapes of one convolution: input (n, c, h, w), groups, outputs per group, kernel,
    output size, stride, top/left padding and dilation (all resolved to integers)."""
    n: int
    c: int
    h: int
    w: int
    groups: int
    og: int
    kh: int
    kw: int
    oh: int
    ow: int
    stride: tuple[int, int]
    pad: tuple[int, int]
    dilation: tuple[int, int]

    def args(self) -> list[c_int64]:
        return [c_int64(v) for v in (self.n, self.c, self.h, self.w, self.groups, self.og, self.kh,
                                     self.kw, self.oh, self.ow, *self.stride, *self.pad, *self.dilation)]


@lru_cache(maxsize=None)
def build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes in one library), or why they cannot be built."""
    return load(_HEADER, _SOURCE, {"sf_spc_forward": None, "sf_spc_forward_gather": None,
                                   "sf_spc_grad_weight": None, "sf_spc_grad_input_at": None})


def _fn(name: str, dtype: torch.dtype):
    lib = build()
    if isinstance(lib, str):
        raise RuntimeError(f"SpikeConv2d's sparse path: {lib}")
    return getattr(lib, f"sf_spc_{name}_{DTYPES[dtype]}")


def _taps_last(weight: Tensor, geo: Geometry) -> Tensor:
    """(G*OG, CG, KH, KW) -> (G, CG, KH, KW, OG) = (C, KH, KW, OG): a tap's output vector contiguous."""
    return weight.detach().reshape(geo.groups, geo.og, -1, geo.kh, geo.kw).permute(0, 2, 3, 4, 1).contiguous()


def forward(x: Tensor, off: Tensor, weight: Tensor, bias: Tensor | None, geo: Geometry,
            mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(y, idx)``: the convolution of the contiguous {0, 1} input ``x`` (N, C, H, W) whose
    (n, c) plane offsets (and, if given, bit masks) ``count_active`` gave on its (N * C, H * W)
    view, and the planes' active positions ``idx`` (the CSR that ``grad_weight`` reads)."""
    out = geo.groups * geo.og
    nt = ctypes.c_int(max(1, min(threads(x.numel(), _PARALLEL_MIN).value, geo.n)))  # scratch per thread
    idx = torch.empty(int(off[-1]), dtype=torch.int32)
    y = empty((geo.n, out, geo.oh, geo.ow), x.dtype)
    wt = _taps_last(weight, geo)
    b = None if bias is None else bias.detach().contiguous()
    scratch = empty((nt.value * geo.oh * geo.ow * out,), x.dtype)
    if FORMULATION is Formulation.GATHER:
        per_sample = off[::geo.c].diff().max().item() if geo.n else 0
        per_thread = geo.oh * geo.ow * geo.groups + 1 + per_sample * geo.kh * geo.kw
        iscratch = torch.empty(nt.value * per_thread, dtype=torch.int32)
        _fn("forward_gather", x.dtype)(*geo.args(), nt, _p(x), _p(off), _p(idx), _p(wt), _p(b), _p(y),
                                       _p(scratch), _p(iscratch), c_int64(per_thread), _p(mask))
    else:
        _fn("forward", x.dtype)(*geo.args(), nt, _p(x), _p(off), _p(idx), _p(wt), _p(b), _p(y), _p(scratch),
                                _p(mask))
    return y, idx


def grad_weight(off: Tensor, idx: Tensor, gy: Tensor, geo: Geometry) -> Tensor:
    """The weight gradient (O, C / groups, KH, KW) from the CSR ``(off, idx)`` of a {0, 1}
    input and the contiguous output gradient ``gy`` (N, O, OH, OW)."""
    nt = ctypes.c_int(max(1, min(threads(gy.numel(), _PARALLEL_MIN).value, geo.c)))
    gwt = torch.empty(geo.c, geo.kh, geo.kw, geo.og, dtype=gy.dtype)
    scratch = empty((nt.value * math.prod(gy.shape[1:]),), gy.dtype)
    _fn("grad_weight", gy.dtype)(*geo.args(), nt, _p(off), _p(idx), _p(gy), _p(gwt), _p(scratch))
    cg = geo.c // geo.groups
    return gwt.reshape(geo.groups, cg, geo.kh, geo.kw, geo.og).permute(0, 4, 1, 2, 3).reshape(
        geo.groups * geo.og, cg, geo.kh, geo.kw)


def grad_input_at(off: Tensor, idx: Tensor, gy: Tensor, weight: Tensor, geo: Geometry) -> Tensor:
    """The input gradient (N, C, H, W) of the convolution at the entries of the CSR ``(off,
    idx)`` over the N samples (columns ``c * H * W + h * W + w``), 0 elsewhere, from the contiguous
    output gradient ``gy`` (N, O, OH, OW): what a sparse spiking layer before this one reads."""
    nt = ctypes.c_int(max(1, min(threads(gy.numel(), _PARALLEL_MIN).value, geo.n)))
    wt = _taps_last(weight, geo)
    gx = empty((geo.n, geo.c, geo.h, geo.w), gy.dtype)
    scratch = empty((nt.value * math.prod(gy.shape[1:]),), gy.dtype)
    _fn("grad_input_at", gy.dtype)(*geo.args(), nt, _p(off), _p(idx), _p(wt), _p(gy), _p(gx), _p(scratch))
    return gx
