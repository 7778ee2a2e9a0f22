"""The spike-sparse linear kernels behind ``spikeforge.nn.SpikeLinear``: C source, build, calls.

For a binary input ``x`` (N, in): one pass counts each row's nonzeros and the entries that
are not 0 or 1 (``count_active``); a second pass writes the active indices (CSR, kept for
backward) and, for blocks of rows, adds the active rows of ``W^T`` tile by tile (a tile of 8
vectors of the output stays in registers; a block of rows reuses one column tile of ``W^T``
from cache) (``forward``). ``W^T`` is copied tile by tile (``packed``: each column tile one
contiguous block, so that its rows do not share cache sets as the rows of a power-of-two-wide
``W^T`` do). The weight gradient (``grad_weight``) runs over the same column tiles in parallel,
so no two threads write one, in the packed layout (``unpacked`` turns it back). Both dtypes live in one library, compiled on
first use with the fused CPU backend's ``build`` and cached on disk.
"""
from __future__ import annotations

import ctypes
from ctypes import c_int64
from functools import lru_cache

import torch
from torch import Tensor

from ..allocator import empty
from ._threads import threads

__all__ = ["DTYPES", "build", "count_active", "forward", "grad_weight"]

DTYPES = {torch.float32: "f32", torch.float64: "f64"}
_PARALLEL_MIN = 1 << 16    # input elements below which one thread runs the kernels

