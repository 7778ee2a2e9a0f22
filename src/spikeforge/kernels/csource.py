"""C source for the fused CPU kernels, printed from a spec's traced step graphs.

Both loop templates share one layout. The ``(T, B, N)`` sequence is cut into work items
of ``rows`` batch rows x ``cols`` neurons (whole rows when N is small, so that a work item
covers about ``CHUNK`` contiguous elements). A work item keeps its state in a local
buffer, runs the whole time loop, and vectorises over its neurons (``omp simd``): each
time step streams one long contiguous segment of every tensor. OpenMP spreads work items
over threads.

* ``sf_forward``: step forward; writes outputs, the final state and, when asked, the
  state after every step (the trace, which is also what backward reads).
* ``sf_backward``: reverse time; recomputes each step's vector-Jacobian product from the
  saved pre-step state and accumulates parameter gradients per (row, neuron).
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

from . import printer
from .printer import COMMON, Target, c_const
from .trace import Traced

CHUNK = 16384  # elements per work item: long contiguous segments, state fits in L2
aten = torch.ops.aten


def _ctype(dtype: torch.dtype) -> str:
    return {torch.float32: "float", torch.float64: "double", torch.bool: "int"}[dtype]


# torch's maximum, minimum and clamp propagate NaN (C's fmax drops it); as selects they vectorise.
# Neither comparison holds only when an operand is NaN, and then the sum is NaN. (Testing
# `m != m` on an inner max instead, gcc turns it into a select of masks that it cannot
# vectorise when both of a clamp's bounds are variables.)
_MAX = "(({0}) > ({1}) ? ({0}) : ({1}) >= ({0}) ? ({1}) : ({0}) + ({1}))"
_MIN = "(({0}) < ({1}) ? ({0}) : ({1}) <= ({0}) ? ({1}) : ({0}) + ({1}))"
# clamp to a number bound {1} (never NaN): one compare and select each (x86's max/min instructions),
# NaN in x kept, and x kept where it equals the bound, as torch.clamp does (-0.0 stays -0.0). The
# bound is a variable that gcc cannot fold (`sf_opaque`, declared before the loops: c_target's
# `bound`): with a literal, gcc moves the constant to the comparison's right, no longer sees
# vmaxps/vminps, and a clamp took 5 instructions (three compares and two blends) instead of 2.
_MAX_X = "(({1}) > ({0}) ? ({1}) : ({0}))"
_MIN_X = "(({1}) < ({0}) ? ({1}) : ({0}))"


def c_target(dtype: torch.dtype) -> Target:
    f = "f" if dtype == torch.float32 else ""
    one = c_const(1.0, dtype)
    bound = _Bounds()
    hi, lo = _EXP_CONSTANTS[_ctype(dtype)][3:5]
    exp = f"sf_exp{f}({{0}}, {bound(hi + f)}, {bound(lo + f)})"   # its argument's clamp, as min/max instructions
    ops = dict(COMMON)
    ops.update({
        aten.exp.default: exp, aten.log.default: f"log{f}({{0}})",
        aten.atan.default: f"atan{f}({{0}})", aten.erf.default: f"erf{f}({{0}})",
        aten.tanh.default: f"tanh{f}({{0}})", aten.sqrt.default: f"sqrt{f}({{0}})",
        aten.abs.default: f"fabs{f}({{0}})", aten.reciprocal.default: f"({one} / {{0}})",
        aten.floor.default: f"floor{f}({{0}})",
        aten.rsqrt.default: f"({one} / sqrt{f}({{0}}))",
        aten.sigmoid.default: f"({one} / ({one} + {exp.replace('{0}', '-{0}')}))",
        aten.where.self: "({0} ? {1} : {2})",
        aten.maximum.default: _MAX, aten.minimum.default: _MIN,
        aten.pow.Tensor_Scalar: f"pow{f}({{0}}, {{1}})", aten.sign.default: "(({0} > 0) - ({0} < 0))",
        "cast": "(({t})({0}))", "max": _MAX, "min": _MIN, "max_x": _MAX_X, "min_x": _MIN_X,
        # a truth value as 1/0 by a select (a compare and an and with 1.0's bits) rather than a conversion
        # from int (an and with 1, then a 3-cycle int -> float convert on the step's critical path): the
        # same values; EIF's forward 5.7 % faster (RESULTS.md 19s)
        "bool_cast": "({0} ? {one} : {zero})",
    })
    return Target(ops=ops, const=c_const, typename=_ctype,
                  declare=lambda name, expr, dt: f"const {_ctype(dt)} {name} = {expr};", bound=bound)


class _Bounds(dict):
    """Clamp bound literal -> the name of its opaque variable (see _MAX_X), named as the printer asks."""

    def __call__(self, literal: str) -> str:
        return self.setdefault(literal, f"k{len(self)}")

    def decls(self) -> list[str]:
        """Their declarations, before a kernel's loops."""
        return [f"const scalar_t {name} = sf_opaque({lit});" for lit, name in self.items()]


