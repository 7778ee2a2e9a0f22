"""The C source of ``spikeforge.kernels.sparse_backward`` (compiled by ``kernels.sparse.load``:
``scalar_t`` becomes float and double, ``_SUF`` the dtype suffix)."""
from .sparse import NONZEROS, TRANSPOSE

#: layers wider than this many neurons run the backward's time loop in column blocks of this width
#: (and scatter the weight gradient per spike; ``sparse_backward.backward`` groups it only below)
BLOCK = 8192

_SOURCE = NONZEROS + TRANSPOSE + r"""
/* The spike function's argument of row r = (t, b), from the affine form u = au v + cu y + eu with v
   the state before the step (the recorded trace's row r - B, or v0 at t = 0). */
#define SF_U(j) (au[j] * vp[j] + cu[j] * yr[j] + eu[j])
#define SF_ROW                                                               \
  int64_t t = r / B, b = r - t * B;                                          \
  const scalar_t* restrict vp = t ? vtr + (r - B) * N : v0 + b * N;          \
  const scalar_t* restrict yr = y + r * N;                                   \
  const scalar_t* restrict zr = z + r * N;

/* Bits of (|u[i]| < w) for 64 entries (NaN: 0), gathered by sign bits with AVX as sf_mask64. */
static inline uint64_t sf_inside64_SUF(const scalar_t* restrict u, scalar_t w) {
  uint64_t m = 0;
#if defined(__AVX__)
  if (sizeof(scalar_t) == 4) {
    const __m256 hi = _mm256_set1_ps((float)w), lo = _mm256_set1_ps(-(float)w);
    for (int k = 0; k < 8; k++) {
      const __m256 v = _mm256_loadu_ps((const float*)u + 8 * k);
      const __m256 in = _mm256_and_ps(_mm256_cmp_ps(v, hi, _CMP_LT_OQ), _mm256_cmp_ps(v, lo, _CMP_GT_OQ));
      m |= (uint64_t)(uint32_t)_mm256_movemask_ps(in) << (8 * k);
    }
  } else {
    const __m256d hi = _mm256_set1_pd((double)w), lo = _mm256_set1_pd(-(double)w);
    for (int k = 0; k < 16; k++) {
      const __m256d v = _mm256_loadu_pd((const double*)u + 4 * k);
      const __m256d in = _mm256_and_pd(_mm256_cmp_pd(v, hi, _CMP_LT_OQ), _mm256_cmp_pd(v, lo, _CMP_GT_OQ));
      m |= (uint64_t)(uint32_t)_mm256_movemask_pd(in) << (4 * k);
    }
  }
#else
  for (int64_t i = 0; i < 64; i++) m |= (uint64_t)((u[i] < w) & (u[i] > -w)) << i;
#endif
  return m;
}

/* Per row: how many entries are active (|u| < w) and how many spiked (z != 0), and both as bit masks
   (NW = ceil(N / 64) words per row: bit j % 64 of word j / 64; smask NULL: spikes not wanted). */
void sf_sbw_fcount_SUF(int64_t T, int64_t B, int64_t N, int threads, const scalar_t* restrict y,
                       const scalar_t* restrict vtr, const scalar_t* restrict v0,
                       const scalar_t* restrict au, const scalar_t* restrict cu,
                       const scalar_t* restrict eu, const scalar_t* restrict z, scalar_t w,
                       uint64_t* restrict amask, uint64_t* restrict smask,
                       int64_t* restrict cnt, int64_t* restrict scnt) {
  const int64_t NW = (N + 63) / 64;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < T * B; r++) {
    SF_ROW
    int64_t k = 0, m = 0;
    for (int64_t q = 0; q < NW; q++) {
      const int64_t j0 = q * 64, n = N - j0 < 64 ? N - j0 : 64;
      uint64_t am = 0, sm = 0;
      if (n == 64) {
        scalar_t ub[64];
        for (int64_t i = 0; i < 64; i++) ub[i] = SF_U(j0 + i);
        am = sf_inside64_SUF(ub, w);
        sm = sf_mask64_SUF(zr + j0, 0);
      } else
        for (int64_t i = 0; i < n; i++) {
          scalar_t u = SF_U(j0 + i);
          am |= (uint64_t)((u < w) & (u > -w)) << i;
          sm |= (uint64_t)(zr[j0 + i] != 0) << i;
        }
      amask[r * NW + q] = am;
      if (smask) smask[r * NW + q] = sm;
      k += __builtin_popcountll(am);
      m += __builtin_popcountll(sm);
    }
    cnt[r] = k;
    scnt[r] = m;
  }
}

/* From the masks: the active entries' columns and u (at offsets off) and the spikes' columns (at soff;
   none if NULL); u is computed again at the active entries only. */
void sf_sbw_fcompact_SUF(int64_t T, int64_t B, int64_t N, int threads, const scalar_t* restrict y,
                         const scalar_t* restrict vtr, const scalar_t* restrict v0,
                         const scalar_t* restrict au, const scalar_t* restrict cu,
                         const scalar_t* restrict eu, const scalar_t* restrict z,
                         const uint64_t* restrict amask, const uint64_t* restrict smask,
                         const int64_t* restrict off, int32_t* restrict idx, scalar_t* restrict uk,
                         const int64_t* restrict soff, int32_t* restrict sidx) {
  const int64_t NW = (N + 63) / 64;
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < T * B; r++) {
    SF_ROW
    (void)zr;
    sf_bits_SUF(amask + r * NW, NW, idx + off[r]);
    for (int64_t k = off[r]; k < off[r + 1]; k++) uk[k] = SF_U(idx[k]);
    if (soff) sf_bits_SUF(smask + r * NW, NW, sidx + soff[r]);
  }
}
#undef SF_ROW
#undef SF_U

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

static inline scalar_t hsum_SUF(V a) {
  scalar_t s = 0;
  for (int u = 0; u < VW; u++) s += a[u];
  return s;
}

/* dot(W^T[i], g) for the n columns i = idx[0..n), four rows of W^T at a time (four independent sums
   hide the latency of the additions): into a row of gx (row[i], 0 elsewhere; row NULL: none) and in
   the entries' order (val[k]; NULL: none). */
static inline void dots_SUF(const scalar_t* restrict wt, const int32_t* restrict idx, int64_t n,
                            const scalar_t* restrict g, int64_t N, int64_t IN, scalar_t* restrict row,
                            scalar_t* restrict val) {
  if (row) for (int64_t i = 0; i < IN; i++) row[i] = 0;
  int64_t k = 0;
  for (; k + 4 <= n; k += 4) {
    const scalar_t* restrict w0 = wt + (int64_t)idx[k] * N;
    const scalar_t* restrict w1 = wt + (int64_t)idx[k + 1] * N;
    const scalar_t* restrict w2 = wt + (int64_t)idx[k + 2] * N;
    const scalar_t* restrict w3 = wt + (int64_t)idx[k + 3] * N;
    V a0 = {0}, a1 = {0}, a2 = {0}, a3 = {0};
    int64_t j = 0;
    for (; j + VW <= N; j += VW) {
      V gv = *(const V*)(g + j);
      a0 += *(const V*)(w0 + j) * gv;
      a1 += *(const V*)(w1 + j) * gv;
      a2 += *(const V*)(w2 + j) * gv;
      a3 += *(const V*)(w3 + j) * gv;
    }
    scalar_t s0 = hsum_SUF(a0), s1 = hsum_SUF(a1), s2 = hsum_SUF(a2), s3 = hsum_SUF(a3);
    for (; j < N; j++) { s0 += w0[j] * g[j]; s1 += w1[j] * g[j]; s2 += w2[j] * g[j]; s3 += w3[j] * g[j]; }
    if (row) { row[idx[k]] = s0; row[idx[k + 1]] = s1; row[idx[k + 2]] = s2; row[idx[k + 3]] = s3; }
    if (val) { val[k] = s0; val[k + 1] = s1; val[k + 2] = s2; val[k + 3] = s3; }
  }
  for (; k < n; k++) {
    const scalar_t* restrict w0 = wt + (int64_t)idx[k] * N;
    V a0 = {0}, a1 = {0};
    int64_t j = 0;
    for (; j + 2 * VW <= N; j += 2 * VW) {
      a0 += *(const V*)(w0 + j) * *(const V*)(g + j);
      a1 += *(const V*)(w0 + j + VW) * *(const V*)(g + j + VW);
    }
    scalar_t s0 = hsum_SUF(a0 + a1);
    for (; j < N; j++) s0 += w0[j] * g[j];
    if (row) row[idx[k]] = s0;
    if (val) val[k] = s0;
  }
}

/* gx (R, IN): gx[r, i] = dot(W^T[i], g[r]) at the entries i = idx[k], k in off[r]..off[r + 1] (the
   active set of the layer that produced this layer's input), 0 elsewhere (each row is zeroed here,
   while it is in cache, not by a separate pass); or (gx NULL) only those values, vals[k]. */
void sf_sbw_gx_SUF(int64_t R, int64_t N, int64_t IN, int threads, const int64_t* restrict off,
                   const int32_t* restrict idx, const scalar_t* restrict wt, const scalar_t* restrict g,
                   scalar_t* restrict gx, scalar_t* restrict vals) {
  #pragma omp parallel for num_threads(threads) schedule(static)
  for (int64_t r = 0; r < R; r++)
    dots_SUF(wt, idx + off[r], off[r + 1] - off[r], g + r * N, N, IN, gx ? gx + r * IN : 0, vals ? vals + off[r] : 0);
}

/* The COO indices (3, nA) of the CSR entries (off, idx) over rows r = t B + b of a (T, B, N) tensor:
   t, b and the column of each entry, in the CSR's (lexicographic) order. */
void sf_sbw_coo_SUF(int64_t R, int64_t B, const int64_t* restrict off, const int32_t* restrict idx,
                    int64_t* restrict ind) {
  const int64_t n = off[R];
  for (int64_t r = 0; r < R; r++) {
    const int64_t t = r / B, b = r - t * B;
    for (int64_t k = off[r]; k < off[r + 1]; k++) { ind[k] = t; ind[n + k] = b; ind[2 * n + k] = idx[k]; }
  }
}

/* The machine's own vector width (bytes) and accumulators (vectors) per pass over an input's rows. A
   vector wider than the registers (64 bytes on AVX2) kept gcc from holding the accumulators in
   registers: they went through the stack in halves, and the flush ran ~6x slower (Zen 3). Defined once
   per library; a test builds every width (-DSF_VB=16/32/64) on any machine. */
#ifndef SF_VB
#if defined(__AVX512F__)
#define SF_VB 64
#elif defined(__AVX__)
#define SF_VB 32
#else
#define SF_VB 16
#endif
#endif
#ifndef SF_ACC
#define SF_ACC (SF_VB == 64 ? 16 : 8)   /* of 32 registers (AVX-512), of 16 (AVX) */
#endif
typedef scalar_t W_SUF __attribute__((vector_size(SF_VB), aligned(sizeof(scalar_t)), may_alias));
#define W W_SUF
#define WW ((int64_t)(SF_VB / sizeof(scalar_t)))

/* The weight gradient's scatter for m buffered rows of gI (hb, row l is row rows[l] of the input's
   CSR xoff/xidx): gw[i] += the sum of hb[l] over the rows l where input i spiked. The spikes are
   grouped by input first (a counting sort into lst; st[i] ends up at the end of input i's run), so
   each input's rows add up in registers, SF_ACC vectors of columns at a time, and gw[i] is read and
   written once per flush instead of once per spike (measured: the per-spike read-modify-write of
   gw rows from L2 was 2/3 of the layer's backward). */
static void sf_flush_SUF(int64_t m, const int64_t* restrict rows, const int64_t* restrict xoff,
                         const int32_t* restrict xidx, const scalar_t* restrict hb, int64_t N, int64_t IN,
                         int32_t* restrict st, int32_t* restrict lst, scalar_t* restrict gw) {
  for (int64_t i = 0; i <= IN; i++) st[i] = 0;
  for (int64_t l = 0; l < m; l++)
    for (int64_t q = xoff[rows[l]]; q < xoff[rows[l] + 1]; q++) st[xidx[q] + 1]++;
  for (int64_t i = 0; i < IN; i++) st[i + 1] += st[i];
  for (int64_t l = 0; l < m; l++)
    for (int64_t q = xoff[rows[l]]; q < xoff[rows[l] + 1]; q++) lst[st[xidx[q]]++] = (int32_t)l;
  for (int64_t i = 0; i < IN; i++) {
    const int32_t q0 = i ? st[i - 1] : 0, q1 = st[i];
    if (q0 == q1) continue;
    scalar_t* restrict o = gw + i * N;
    int64_t j = 0;
    for (; j + SF_ACC * WW <= N; j += SF_ACC * WW) {
      W acc[SF_ACC];
      #pragma GCC unroll 16
      for (int u = 0; u < SF_ACC; u++) acc[u] = (W){0};
      for (int32_t q = q0; q < q1; q++) {
        const scalar_t* restrict s = hb + (int64_t)lst[q] * N + j;
        #pragma GCC unroll 16
        for (int u = 0; u < SF_ACC; u++) acc[u] += *(const W*)(s + u * WW);
      }
      #pragma GCC unroll 16
      for (int u = 0; u < SF_ACC; u++) *(W*)(o + j + u * WW) += acc[u];
    }
    for (; j + WW <= N; j += WW) {
      W a = {0};
      for (int32_t q = q0; q < q1; q++) a += *(const W*)(hb + (int64_t)lst[q] * N + j);
      *(W*)(o + j) += a;
    }
    for (; j < N; j++) {
      scalar_t a = 0;
      for (int32_t q = q0; q < q1; q++) a += hb[(int64_t)lst[q] * N + j];
      o[j] += a;
    }
  }
}
#undef W
#undef WW

/* The whole backward, one pass per batch row b in reverse time, gI never leaving the cache:
   dh = gate * dv + (ds at the active entries of row r = (t, b)), gate 1, or g1 at the spikes
   (CSR soff/sidx; none given: no gate); gI = c dh; dv = a dh. Then, from gI: the bias gradient, the weight gradient
   (gwt[i] += gI for each active input i of row r, CSR xoff/xidx; or gI is written to `gi` for a
   dense product when xoff is NULL), and gx[r, i] = dot(W^T[i], gI) at the previous layer's active
   entries (CSR poff/pidx; none when poff is NULL), 0 elsewhere (row r zeroed here). Each thread adds into its own slice of
   gwt_p (threads, IN, N) and gb_p (threads, N), which it zeroes first; dv (B, N) is the adjoint (0
   after the last step). Wide layers run the time loop once per block of SF_NB neurons (their rows of
   a, c, dv, the adjoint and gb stay in L2; each row's CSR ranges are walked by a cursor per step,
   curs_p (threads, 2 T)); the input gradient and the trace coefficients need whole rows. With hb_p
   (and whole rows), the scatter is grouped: each thread buffers its rows of gI that have input spikes
   (hb_p (threads, hrows, N), their row numbers in hrow_p) and adds them up by input in sf_flush when
   hrows rows or lcap (>= IN) spikes are buffered (lst_p (threads, lcap), st_p (threads, IN + 1)).
   gzk: the output gradient given at the active entries only (their order; gz is not read);
   gxk: gx written at the previous layer's active entries only (their order; gx NULL);
   gw (with gwt_p): the weight gradient (N, IN), the threads' slices summed and transposed at the end
   in blocks of 16 inputs (the layer's own layout: torch's copy of the transposed view was ~10 % of
   the whole network's sparse backward). */
#define SF_NB """ + str(BLOCK) + r"""
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
                         scalar_t* restrict gx, scalar_t* restrict gi, scalar_t* restrict work,
                         int64_t* restrict curs_p, scalar_t* restrict hb_p, int64_t hrows,
                         int64_t* restrict hrow_p, int32_t* restrict lst_p, int64_t lcap,
                         int32_t* restrict st_p, const scalar_t* restrict gzk, scalar_t* restrict gxk,
                         scalar_t* restrict gwo) {
  const int64_t NB = (poff || coef || N <= SF_NB) ? N : SF_NB;
  const int grouped = hb_p && xoff && NB == N;
  #pragma omp parallel num_threads(threads)
  {
    FTZ_ON
    int tid = omp_get_thread_num();
    scalar_t* restrict gw = gwt_p ? gwt_p + (int64_t)tid * IN * N : 0;
    int64_t* restrict lastk = lastk_p ? lastk_p + (int64_t)tid * 2 * N : 0;
    int64_t* restrict ptime = lastk ? lastk + N : 0;
    scalar_t* restrict gb = gb_p + (int64_t)tid * N;
    for (int64_t j = 0; j < N; j++) gb[j] = 0;
    if (gw) for (int64_t i = 0; i < IN * N; i++) gw[i] = 0;
    scalar_t* restrict hw = work + (int64_t)tid * 2 * N;
    scalar_t* restrict pend = hw + N;
    scalar_t* restrict hb = grouped ? hb_p + (int64_t)tid * hrows * N : 0;
    int64_t* restrict hrow = grouped ? hrow_p + (int64_t)tid * hrows : 0;
    int32_t* restrict lst = grouped ? lst_p + (int64_t)tid * lcap : 0;
    int32_t* restrict st = grouped ? st_p + (int64_t)tid * (IN + 1) : 0;
    int64_t m = 0, nsp = 0;   /* rows buffered in hb, their input spikes */
    int64_t* restrict cur = curs_p + (int64_t)tid * 2 * T;   /* per step: the next active entry, spike */
    int64_t* restrict scur = cur + T;
    #pragma omp for schedule(static)
    for (int64_t b = 0; b < B; b++) {
      scalar_t* restrict d = dv + b * N;
      for (int64_t j = 0; j < N; j++) d[j] = 0;
      for (int64_t t = 0; t < T; t++) { cur[t] = off[t * B + b]; scur[t] = soff ? soff[t * B + b] : 0; }
      for (int64_t j0 = 0; j0 < N; j0 += NB) {
        const int64_t j1 = j0 + NB < N ? j0 + NB : N;
        for (int64_t j = j0; j < j1; j++) pend[j] = 0;
        for (int64_t t = T - 1; t >= 0; t--) {
          int64_t r = t * B + b, q0 = scur[t], q1 = q0, k1 = cur[t];
          const int64_t ns = xoff ? xoff[r + 1] - xoff[r] : 0;
          if (grouped && ns && (m == hrows || nsp + ns > lcap)) {
            sf_flush_SUF(m, hrow, xoff, xidx, hb, N, IN, st, lst, gw);
            m = nsp = 0;
          }
          scalar_t* restrict h = grouped && ns ? hb + m * N : hw;   /* a row without input spikes adds nothing to gW */
          if (soff) while (q1 < soff[r + 1] && sidx[q1] < j1) q1++;
          while (k1 < off[r + 1] && idx[k1] < j1) k1++;
          /* dh is built in place in d, then split into gI (h) and the next dv (d) */
          if (soff)   /* the detached reset's slope at the spikes of row r (CSR soff/sidx) */
            for (int64_t q = q0; q < q1; q++) d[sidx[q]] *= g1[sidx[q]];
          if (coef && hard)   /* a spike at t ends the segment of the entries after it: their coefficients
                                 decayed to t (pend, kept at time ptime), times tr[t], are subtracted */
            for (int64_t q = q0; q < q1; q++) {
              int64_t j = sidx[q];
              if (pend[j] != 0) {
                fval[lastk[j]] = pend[j] * apow[ptime[j] - t];
                frow[lastk[j]] = (int32_t)r;
                pend[j] = 0;
              }
            }
          const scalar_t* restrict gzr = gz ? gz + r * N : 0;
          for (int64_t k = cur[t]; k < k1; k++) {
            int64_t j = idx[k];
            scalar_t ds = (gzk ? gzk[k] : gzr[j]) * sg[k];
            d[j] += ds;
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
          cur[t] = k1;
          scur[t] = q1;
          for (int64_t j = j0; j < j1; j++) { scalar_t u = d[j]; h[j] = c[j] * u; d[j] = a[j] * u; gb[j] += h[j]; }
          if (gi) for (int64_t j = j0; j < j1; j++) gi[r * N + j] = h[j];
          if (grouped && ns) {
            hrow[m++] = r;
            nsp += ns;
          } else if (xoff && !grouped)
            for (int64_t q = xoff[r]; q < xoff[r + 1]; q++) {
              scalar_t* restrict o = gw + (int64_t)xidx[q] * N;
              for (int64_t j = j0; j < j1; j++) o[j] += h[j];
            }
          if (poff)   /* NB = N here */
            dots_SUF(wt, pidx + poff[r], poff[r + 1] - poff[r], h, N, IN, gx ? gx + r * IN : 0,
                     gxk ? gxk + poff[r] : 0);
        }
      }
    }
    if (grouped && m) sf_flush_SUF(m, hrow, xoff, xidx, hb, N, IN, st, lst, gw);
    if (gwo) {
      const int nth = omp_get_num_threads();
      #pragma omp barrier
      #pragma omp for schedule(static)
      for (int64_t i0 = 0; i0 < IN; i0 += 16) {
        const int64_t ni = IN - i0 < 16 ? IN - i0 : 16;
        scalar_t* restrict s0 = gwt_p + i0 * N;
        for (int p = 1; p < nth; p++) {
          const scalar_t* restrict sp = gwt_p + (int64_t)p * IN * N + i0 * N;
          for (int64_t e = 0; e < ni * N; e++) s0[e] += sp[e];
        }
        sf_transpose_SUF(s0, N, gwo + i0, IN, 0, ni, N);
      }
    }
    FTZ_OFF
  }
}
#undef SF_NB
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