_HEADER = r"""
#include <stdint.h>
#include <string.h>
#define NV 8                                   /* vectors per output tile (in registers) */
#define RB 512                                 /* rows per block, sharing a W^T tile in cache */
#define UNROLL _Pragma("GCC unroll 8")
"""
# The nonzeros of a row as bit masks and positions, shared with the conv and sparse-backward kernels
# (``scalar_t``/``_SUF`` as in ``load``).
NONZEROS = r"""
#if defined(__AVX__)
#include <immintrin.h>
#endif
/* The nonzeros of 64 entries as the bits of one word, and (added to *bad; NULL: not counted) how many
   of them are neither 0 nor 1 (NaN included). With AVX, a comparison's sign bits are gathered 8 (4) at a time
   (vmovmskps); gcc's own vector form of the shift-and-or loop moves each bit through a 64-bit lane. */
static inline uint64_t sf_mask64_SUF(const scalar_t* restrict x, int64_t* restrict bad) {
  uint64_t w = 0;
  int64_t b = 0;
#if defined(__AVX__)
  if (sizeof(scalar_t) == 4) {
    const __m256 zero = _mm256_setzero_ps(), one = _mm256_set1_ps(1.0f);
    for (int k = 0; k < 8; k++) {
      const __m256 v = _mm256_loadu_ps((const float*)x + 8 * k);
      const __m256 nz = _mm256_cmp_ps(v, zero, _CMP_NEQ_UQ);
      w |= (uint64_t)(uint32_t)_mm256_movemask_ps(nz) << (8 * k);
      if (bad) b += __builtin_popcount((unsigned)_mm256_movemask_ps(_mm256_and_ps(nz, _mm256_cmp_ps(v, one, _CMP_NEQ_UQ))));
    }
  } else {
    const __m256d zero = _mm256_setzero_pd(), one = _mm256_set1_pd(1.0);
    for (int k = 0; k < 16; k++) {
      const __m256d v = _mm256_loadu_pd((const double*)x + 4 * k);
      const __m256d nz = _mm256_cmp_pd(v, zero, _CMP_NEQ_UQ);
      w |= (uint64_t)(uint32_t)_mm256_movemask_pd(nz) << (4 * k);
      if (bad) b += __builtin_popcount((unsigned)_mm256_movemask_pd(_mm256_and_pd(nz, _mm256_cmp_pd(v, one, _CMP_NEQ_UQ))));
    }
  }
#else
  for (int64_t i = 0; i < 64; i++) { w |= (uint64_t)(x[i] != 0) << i; b += (x[i] != 0) & (x[i] != 1); }
#endif
  if (bad) *bad += b;
  return w;
}
/* The positions of the nonzeros of x[0..n) into o, in order; returns how many. 64 entries at a time: a bit
   mask of one comparison each (vectorised), then one store per set bit. */
static inline int64_t sf_nonzeros_SUF(const scalar_t* restrict x, int64_t n, int32_t* restrict o) {
  int64_t k = 0;
  for (int64_t i0 = 0; i0 < n; i0 += 64) {
    const int64_t m = n - i0 < 64 ? n - i0 : 64;
    uint64_t b = 0;
    if (m == 64) b = sf_mask64_SUF(x + i0, 0);
    else for (int64_t i = 0; i < m; i++) b |= (uint64_t)(x[i0 + i] != 0) << i;
    for (; b; b &= b - 1) o[k++] = (int32_t)(i0 + __builtin_ctzll(b));
  }
  return k;
}
/* The positions of the set bits of the nw words m (bit i of word q: position 64 q + i) into o, in order. */
static inline void sf_bits_SUF(const uint64_t* restrict m, int64_t nw, int32_t* restrict o) {
  int64_t k = 0;
  for (int64_t q = 0; q < nw; q++)
    for (uint64_t b = m[q]; b; b &= b - 1) o[k++] = (int32_t)(q * 64 + __builtin_ctzll(b));
}
"""
# A matrix transposed (optionally plus a bias per output row), shared with the conv and
# sparse-backward kernels (``scalar_t``/``_SUF`` as in ``load``).
TRANSPOSE = r"""
#ifndef SF_TB_ONCE   /* once per library, not per dtype */
#define SF_TB_ONCE
#ifndef SF_TB   /* the width of the float blocks transposed in registers: the machine's vector of floats
                   (0: none; needs __builtin_shufflevector) */
#if (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && defined(__AVX512F__)
#define SF_TB 16
#elif (defined(__clang__) || (defined(__GNUC__) && __GNUC__ >= 12)) && defined(__AVX__)
#define SF_TB 8   /* a 64-byte vector here is two registers: gcc went through the stack, 2x slower than torch */
#else
#define SF_TB 0
#endif
#endif
#if SF_TB == 16
typedef float sf_tb_v __attribute__((vector_size(64), aligned(4), may_alias));
/* One 16 x 16 float block: dst row k = src column k (+ bias[k]), in registers (four rounds of shuffles
   that interleave 1, 2, 4 and 8 lanes of row pairs). */
static inline void sf_tblock(const float* restrict src, int64_t lds, float* restrict dst, int64_t ldd,
                             const float* restrict bias) {
  sf_tb_v a[16], b[16];
  for (int i = 0; i < 16; i++) a[i] = *(const sf_tb_v*)(src + i * lds);
  for (int i = 0; i < 16; i += 2) {
    b[i] = __builtin_shufflevector(a[i], a[i + 1], 0, 16, 2, 18, 4, 20, 6, 22, 8, 24, 10, 26, 12, 28, 14, 30);
    b[i + 1] = __builtin_shufflevector(a[i], a[i + 1], 1, 17, 3, 19, 5, 21, 7, 23, 9, 25, 11, 27, 13, 29, 15, 31);
  }
  for (int i = 0; i < 16; i += 4)
    for (int k = i; k < i + 2; k++) {
      a[k] = __builtin_shufflevector(b[k], b[k + 2], 0, 1, 16, 17, 4, 5, 20, 21, 8, 9, 24, 25, 12, 13, 28, 29);
      a[k + 2] = __builtin_shufflevector(b[k], b[k + 2], 2, 3, 18, 19, 6, 7, 22, 23, 10, 11, 26, 27, 14, 15, 30, 31);
    }
  for (int i = 0; i < 16; i += 8)
    for (int k = i; k < i + 4; k++) {
      b[k] = __builtin_shufflevector(a[k], a[k + 4], 0, 1, 2, 3, 16, 17, 18, 19, 8, 9, 10, 11, 24, 25, 26, 27);
      b[k + 4] = __builtin_shufflevector(a[k], a[k + 4], 4, 5, 6, 7, 20, 21, 22, 23, 12, 13, 14, 15, 28, 29, 30, 31);
    }
  for (int k = 0; k < 8; k++) {
    a[k] = __builtin_shufflevector(b[k], b[k + 8], 0, 1, 2, 3, 4, 5, 6, 7, 16, 17, 18, 19, 20, 21, 22, 23);
    a[k + 8] = __builtin_shufflevector(b[k], b[k + 8], 8, 9, 10, 11, 12, 13, 14, 15, 24, 25, 26, 27, 28, 29, 30, 31);
  }
  if (bias) for (int k = 0; k < 16; k++) *(sf_tb_v*)(dst + k * ldd) = a[k] + bias[k];
  else for (int k = 0; k < 16; k++) *(sf_tb_v*)(dst + k * ldd) = a[k];
}
#elif SF_TB == 8
typedef float sf_tb_v __attribute__((vector_size(32), aligned(4), may_alias));
/* One 8 x 8 float block, as the 16 x 16 one with three rounds (1, 2 and 4 lanes). */
static inline void sf_tblock(const float* restrict src, int64_t lds, float* restrict dst, int64_t ldd,
                             const float* restrict bias) {
  sf_tb_v a[8], b[8];
  for (int i = 0; i < 8; i++) a[i] = *(const sf_tb_v*)(src + i * lds);
  for (int i = 0; i < 8; i += 2) {
    b[i] = __builtin_shufflevector(a[i], a[i + 1], 0, 8, 2, 10, 4, 12, 6, 14);
    b[i + 1] = __builtin_shufflevector(a[i], a[i + 1], 1, 9, 3, 11, 5, 13, 7, 15);
  }
  for (int i = 0; i < 8; i += 4)
    for (int k = i; k < i + 2; k++) {
      a[k] = __builtin_shufflevector(b[k], b[k + 2], 0, 1, 8, 9, 4, 5, 12, 13);
      a[k + 2] = __builtin_shufflevector(b[k], b[k + 2], 2, 3, 10, 11, 6, 7, 14, 15);
    }
  for (int k = 0; k < 4; k++) {
    b[k] = __builtin_shufflevector(a[k], a[k + 4], 0, 1, 2, 3, 8, 9, 10, 11);
    b[k + 4] = __builtin_shufflevector(a[k], a[k + 4], 4, 5, 6, 7, 12, 13, 14, 15);
  }
  if (bias) for (int k = 0; k < 8; k++) *(sf_tb_v*)(dst + k * ldd) = b[k] + bias[k];
  else for (int k = 0; k < 8; k++) *(sf_tb_v*)(dst + k * ldd) = b[k];
}
#endif
#endif
/* dst[c ldd + r] = src[r lds + c] (+ bias[c]; bias NULL: none) for r < R, c < C. float: SF_TB x SF_TB
   blocks in registers (704 x 256: 25 us with 16 x 16 on AVX-512 against 67 us element by element and
   ~105 us for torch's copy of a transposed view; 46-59 us with 8 x 8 on AVX2 (Zen 3) against ~120 us
   for torch's); double and the edges: 8 x 8 blocks element by element. */
#define SF_T_PUT(d, v, c) ((d) = bias ? (v) + bias[c] : (v))   /* no bias: the value itself (-0.0 stays) */
static inline void sf_transpose_SUF(const scalar_t* restrict src, int64_t lds, scalar_t* restrict dst,
                                    int64_t ldd, const scalar_t* restrict bias, int64_t R, int64_t C) {
  int64_t c0 = 0;
#if SF_TB
  if (sizeof(scalar_t) == 4)
    for (; c0 + SF_TB <= C; c0 += SF_TB) {
      int64_t r0 = 0;
      for (; r0 + SF_TB <= R; r0 += SF_TB)
        sf_tblock((const float*)(src + r0 * lds + c0), lds, (float*)(dst + c0 * ldd + r0), ldd,
                  (const float*)(bias ? bias + c0 : 0));
      for (; r0 < R; r0++)
        for (int64_t j = 0; j < SF_TB; j++) SF_T_PUT(dst[(c0 + j) * ldd + r0], src[r0 * lds + c0 + j], c0 + j);
    }
#endif
  const int64_t R8 = R & ~(int64_t)7;
  for (; c0 < C; c0 += 8) {
    const int64_t n = C - c0 < 8 ? C - c0 : 8;
    for (int64_t r0 = 0; r0 < R8; r0 += 8) {
      scalar_t blk[8][8];
      for (int64_t i = 0; i < 8; i++)
        for (int64_t j = 0; j < n; j++) blk[j][i] = src[(r0 + i) * lds + c0 + j];
      for (int64_t j = 0; j < n; j++)
        for (int64_t i = 0; i < 8; i++) SF_T_PUT(dst[(c0 + j) * ldd + r0 + i], blk[j][i], c0 + j);
    }
    for (int64_t r = R8; r < R; r++)
      for (int64_t j = 0; j < n; j++) SF_T_PUT(dst[(c0 + j) * ldd + r], src[r * lds + c0 + j], c0 + j);
  }
}
#undef SF_T_PUT
"""
_SOURCE = NONZEROS + TRANSPOSE + r"""
typedef scalar_t V_SUF __attribute__((vector_size(32), aligned(sizeof(scalar_t)), may_alias));
#define V V_SUF
#define VL ((int64_t)(32 / sizeof(scalar_t)))
#define TW (NV * VL)

/* Per-row nonzero counts, and (mask not NULL) the nonzeros as bit masks, ceil(IN / 64) words per row;
   returns how many entries are neither 0 nor 1 (NaN included). */
int64_t sf_spl_count_SUF(int64_t N, int64_t IN, int threads, const scalar_t* restrict x,
                         int64_t* restrict cnt, uint64_t* restrict mask) {
  const int64_t NW = (IN + 63) / 64;
  int64_t bad = 0;
  #pragma omp parallel for num_threads(threads) schedule(static) reduction(+:bad)
  for (int64_t n = 0; n < N; n++) {
    const scalar_t* restrict xr = x + n * IN;
    int64_t k = 0, b = 0;
    for (int64_t q = 0; q < NW; q++) {
      const int64_t i0 = q * 64, m = IN - i0 < 64 ? IN - i0 : 64;
      uint64_t w = 0;
      if (m == 64) w = sf_mask64_SUF(xr + i0, &b);
      else for (int64_t i = 0; i < m; i++) { w |= (uint64_t)(xr[i0 + i] != 0) << i; b += (xr[i0 + i] != 0) & (xr[i0 + i] != 1); }
      if (mask) mask[n * NW + q] = w;
      k += __builtin_popcountll(w);
    }
    cnt[n] = k;
    bad += b;
  }
  return bad;
}

/* Writes the active indices of every row (CSR, offsets `off`) and y = x W^T + bias. */
void sf_spl_forward_SUF(int64_t N, int64_t IN, int64_t OUT, int threads,
                        const scalar_t* restrict x, const int64_t* restrict off,
                        int32_t* restrict idx, const scalar_t* restrict wt,
                        const scalar_t* restrict bias, scalar_t* restrict y, const uint64_t* restrict mask) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t n0 = 0; n0 < N; n0 += RB) {
    int64_t n1 = n0 + RB < N ? n0 + RB : N, j0 = 0;
    for (int64_t n = n0; n < n1; n++)
      if (mask) sf_bits_SUF(mask + n * ((IN + 63) / 64), (IN + 63) / 64, idx + off[n]);
      else sf_nonzeros_SUF(x + n * IN, IN, idx + off[n]);
    for (; j0 + TW <= OUT; j0 += TW)
      for (int64_t n = n0; n < n1; n++) {
        V a[NV];
        UNROLL for (int u = 0; u < NV; u++) a[u] = bias ? ((const V*)(bias + j0))[u] : (V){0};
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          const V* w = (const V*)(wt + j0 * IN + (int64_t)idx[q] * TW);
          UNROLL for (int u = 0; u < NV; u++) a[u] += w[u];
        }
        UNROLL for (int u = 0; u < NV; u++) ((V*)(y + n * OUT + j0))[u] = a[u];
      }
    if (j0 < OUT) {   /* the last, narrower tile: NT vectors, its rows padded to NT * VL in wt */
      const int64_t m = OUT - j0, nt = (m + VL - 1) / VL;
      const scalar_t* restrict wl = wt + j0 * IN;
      for (int64_t n = n0; n < n1; n++) {
        scalar_t buf[TW] = {0};
        for (int64_t t = 0; t < m; t++) buf[t] = bias ? bias[j0 + t] : 0;
        V a[NV];
        for (int u = 0; u < nt; u++) a[u] = ((const V*)buf)[u];
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          const V* w = (const V*)(wl + (int64_t)idx[q] * nt * VL);
          for (int u = 0; u < nt; u++) a[u] += w[u];
        }
        for (int u = 0; u < nt; u++) ((V*)buf)[u] = a[u];
        memcpy(y + n * OUT + j0, buf, m * sizeof(scalar_t));
      }
    }
  }
}

/* x^T g from the CSR of x, written as `packed` lays out W^T (each output tile (IN, width)
   contiguous); output tiles in parallel, no two threads share one. */
void sf_spl_grad_weight_SUF(int64_t N, int64_t IN, int64_t OUT, int threads,
                            const int64_t* restrict off, const int32_t* restrict idx,
                            const scalar_t* restrict g, scalar_t* restrict gwp) {
  #pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
  for (int64_t j0 = 0; j0 < OUT; j0 += TW) {
    const int64_t m = OUT - j0 < TW ? OUT - j0 : TW, nt = (m + VL - 1) / VL, w = nt * VL;
    scalar_t* restrict gt = gwp + j0 * IN;
    memset(gt, 0, IN * w * sizeof(scalar_t));
    for (int64_t n = 0; n < N; n++) {
      const scalar_t* restrict gr = g + n * OUT + j0;
      V h[NV];
      if (m == TW) {
        UNROLL for (int u = 0; u < NV; u++) h[u] = ((const V*)gr)[u];
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          V* o = (V*)(gt + (int64_t)idx[q] * TW);
          UNROLL for (int u = 0; u < NV; u++) o[u] += h[u];
        }
      } else {   /* the last, narrower tile: rows padded to w */
        scalar_t buf[TW] = {0};
        memcpy(buf, gr, m * sizeof(scalar_t));
        for (int u = 0; u < nt; u++) h[u] = ((const V*)buf)[u];
        for (int64_t q = off[n]; q < off[n + 1]; q++) {
          V* o = (V*)(gt + (int64_t)idx[q] * w);
          for (int u = 0; u < nt; u++) o[u] += h[u];
        }
      }
    }
  }
}

/* dst (C, R) = src (R, C) transposed, blocks of 16 columns in parallel. */
void sf_spl_transpose_SUF(int64_t R, int64_t C, int threads, const scalar_t* restrict src, scalar_t* restrict dst) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t c0 = 0; c0 < C; c0 += 16)
    sf_transpose_SUF(src + c0, C, dst + c0 * R, R, 0, R, C - c0 < 16 ? C - c0 : 16);
}

/* W (OUT, IN) to its `packed` form p (unpack 0), or back (unpack 1); tiles in parallel. */
void sf_spl_pack_SUF(int64_t OUT, int64_t IN, int threads, scalar_t* restrict w, scalar_t* restrict p, int unpack) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t j0 = 0; j0 < OUT; j0 += TW) {
    const int64_t m = OUT - j0 < TW ? OUT - j0 : TW, wd = (m + VL - 1) / VL * VL;
    scalar_t* restrict pt = p + j0 * IN;
    if (unpack) sf_transpose_SUF(pt, wd, w + j0 * IN, IN, 0, IN, m);
    else {
      sf_transpose_SUF(w + j0 * IN, IN, pt, wd, 0, m, IN);
      if (wd > m) for (int64_t i = 0; i < IN; i++) for (int64_t j = m; j < wd; j++) pt[i * wd + j] = 0;
    }
  }
}
#undef V
#undef VL
#undef TW
"""