def _param_decls(layout: tuple[bool, ...]) -> tuple[list[str], list[str]]:
    """Declarations before the loops, and the per-element expression of each parameter."""
    decls, exprs = [], []
    for k, per_neuron in enumerate(layout):
        if per_neuron:
            decls.append(f"const scalar_t* restrict p{k} = params[{k}];")
            exprs.append(f"p{k}[f0 + i]")
        else:
            decls.append(f"const scalar_t p{k} = params[{k}][0];")
            exprs.append(f"p{k}")
    return decls, exprs


_HEAD = """#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
typedef {ctype} scalar_t;
/* c, as a value the compiler cannot fold (a clamp's bound: see _MAX_X) */
static inline scalar_t sf_opaque(scalar_t c) {{ __asm__("" : "+m"(c)); return c; }}
"""

# Subnormal numbers flushed to zero (inputs and results) while a kernel runs, on x86: a silent
# neuron's state or adjoint decays geometrically and, after ~130 steps at a decay of 1/2, into the
# subnormal range, where x86 arithmetic is ~100x slower: the dense LIF backward on T = 500 ran 2.1x
# slower for it (RESULTS.md 17c). Values differ from the reference path only where it is subnormal,
# by less than the smallest normal number (FLT_MIN / DBL_MIN; tests/test_kernels_cpu.py).
# Each thread of a kernel's parallel region sets its flags and restores them at the end.
_FTZ = """#if defined(__x86_64__) || defined(__SSE2__)
#include <xmmintrin.h>
static inline unsigned int sf_ftz_on(void) { unsigned int c = _mm_getcsr(); _mm_setcsr(c | 0x8040u); return c; }
static inline void sf_ftz_off(unsigned int c) { _mm_setcsr(c); }
#else
static inline unsigned int sf_ftz_on(void) { return 0u; }
static inline void sf_ftz_off(unsigned int c) { (void)c; }
#endif
"""

# A row of an output written with non-temporal (streaming) stores: they skip reading the destination's
# cache lines before overwriting them (the read-for-ownership of ordinary stores), a third of the
# memory traffic of writing a large output. Measured on the Intel host: 256 MB read + written at
# 25.5 GB/s with ordinary stores, 32-33 GB/s with streaming ones. Only for outputs far larger than the
# caches (``cpu.STREAM_BYTES``): a streamed row is not in cache for the next reader. Each block of SB
# neurons of a row is computed into a buffer in L1 and copied out by this loop before the next block
# (whole 16 KB rows at once left the core waiting on the store buffers between rows: EIF's forward was
# 8 % slower streamed; blocks of 128 measured best of 64-1024); without x86 vector extensions it is a
# memcpy. With streaming, the forward also prefetches the next step's input row (sf_prefetch).
# Measured (T = 500, B = 16, n = 4096, 2 threads, interleaved): forward + backward LIF 39.9 -> 33.9 ms,
# EIF 46.8 -> 43.5, XyloLIF 55.1 -> 52.9 (RESULTS.md 19n).
_STREAM = """#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#include <immintrin.h>
#endif
#define SB 128   /* neurons per block of a row whose outputs stream out before the next block is computed */
static inline void sf_stream(scalar_t* restrict dst, const scalar_t* restrict src, int64_t n) {
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
#if defined(__AVX512F__)
    const int64_t vb = 64;
#elif defined(__AVX__)
    const int64_t vb = 32;
#else
    const int64_t vb = 16;
#endif
    int64_t i = 0;
    for (; i < n && (uintptr_t)(dst + i) % vb; ++i) dst[i] = src[i];
    for (; i + vb / (int64_t)sizeof(scalar_t) <= n; i += vb / (int64_t)sizeof(scalar_t)) {
#if defined(__AVX512F__)
        _mm512_stream_si512((void*)(dst + i), _mm512_loadu_si512((const void*)(src + i)));
#elif defined(__AVX__)
        _mm256_stream_si256((__m256i*)(dst + i), _mm256_loadu_si256((const __m256i*)(src + i)));
#else
        _mm_stream_si128((__m128i*)(dst + i), _mm_loadu_si128((const __m128i*)(src + i)));
#endif
    }
    for (; i < n; ++i) dst[i] = src[i];
#else
    memcpy(dst, src, n * sizeof(scalar_t));
#endif
}
/* The n values at p fetched into the caches ahead of their use (the next step's input row, read while
   this step's output streams out: measured LIF forward 14.9 -> 12.6 ms at T = 500, B = 16, n = 4096;
   without streaming stores it was slower, 18 ms). */
static inline void sf_prefetch(const scalar_t* p, int64_t n) {
    for (int64_t i = 0; i < n; i += 64 / (int64_t)sizeof(scalar_t)) __builtin_prefetch(p + i, 0, 3);
}
/* Streaming stores are weakly ordered: each thread fences them once, before its kernel returns. */
static inline void sf_stream_fence(void) {
#if defined(__AVX512F__) || defined(__AVX__) || defined(__SSE2__)
    _mm_sfence();
#endif
}
"""

