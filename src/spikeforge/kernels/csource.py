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

import torch

from . import printer
from .printer import COMMON, Target, c_const
from .trace import Traced

CHUNK = 16384  # elements per work item: long contiguous segments, state fits in L2
aten = torch.ops.aten


def _ctype(dtype: torch.dtype) -> str:
    return {torch.float32: "float", torch.float64: "double", torch.bool: "int"}[dtype]


def c_target(dtype: torch.dtype) -> Target:
    f = "f" if dtype == torch.float32 else ""
    one = c_const(1.0, dtype)
    ops = dict(COMMON)
    ops.update({
        aten.exp.default: f"exp{f}({{0}})", aten.log.default: f"log{f}({{0}})",
        aten.atan.default: f"atan{f}({{0}})", aten.erf.default: f"erf{f}({{0}})",
        aten.tanh.default: f"tanh{f}({{0}})", aten.sqrt.default: f"sqrt{f}({{0}})",
        aten.abs.default: f"fabs{f}({{0}})", aten.reciprocal.default: f"({one} / {{0}})",
        aten.rsqrt.default: f"({one} / sqrt{f}({{0}}))",
        aten.sigmoid.default: f"({one} / ({one} + exp{f}(-{{0}})))",
        aten.where.self: "({0} ? {1} : {2})",
        aten.maximum.default: f"fmax{f}({{0}}, {{1}})", aten.minimum.default: f"fmin{f}({{0}}, {{1}})",
        aten.pow.Tensor_Scalar: f"pow{f}({{0}}, {{1}})", aten.sign.default: "(({0} > 0) - ({0} < 0))",
        "cast": "(({t})({0}))", "max": f"fmax{f}({{0}}, {{1}})", "min": f"fmin{f}({{0}}, {{1}})",
    })
    return Target(ops=ops, const=c_const, typename=_ctype,
                  declare=lambda name, expr, dt: f"const {_ctype(dt)} {name} = {expr};")


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
typedef {ctype} scalar_t;
#define CHUNK {chunk}
"""

# Work items: rows x cols blocks, about CHUNK elements each, at least one per thread.
_ITEMS = """    const int64_t M = B * N;
    int64_t rows = 1, cols = N < CHUNK ? N : CHUNK;
    if (N < CHUNK) {{
        const int64_t per = (B + nthreads - 1) / nthreads;
        rows = CHUNK / N < per ? CHUNK / N : per;
        if (rows < 1) rows = 1;
    }}
    const int64_t nrb = (B + rows - 1) / rows, ncb = (N + cols - 1) / cols;
{param_decls}
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t w = 0; w < nrb * ncb; ++w) {{
        const int64_t b0 = (w / ncb) * rows, f0 = (w % ncb) * cols;
        const int64_t nr = B - b0 < rows ? B - b0 : rows, len = N - f0 < cols ? N - f0 : cols;
        scalar_t* buf = (scalar_t*)malloc(sizeof(scalar_t) * {nbuf} * nr * len);
{locals}
{prologue}
        for (int64_t tt = 0; tt < T; ++tt) {{
            const int64_t t = {time};
            for (int64_t r = 0; r < nr; ++r) {{
                const int64_t off = t * M + (b0 + r) * N + f0, loc = r * len;
{pointers}
                #pragma omp simd
                for (int64_t i = 0; i < len; ++i) {{
{body}
                }}
            }}
        }}
{epilogue}
        free(buf);
    }}