def load(header: str, body: str, restypes: dict[str, type | None]) -> ctypes.CDLL | str:
    """Compile ``header`` + ``body`` once per dtype (``scalar_t`` -> float/double, ``_SUF`` ->
    ``_f32``/``_f64``) into one library and set the return type of each function prefix in
    ``restypes``; or why it cannot be built (the sparse kernels of SpikeLinear and SpikeConv2d)."""
    try:
        from .cpu import WIDE, build as build_c

        lib = build_c(header + "".join(body.replace("scalar_t", c).replace("_SUF", "_" + s)
                                       for c, s in (("float", "f32"), ("double", "f64"))), WIDE)
    except Exception as e:  # no compiler, or it failed: reported, never silent
        return f"its kernel cannot be built: {type(e).__name__}: {e}"
    for s in DTYPES.values():
        for prefix, restype in restypes.items():
            getattr(lib, f"{prefix}_{s}").restype = restype
    return lib


@lru_cache(maxsize=None)
def build() -> ctypes.CDLL | str:
    """The compiled kernels (both dtypes in one library), or why they cannot be built."""
    return load(_HEADER, _SOURCE, {"sf_spl_count": ctypes.c_int64, "sf_spl_forward": None,
                                   "sf_spl_grad_weight": None, "sf_spl_transpose": None, "sf_spl_pack": None})