# exp(x) = 2^k exp(r) with x = k ln2 + r (Cody-Waite, ln2 in two parts), exp(r) by a polynomial
# (Horner with fused multiply-adds: one rounding each, in vector lanes and scalar tails alike),
# 2^(k - 1) built in the exponent bits (k found by the add-1.5*2^m rounding trick). x is first
# clamped to [lo, hi], chosen so that the exponent bits alone give the limits: at lo, k is the
# lowest exponent and 2^(k - 1) is 0, so the result is 0 (no subnormals); at hi, it overflows to
# inf. NaN passes the clamps and stays NaN. No selects after the polynomial. The bounds come in as
# arguments, opaque variables of the kernel (as a clamp's, _MAX_X): with literals gcc compiled each
# clamp to a compare and a blend instead of one min/max instruction.
# The polynomial is twice exp(r) on |r| <= 0.35 (scaling by 2 is exact), so 2^(k - 1), which
# reaches the exponent bits' ends, needs no further product. float: a degree-6 minimax fit
# (weighted least squares, Lawson iterations; relative error 2e-9, 1.9e-8 with its coefficients
# rounded to float: 0.16 ulp, against 7.9e-9 for the degree-7 Taylor polynomial it replaced, which
# took one fused multiply-add more; EIF alone 46.5 -> 44.5 ms: it is bound by arithmetic);
# double: Taylor, degree 13 (2 / k!).
# Per C type: (name, int type, suffix, hi, lo, log2(e), rounding magic, its bits, ln2 high, ln2 low,
# coefficients of r^0, r^1, ..., exponent bias - 1, mantissa bits).
_EXP_CONSTANTS = {
    "float": ("sf_expf", "int32_t", "f", "89.0", "-87.0", "1.44269504088896341", "12582912.0",
              "0x4B400000", "0.693359375", "-2.12194440e-4",
              ("2.0", "2.0", "9.999998212e-01", "3.333282173e-01", "8.333657682e-02", "1.675127074e-02",
               "2.767162630e-03"), 126, 23),
    "double": ("sf_exp", "int64_t", "", "710.0", "-708.5", "1.4426950408889634074",
               "6755399441055744.0", "0x4338000000000000LL", "6.93147180369123816490e-01",
               "1.90821492927058770002e-10", tuple(f"2.0 / {math.factorial(k)}.0" for k in range(14)), 1022, 52),
}


def _exp_source(ctype: str) -> str:
    name, itype, f, hi, lo, log2e, magic, magic_bits, ln2hi, ln2lo, coef, bias, shift = _EXP_CONSTANTS[ctype]
    lit = [c + f for c in coef]
    horner = [f"    {ctype} p = {lit[-1]};"] + [f"    p = fma{f}(p, r, {c});" for c in reversed(lit[:-1])]
    return "\n".join([
        f"static inline {ctype} {name}({ctype} x, {ctype} hi, {ctype} lo) {{",
        "    " + ctype + " xc = hi < x ? hi : x;",
        "    xc = lo > xc ? lo : xc;",
        f"    {ctype} kf = fma{f}(xc, {log2e}{f}, {magic}{f});",
        f"    {itype} kb;",
        "    memcpy(&kb, &kf, sizeof kb);",
        f"    kf = kf - {magic}{f};",
        f"    const {ctype} r = fma{f}(-kf, {ln2lo}{f}, fma{f}(-kf, {ln2hi}{f}, xc));",
        *horner,
        f"    const {itype} e = (kb - {magic_bits} + {bias}) << {shift};  /* 2^(k - 1) */",
        f"    {ctype} s;",
        "    memcpy(&s, &e, sizeof s);",
        f"    return p * s;",
        "}", ""])


# exp that vectorises (libm's keeps a loop scalar): the same arithmetic in vector lanes and
# scalar tails, so a recomputed state equals the forward one bit for bit; < 2 ulp (tested).
_EXP = _exp_source("float") + _exp_source("double")

# Work items: rows x cols blocks of about `chunk` elements, at least one per thread.
_ITEMS = """    const int64_t M = B * N;
    int64_t rows = 1, cols = N < {chunk} ? N : {chunk};
    if (N < {chunk}) {{
        const int64_t per = (B + nthreads - 1) / nthreads;
        rows = {chunk} / N < per ? {chunk} / N : per;
        if (rows < 1) rows = 1;
    }}
    const int64_t nrb = (B + rows - 1) / rows, ncb = (N + cols - 1) / cols;
{param_decls}
    #pragma omp parallel num_threads(nthreads)
    {{
    const unsigned int csr = sf_ftz_on();
    #pragma omp for schedule(static){reduction}
    for (int64_t w = 0; w < nrb * ncb; ++w) {{
        const int64_t b0 = (w / ncb) * rows, f0 = (w % ncb) * cols;
        const int64_t nr = B - b0 < rows ? B - b0 : rows, len = N - f0 < cols ? N - f0 : cols, E = nr * len;
        scalar_t* buf = (scalar_t*)malloc(sizeof(scalar_t) * ({nbuf}) * E);
{body}
        free(buf);
    }}
    sf_stream_fence();
    sf_ftz_off(csr);
    }}
"""