"""


def _rows_loop(stmt: str) -> str:
    """A loop over every element of the work item (outside the time loop)."""
    return ("        for (int64_t r = 0; r < nr; ++r)\n"
            "            for (int64_t i = 0; i < len; ++i) {\n"
            "                const int64_t loc = r * len + i, at = (b0 + r) * N + f0 + i;\n"
            f"                {stmt}\n            }}")


def _indent(lines, n):
    return "\n".join(" " * n + ln for ln in lines)


def forward_source(tr: Traced, layout: tuple[bool, ...], target: Target) -> str:
    ns = tr.n_state
    decls, pexpr = _param_decls(layout)
    inputs = ["xt[i]"] + [f"s{k}[loc + i]" for k in range(ns)] + pexpr
    lines, outs = printer.emit(tr.forward.graph, inputs, target, tr.dtype)
    stores = [f"zt[i] = {outs[0]};"] + [f"s{k}[loc + i] = {outs[1 + k]};" for k in range(ns)]
    stores += [f"if (S{k}) S{k}[off + i] = s{k}[loc + i];" for k in range(ns)]
    items = _ITEMS.format(
        param_decls=_indent(decls, 4), nbuf=max(ns, 1), time="tt",
        locals=_indent([f"scalar_t* restrict s{k} = buf + {k} * nr * len; scalar_t* restrict S{k} = saved[{k}];"
                        for k in range(ns)], 8),
        prologue="\n".join(_rows_loop(f"s{k}[loc] = state[{k}][at];") for k in range(ns)),
        pointers=_indent(["const scalar_t* restrict xt = x + off;", "scalar_t* restrict zt = z + off;"], 16),
        body=_indent(lines + stores, 20),
        epilogue="\n".join(_rows_loop(f"state[{k}][at] = s{k}[loc];") for k in range(ns)))
    return ("void sf_forward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
            "                scalar_t* restrict z, scalar_t* const* state, scalar_t* const* saved,\n"
            "                const scalar_t* const* params) {\n" + items + "}\n")


def backward_source(tr: Traced, layout: tuple[bool, ...], target: Target) -> str:
    ns, np_ = tr.n_state, tr.n_params
    decls, pexpr = _param_decls(layout)
    inputs = (["xt[i]"] + [f"sp{k}[i]" for k in range(ns)] + pexpr + ["gzt[i]"]
              + [f"g{k}[loc + i]" for k in range(ns)])
    lines, outs = printer.emit(tr.backward.graph, inputs, target, tr.dtype)
    stores = [f"gxt[i] = {_or0(outs[0])};"] + [f"g{k}[loc + i] = {_or0(outs[1 + k])};" for k in range(ns)]
    stores += [f"a{k}[loc + i] += {_or0(outs[1 + ns + k])};" for k in range(np_)]
    pointers = ["const scalar_t* restrict xt = x ? x + off : 0;", "const scalar_t* restrict gzt = gz + off;",
                "scalar_t* restrict gxt = gx + off;"]
    pointers += [f"const scalar_t* restrict sp{k} = !saved[{k}] ? 0 : "
                 f"(t ? saved[{k}] + off - M : state0[{k}] + off - t * M);" for k in range(ns)]
    # the gradient of the recorded state after step t joins the carried state gradient
    pointers += [f"if (gtrace[{k}]) for (int64_t i = 0; i < len; ++i) g{k}[loc + i] += gtrace[{k}][off + i];"
                 for k in range(ns)]
    items = _ITEMS.format(
        param_decls=_indent(decls, 4), nbuf=max(ns + np_, 1), time="T - 1 - tt",
        locals=_indent([f"scalar_t* restrict g{k} = buf + {k} * nr * len;" for k in range(ns)]
                       + [f"scalar_t* restrict a{k} = buf + {ns + k} * nr * len;" for k in range(np_)], 8),
        prologue="\n".join([_rows_loop(f"g{k}[loc] = gstate[{k}][at];") for k in range(ns)]
                           + [_rows_loop(f"a{k}[loc] = 0;") for k in range(np_)]),
        pointers=_indent(pointers, 16), body=_indent(lines + stores, 20),
        epilogue="\n".join([_rows_loop(f"gstate[{k}][at] = g{k}[loc];") for k in range(ns)]
                           + [_rows_loop(f"gparams[{k}][at] = a{k}[loc];") for k in range(np_)]))
    return ("void sf_backward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
            "                 const scalar_t* const* state0, const scalar_t* const* saved,\n"
            "                 const scalar_t* const* params, const scalar_t* restrict gz,\n"
            "                 scalar_t* const* gstate, const scalar_t* const* gtrace, scalar_t* restrict gx,\n"
            "                 scalar_t* const* gparams) {\n"
            + items + "}\n")


def _or0(expr: str | None) -> str:
    return "0" if expr is None else expr


def source(tr: Traced, layout: tuple[bool, ...]) -> str:
    target = c_target(tr.dtype)
    return (_HEAD.format(ctype=_ctype(tr.dtype), chunk=CHUNK) + f"/* {tr.spec.key()} | {tr.surrogate!r} */\n"
            + forward_source(tr, layout, target) + backward_source(tr, layout, target))