def _fn(name: str, dtype: torch.dtype):
    lib = build()
    if isinstance(lib, str):
        raise RuntimeError(f"SpikeLinear's sparse path: {lib}")
    return getattr(lib, f"sf_spl_{name}_{DTYPES[dtype]}")


def _p(t: Tensor | None) -> ctypes.c_void_p:
    return ctypes.c_void_p(0 if t is None else t.data_ptr())


def count_active(x2: Tensor, mask: bool = False):
    """For a contiguous (N, in) CPU float tensor: CSR row offsets (N + 1,) of its nonzeros and
    the number of entries that are neither 0 nor 1, ``(off, bad)``; with ``mask`` also the
    nonzeros as bit masks (N, ceil(in / 64)) for ``forward``, ``(off, bad, mask)``. One pass over ``x2``."""
    n, k = x2.shape
    cnt = torch.empty(n, dtype=torch.int64)
    bits = torch.empty(n, -(-k // 64), dtype=torch.int64) if mask else None   # uint64 in the kernel
    bad = _fn("count", x2.dtype)(c_int64(n), c_int64(k), threads(x2.numel(), _PARALLEL_MIN), _p(x2), _p(cnt),
                                 _p(bits))
    off = torch.zeros(n + 1, dtype=torch.int64)
    torch.cumsum(cnt, 0, out=off[1:])
    return (off, int(bad), bits) if mask else (off, int(bad))


def tile(dtype: torch.dtype) -> int:
    """The kernels' output tile width (``TW``) in elements: 8 vectors of 32 bytes."""
    return 256 // dtype.itemsize


def _tiles(out: int, dtype: torch.dtype) -> tuple[int, int, int]:
    """``(full, rest, padded)``: the outputs in whole tiles, those of the narrower last tile, and its
    width rounded up to whole 32-byte vectors."""
    tw, vl = tile(dtype), 32 // dtype.itemsize
    full = out // tw * tw
    return full, out - full, -(-(out - full) // vl) * vl


def transpose(w: Tensor) -> Tensor:
    """``w.t().contiguous()`` for a 2-D CPU float tensor: blocks of the machine's vector width
    transposed in registers (704 x 256: 25 us on AVX-512, 46-59 us on AVX2, against 105-120 us for
    torch's copy of the transposed view)."""
    w = w.contiguous()
    r, c = w.shape
    out = torch.empty(c, r, dtype=w.dtype)
    _fn("transpose", w.dtype)(c_int64(r), c_int64(c), threads(w.numel(), _PARALLEL_MIN), _p(w), _p(out))
    return out


def packed(w: Tensor) -> Tensor:
    """``w`` (out, in) as its transpose cut into column tiles of ``tile`` outputs, each tile
    (in, tile) contiguous, then the narrower last tile (in, rest), its rows zero-padded to whole
    vectors: one copy, and each tile the kernels read is one contiguous block (rows of ``w.t()`` a
    power of two apart would share cache sets)."""
    w = w.contiguous()
    out, k = w.shape
    full, rest, pad = _tiles(out, w.dtype)
    p = empty((full * k + pad * k,), w.dtype)
    _fn("pack", w.dtype)(c_int64(out), c_int64(k), threads(w.numel(), _PARALLEL_MIN), _p(w), _p(p), ctypes.c_int(0))
    return p


def unpacked(p: Tensor, out: int, k: int) -> Tensor:
    """The (out, in) matrix whose ``packed`` form is ``p``."""
    w = torch.empty(out, k, dtype=p.dtype)
    _fn("pack", p.dtype)(c_int64(out), c_int64(k), threads(w.numel(), _PARALLEL_MIN), _p(w), _p(p), ctypes.c_int(1))
    return w


def forward(x2: Tensor, off: Tensor, weight: Tensor, bias: Tensor | None,
            mask: Tensor | None = None) -> tuple[Tensor, Tensor]:
    """``(y, idx)``: ``y = x2 W^T + bias`` (N, out) from the active entries of the {0, 1} input
    ``x2`` (N, in) whose row offsets (and, if given, bit masks: then ``x2`` is not read again)
    ``count_active`` gave, and their indices ``idx`` (the CSR that ``grad_weight`` reads)."""
    (n, k), out = x2.shape, weight.shape[0]
    idx = torch.empty(int(off[-1]), dtype=torch.int32)
    y = empty((n, out), x2.dtype)
    wt = packed(weight.detach())
    b = None if bias is None else bias.detach().contiguous()
    _fn("forward", x2.dtype)(c_int64(n), c_int64(k), c_int64(out), threads(x2.numel(), _PARALLEL_MIN),
                             _p(x2), _p(off), _p(idx), _p(wt), _p(b), _p(y), _p(mask))
    return y, idx


def grad_weight(off: Tensor, idx: Tensor, gy: Tensor, in_features: int) -> Tensor:
    """The weight gradient ``gy^T x`` (out, in) from the CSR ``(off, idx)`` of a {0, 1} input
    and the contiguous output gradient ``gy`` (N, out)."""
    n, out = gy.shape
    full, _, pad = _tiles(out, gy.dtype)
    gwp = empty(((full + pad) * in_features,), gy.dtype)
    _fn("grad_weight", gy.dtype)(c_int64(n), c_int64(in_features), c_int64(out),
                                 threads(gy.numel(), _PARALLEL_MIN), _p(off), _p(idx), _p(gy), _p(gwp))
    return unpacked(gwp, out, in_features)