# A forward step with much arithmetic on a long chain runs as two loops instead of one. A loop whose
# elements are independent but each runs a long chain of dependent operations (EIF: its exp and ~15
# more, ~80 cycles) is bound by how many operations the core holds waiting for their inputs, not by
# its arithmetic units: all of an element's operations enter the scheduler together and wait, on
# average, half the chain. Cut in two loops over each block of SB neurons, the first writing the values
# the second needs into small arrays (in L1), each operation waits half as long and more elements are
# in flight: the same operations in the same order, the same values. Measured (RESULTS.md 19t, the
# forward step and the backward's recomputation of it): EIF 41.9 -> 37.2 ms per forward + backward,
# XyloLIF 56.3 -> 54.0; the forward steps of less work (Izhikevich: 12 % slower cut; QIF, CubaLIF, LIF)
# are nearer the memory's speed and stay one loop, as do the reverse steps (Izhikevich, QIF and CubaLIF
# slower cut, EIF's no faster: they stream the gradients and the kept values as well).
# Cycles an operation adds to its result's chain, roughly (x86 vector latencies; the inline exp ~40);
# any other operation 3.
_LATENCY = {**dict.fromkeys([aten.exp.default, aten.log.default, aten.atan.default, aten.erf.default,
                             aten.tanh.default], 40),
            aten.sigmoid.default: 50, aten.pow.Tensor_Scalar: 80, aten.sqrt.default: 15,
            aten.rsqrt.default: 25, aten.reciprocal.default: 11, aten.div.Tensor: 11, aten.div.Scalar: 11,
            **dict.fromkeys([*printer.CLAMPS, aten.where.self, aten.where.ScalarOther, aten.where.ScalarSelf,
                             aten.where.Scalar, aten.neg.default, aten.abs.default], 1)}
STAGE_WORK = 80   # cycles of operations on x and the states (summed) from which a step is cut in two loops
MAX_CARRY = 2     # values crossing from the first loop to the second, at most


@dataclass(frozen=True)
class Staged:
    """A step's loop body cut in two (``_staged``): ``first``, ``second`` and the declarations of
    the arrays that carry values from one to the other."""
    first: str
    second: str
    arrays: str


def _staged(tr: Traced, lines: list[str], tail: list[str], prefix: str = "n_") -> Staged | None:
    """The forward step's ``lines`` (``printer.emit``'s) and then ``tail`` (its stores) as a ``Staged``
    body, or ``None`` where the operations on x and the states add up to less than ``STAGE_WORK``
    cycles or no cut carries between 1 and ``MAX_CARRY`` values. A value's place in the chain is
    where it is half computed; the cut, between 30 and 70 % of the chain, carries the fewest values
    (then: nearest the middle). Values of the parameters alone (hoisted by the compiler) and one cheap
    operation on inputs are evaluated in each loop that uses them rather than carried; each loop
    keeps only the lines it needs. A carried value keeps its own C type."""
    graph = tr.forward.graph
    fixed = _fixed(graph, range(1 + tr.n_state, 1 + tr.n_state + tr.n_params))
    nodes = {prefix + n.name: n for n in graph.nodes}
    names = [re.search(rf"\b({prefix}\w+) =", ln).group(1) for ln in lines] + [None] * len(tail)
    end, lat = {}, {}
    for name in names[: len(lines)]:
        n = nodes[name]
        if n.name not in fixed:
            lat[name] = _LATENCY.get(n.target, 3)
            end[name] = max((end.get(prefix + a.name, 0) for a in n.all_input_nodes), default=0) + lat[name]
    if sum(lat.values()) < STAGE_WORK:
        return None
    depth = max(end.values())
    mid = {k: end[k] - lat[k] / 2 for k in end if end[k] > lat[k] or lat[k] > 3}   # the others: in both
    token = re.compile(rf"\b{prefix}\w+")
    reads = [set(token.findall(ln)) for ln in lines + tail]

    def needed(loop: list[int], wanted: set[str]) -> list[int]:
        """The lines of ``loop`` that the names ``wanted`` and the stores need."""
        keep, wanted = set(), set(wanted)
        for j in reversed(loop):
            if names[j] is None or names[j] in wanted:
                keep.add(j)
                wanted |= reads[j]
        return [j for j in loop if j in keep]

    def split(cut: float) -> tuple[list[int], list[int], list[str]]:
        """The two loops' lines, and the names the first declares and the second reads."""
        first = [j for j, k in enumerate(names) if k is not None and mid.get(k, -1) < cut]
        second = needed([j for j, k in enumerate(names) if k is None or mid.get(k, cut) >= cut], set())
        read = set().union(*(reads[j] for j in second))
        carry = [k for k in mid if mid[k] < cut and k in read]
        return needed(first, set(carry)), second, carry

    options = [(len(split(c)[2]), abs(c - depth / 2), c) for c in set(mid.values())
               if 0.3 * depth <= c <= 0.7 * depth]
    options = [o for o in options if 1 <= o[0] <= MAX_CARRY]
    if not options:
        return None
    first, second, carry = split(min(options)[2])
    ctype = {k: _ctype(printer._val_dtype(nodes[k], tr.dtype)) for k in carry}
    return Staged("\n".join([lines[j] for j in first] + [f"sf_c{j}[i - i0] = {k};" for j, k in enumerate(carry)]),
                  "\n".join([f"const {ctype[k]} {k} = sf_c{j}[i - i0];" for j, k in enumerate(carry)]
                            + [(lines + tail)[j] for j in second]),
                  "\n".join(f"{ctype[k]} sf_c{j}[SB];" for j, k in enumerate(carry)))


def _fixed(graph: torch.fx.Graph, params: range) -> set[str]:
    """Names of the nodes that depend on the placeholders ``params`` (the parameters) alone."""
    ph = [n.name for n in graph.nodes if n.op == "placeholder"]
    varying = _descendants(graph, [p for k, p in enumerate(ph) if k not in params])
    return {n.name for n in graph.nodes if n.name not in varying}


def _rows(stmt: str | Staged, pre: str = "", indent: int = 8, post: str = "", simd: str = "",
          each: str = "") -> str:
    """A loop over the work item's rows and, inside, a vectorised loop over its neurons;
    ``off`` is the row's offset in a (B, N) slice and ``loc`` its offset in the local buffers.
    ``each``: when ``stream``, the loop runs in blocks of ``SB`` neurons [i0, i1) and ``each`` after
    every block (so ``each`` runs only when streaming); otherwise the plain loop runs (a copy of it:
    one loop with a single block was 5-10 % slower for rows of 20 neurons; it costs ~20 % more
    compile time). A ``Staged`` body always runs in blocks, its two loops one after the other
    (``simd`` on the second); it was faster for rows of 20 neurons too."""
    pad = " " * indent

    def text(s: str, more: str = "    ") -> str:
        return "".join(f"{pad}{more}{ln}\n" for ln in s.splitlines() if ln)

    def loop(body: str, lo: str, hi: str, clause: str) -> str:
        return (f"{pad}    #pragma omp simd{clause}\n{pad}    for (int64_t i = {lo}; i < {hi}; ++i) {{\n"
                + text(body, "        ") + f"{pad}    }}\n")

    def blocks(inner: str) -> str:
        return (f"for (int64_t i0 = 0; i0 < len; i0 += SB) {{\n"
                f"{pad}    const int64_t i1 = i0 + SB < len ? i0 + SB : len;\n" + inner)

    if isinstance(stmt, Staged):
        body = (pad + "    " + blocks(text(stmt.arrays) + loop(stmt.first, "i0", "i1", "")
                                      + loop(stmt.second, "i0", "i1", simd)
                                      + (f"{pad}    if (stream) {{\n" + text(each) + f"{pad}    }}\n" if each else ""))
                + f"{pad}    }}\n")
    elif each:
        body = (f"{pad}    if (stream) " + blocks(loop(stmt, "i0", "i1", simd) + text(each))
                + f"{pad}    }} else {{\n" + loop(stmt, "0", "len", simd) + f"{pad}    }}\n")
    else:
        body = loop(stmt, "0", "len", simd)
    return (f"{pad}for (int64_t r = 0; r < nr; ++r) {{\n"
            f"{pad}    const int64_t off = (b0 + r) * N + f0, loc = r * len;\n"
            + text(pre) + body + text(post) + f"{pad}}}\n")


def _indent(lines, n):
    return "\n".join(" " * n + ln for ln in lines)


def _locals(names_at: list[tuple[str, str]]) -> str:
    return _indent([f"scalar_t* restrict {n} = buf + {at} * E;" for n, at in names_at], 8)


def forward_source(tr: Traced, layout: tuple[bool, ...], target: Target) -> str:
    ns = tr.n_state
    decls, pexpr = _param_decls(layout)
    inputs = ["xt[i]"] + [f"s{k}[loc + i]" for k in range(ns)] + pexpr
    lines, outs = printer.emit(tr.forward.graph, inputs, target, tr.dtype)
    stores = [f"zt[i] = {outs[0]};"] + [f"s{k}[loc + i] = {outs[1 + k]};" for k in range(ns)]
    stores.append("chk += xt[i] * 0;  /* NaN exactly when some x is NaN or inf */")
    body = "\n".join([
        _locals([(f"s{k}", k) for k in range(ns)] + [("zrow", ns)]),
        _indent([f"scalar_t* restrict S{k} = saved[{k}];" for k in range(ns)], 8),
        *(_rows(f"s{k}[loc + i] = state[{k}][off + i];") for k in range(ns)),
        "        for (int64_t t = 0; t < T; ++t) {",
        "            const int64_t save = (t + 1) % K == 0 && (t + 1) / K <= nsave ? ((t + 1) / K - 1) * M : -1;",
        _rows(_staged(tr, lines, stores) or "\n".join(lines + stores), indent=12,
              simd=" reduction(+:chk)",
              post="if (chk != 0) bad = 1;\nif (stream && t + 1 < T) sf_prefetch(x + (t + 1) * M + off, len);",
              each="sf_stream(z + t * M + off + i0, zt + i0, i1 - i0);",
              pre="const scalar_t* restrict xt = x + t * M + off;\n"
                  "scalar_t* restrict zt = stream ? zrow + loc : z + t * M + off;\nscalar_t chk = 0;"),
        "            if (save >= 0) {",
        *(_rows(f"S{k}[save + off + i] = s{k}[loc + i];", indent=16) for k in range(ns)),
        "            }",
        "        }",
        *(_rows(f"state[{k}][off + i] = s{k}[loc + i];") for k in range(ns))])
    items = _ITEMS.format(chunk=CHUNK, param_decls=_indent(decls + target.bound.decls(), 4), nbuf=ns + 1, body=body,
                          reduction=" reduction(|:bad)")
    return ("/* Forward: the state after step t is saved at (t + 1) / K - 1 when K divides t + 1,\n"
            "   for the first nsave such steps (K = 1, nsave = T: the whole trace). Returns 1 if some\n"
            "   x is NaN or inf (checked on the way, instead of in a separate pass), else 0. stream: z is\n"
            "   written with streaming stores (sf_stream). */\n"
            "int sf_forward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
            "                scalar_t* restrict z, scalar_t* const* state, scalar_t* const* saved,\n"
            "                int64_t K, int64_t nsave, const scalar_t* const* params, int stream) {\n"
            "    int bad = 0;\n" + items + "    return bad;\n}\n")


def recomputes(tr: Traced) -> bool:
    """Does backward read the states? Then forward saves checkpoints and backward rebuilds
    each segment from them; else backward needs no state at all."""
    return any(tr.backward_reads()[1: 1 + tr.n_state])


# What `kept` keeps: "costly" values and the "x" cut, and which values it reads as the "next" step's
# states (benchmarks/kept_values.py compares subsets).
KEEP = frozenset({"next", "costly", "x"})

# Operations worth keeping from a segment's recomputation for the reverse step rather than
# evaluating again (each is many vector instructions, or a division).
_COSTLY = {aten.exp.default, aten.log.default, aten.atan.default, aten.erf.default, aten.tanh.default,
           aten.sqrt.default, aten.rsqrt.default, aten.sigmoid.default, aten.reciprocal.default,
           aten.div.Tensor, aten.pow.Tensor_Scalar}


def _keys(graph: torch.fx.Graph, n_in: int) -> dict[str, tuple]:
    """A structural key per node: the op and its arguments' keys; the first ``n_in``
    placeholders (x, states, parameters) by position, any later one as never equal."""
    keys, k = {}, 0
    for n in graph.nodes:
        if n.op == "placeholder":
            keys[n.name] = ("in", k) if k < n_in else ("other", n.name)
            k += 1
        elif n.op == "call_function":
            args = tuple(keys[a.name] if isinstance(a, torch.fx.Node) else ("c", repr(a)) for a in n.args)
            keys[n.name] = (str(n.target), args, tuple(sorted((a, repr(b)) for a, b in n.kwargs.items())))
        else:
            keys[n.name] = ("other", n.name)
    return keys


def _descendants(graph: torch.fx.Graph, roots: list[str]) -> set[str]:
    """Names of ``roots`` and of every node that depends on one of them."""
    out = set(roots)
    for n in graph.nodes:
        if any(a.name in out for a in n.all_input_nodes):
            out.add(n.name)
    return out


def _used(want: tuple[bool, ...], ns: int) -> list[bool]:
    """Which outputs of the backward graph (gx, *gstate, *gparams) the gradients ``want`` use."""
    return [want[0], *([True] * ns), *want[1:]]


def kept(tr: Traced, want: tuple[bool, ...] | None = None) -> tuple[list[str], dict[str, int]]:
    """Values of the step that a recomputing backward keeps from the segment's recomputation
    (where the forward step computes them anyway) in its buffer, next to the states, so that
    its reverse step reads them instead of computing them again: ``(forward nodes, {backward
    node: its slot})``, for the gradients in ``want`` (as ``backward_source``). A step's slots
    in the buffer are its pre-step states (0 .. ns - 1), then the kept values (ns + j for the
    j-th forward node), then the next step's states (nq + k, nq = ns + number kept).

    Read are (0) the values the step returns as its new states, from the next step's slots,
    which the recomputation fills anyway (XyloLIF's synaptic current after its shift decay:
    the reverse step skips that chain). Kept are (1) the costly values (``_COSTLY``: EIF's exp is
    then evaluated twice per element and step instead of three times) and (2), when the reverse
    step would still read x, the one value that cuts x off with the least left to recompute
    (EIF's and LIF's membrane before the spike), so that x is streamed from memory once per
    backward instead of twice. Values that depend on parameters only are not kept (they are
    hoisted out of the loops)."""
    if not recomputes(tr):
        return [], {}
    n_in, ns = 1 + tr.n_state + tr.n_params, tr.n_state
    want = want or (True,) * (1 + tr.n_params)
    fkeys, bkeys = _keys(tr.forward.graph, n_in), _keys(tr.backward.graph, n_in)
    fph = [n.name for n in tr.forward.graph.nodes if n.op == "placeholder"]
    varying = _descendants(tr.forward.graph, fph[: 1 + ns])   # depend on x or a state
    forward = {}   # those forward nodes, by key
    for n in tr.forward.graph.nodes:
        if n.op == "call_function" and n.name in varying:
            forward.setdefault(fkeys[n.name], n.name)
    nodes = list(tr.backward.graph.nodes)
    match = {n.name: forward[bkeys[n.name]] for n in nodes if bkeys[n.name] in forward}
    outs = next(n for n in nodes if n.op == "output").args[0]  # (gx, *gstate, *gparams)
    wanted = [o.name for o, u in zip(outs, _used(want, ns)) if u and isinstance(o, torch.fx.Node)]

    def live(cut: set) -> set:
        """Nodes the reverse step evaluates or reads when the values ``cut`` are kept."""
        return printer.needed(tr.backward.graph, wanted, cut)

    x, target = nodes[0].name, {n.name: n.target for n in nodes}
    fout = next(n for n in tr.forward.graph.nodes if n.op == "output").args[0][1: 1 + ns]   # the new states
    state_of = {fkeys[o.name]: k for k, o in reversed(list(enumerate(fout)))   # (the first state, if two are equal)
                if isinstance(o, torch.fx.Node) and o.name in varying} if "next" in KEEP else {}
    nxt = {b: state_of[bkeys[b]] for b in match if bkeys[b] in state_of}
    cut = set(nxt) | ({b for b in match if target[b] in _COSTLY} if "costly" in KEEP else set())
    if "x" in KEEP and x in live(cut):
        from_x = _descendants(tr.backward.graph, [x])
        options = [(sum(m in match for m in live(cut | {b})), k, b) for k, b in enumerate(match)
                   if b in from_x and b not in cut and x not in live(cut | {b})]
        if options:
            cut.add(min(options)[2])
    need = live(cut)
    fwd = list(dict.fromkeys(match[b] for b in match if b in cut and b in need and b not in nxt))
    nq = ns + len(fwd)
    return fwd, {**{b: ns + fwd.index(match[b]) for b in match if match[b] in fwd and b not in nxt},
                 **{b: nq + k for b, k in nxt.items() if b in need}}


def step_values(tr: Traced, want: tuple[bool, ...] | None = None) -> int:
    """Values a backward segment holds per element and step: the states and the kept values."""
    return tr.n_state + len(kept(tr, want)[0])


def backward_source(tr: Traced, layout: tuple[bool, ...], target: Target, want: tuple[bool, ...] | None = None) -> str:
    """``want[0]``: write grad x; ``want[1 + k]``: accumulate the gradient of parameter k
    (default: all). Gradients nobody wants cost nothing."""
    ns, np_ = tr.n_state, tr.n_params
    want = want or (True,) * (1 + np_)
    acc = [k for k in range(np_) if want[1 + k]]
    recompute = recomputes(tr)
    keep, reads = kept(tr, want)
    nq = ns + len(keep)   # per step of a segment: the pre-step states, then the kept values
    decls, pexpr = _param_decls(layout)
    inputs = (["xt[i]"] + [f"q[{k} * E + loc + i]" for k in range(ns)] + pexpr + ["gzt[i]"]
              + [f"g{k}[loc + i]" for k in range(ns)])
    bools = {n.name for n in tr.backward.graph.nodes if printer._val_dtype(n, tr.dtype) == torch.bool}
    given = {b: f"(q[{j} * E + loc + i] != 0)" if b in bools else f"q[{j} * E + loc + i]" for b, j in reads.items()}
    spare = bool(keep) or any(j >= nq for j in reads.values())   # the last step runs too; its slots follow
    lines, outs = printer.emit(tr.backward.graph, inputs, target, tr.dtype, given=given,
                               used=_used(want, ns))
    stores = [f"gxt[i] = {_or0(outs[0])};"] if want[0] else []
    stores += [f"g{k}[loc + i] = {_or0(outs[1 + k])};" for k in range(ns)]
    stores += [f"a{k}[loc + i] += {_or0(outs[1 + ns + k])};" for k in acc]
    # the gradient of the recorded state after step t joins the carried state gradient
    gtrace = "".join(f"if (gtrace[{k}]) for (int64_t i = 0; i < len; ++i) "
                     f"g{k}[loc + i] += gtrace[{k}][t * M + off + i];\n" for k in range(ns))
    pointers = gtrace + ("const scalar_t* restrict xt = x ? x + t * M + off : 0;\n"
                "const scalar_t* restrict gzt = gz + t * gsT + (b0 + r) * gsB + f0;\n"
                "scalar_t* restrict gxt = gx ? (stream ? gxrow + loc : gx + t * M + off) : 0;")
    na = len(acc)
    names = ([(f"g{k}", k) for k in range(ns)] + [(f"a{k}", ns + j) for j, k in enumerate(acc)]
             + [("gxrow", ns + na), ("seg", ns + na + 1)])
    segment = []
    if recompute:  # rebuild the segment's pre-step states (and kept values) from the saved state before it
        flines, fouts = printer.emit(tr.forward.graph, ["xt[i]"] + [f"q[{k} * E + loc + i]" for k in range(ns)]
                                     + pexpr, target, tr.dtype)
        # with kept values or next states read, the last step runs too; its next state goes to a spare slot
        last = " < t1" if spare else " + 1 < t1"
        fstores = ([f"q1[{k} * E + loc + i] = {fouts[1 + k]};" for k in range(ns)]
                   + [f"q[{ns + j} * E + loc + i] = n_{f};" for j, f in enumerate(keep)])
        segment = [
            "            {",
            "                scalar_t* restrict q = seg;",
            *(_rows(f"q[{k} * E + loc + i] = c ? saved[{k}][(c - 1) * M + off + i] : state0[{k}][off + i];",
                    indent=16) for k in range(ns)),
            "            }",
            f"            for (int64_t t = t0; t{last}; ++t) {{",
            f"                scalar_t* restrict q = seg + (t - t0) * {nq} * E, * restrict q1 = q + {nq} * E;",
            _rows(_staged(tr, flines, fstores) or "\n".join(flines + fstores), indent=16,
                  pre="const scalar_t* restrict xt = x + t * M + off;"),
            "            }"]
    body = "\n".join([
        _locals(names if recompute else names[: ns + na + 1]),
        *(_rows(f"g{k}[loc + i] = gstate[{k}][off + i];") for k in range(ns)),
        *(_rows(f"a{k}[loc + i] = 0;") for k in acc),
        "        for (int64_t c = (T + K - 1) / K - 1; c >= 0; --c) {",
        "            const int64_t t0 = c * K, t1 = t0 + K < T ? t0 + K : T;",
        *segment,
        "            for (int64_t t = t1 - 1; t >= t0; --t) {",
        "                const scalar_t* restrict q = " + (f"seg + (t - t0) * {nq} * E;" if recompute else "0;"),
        _rows("\n".join(lines + stores), pre=pointers, indent=16,
              each="if (gx) sf_stream(gx + t * M + off + i0, gxt + i0, i1 - i0);" if want[0] else ""),
        "            }",
        "        }",
        *(_rows(f"gstate[{k}][off + i] = g{k}[loc + i];") for k in range(ns)),
        *(_rows(f"gparams[{k}][off + i] = a{k}[loc + i];") for k in acc)])
    nbuf = (f"{ns + na + 1} + {nq} * K" + (f" + {ns}" if spare else "")) if recompute else str(ns + na + 1)
    items = _ITEMS.format(chunk=CHUNK, param_decls=_indent(decls + target.bound.decls(), 4), nbuf=nbuf, body=body,
                          reduction="")
    return ("/* Backward, reverse time in segments of K steps: each segment's pre-step states are\n"
            "   recomputed from the state saved before it (saved[k][c - 1], or state0), then walked\n"
            "   backwards. gz may be broadcast over time and batch (strides gsT, gsB). stream: gx is\n"
            "   written with streaming stores (sf_stream). */\n"
            "void sf_backward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
            "                 const scalar_t* const* state0, const scalar_t* const* saved, int64_t K,\n"
            "                 const scalar_t* const* params, const scalar_t* restrict gz, int64_t gsT,\n"
            "                 int64_t gsB, scalar_t* const* gstate, const scalar_t* const* gtrace,\n"
            "                 scalar_t* restrict gx, scalar_t* const* gparams, int stream) {\n"
            + items + "}\n")


def _or0(expr: str | None) -> str:
    return "0" if expr is None else expr


def source(tr: Traced, layout: tuple[bool, ...], want: tuple[bool, ...] | None = None) -> str:
    target = c_target(tr.dtype)
    return (_HEAD.format(ctype=_ctype(tr.dtype)) + _FTZ + _STREAM + _EXP + f"/* {tr.spec.key()} | {tr.surrogate!r} */\n"
            + forward_source(tr, layout, target) + backward_source(tr, layout, target, want))
