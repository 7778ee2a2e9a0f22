"""C source for the fused CPU kernels, printed from a spec's traced step graphs.

Three loop templates share one layout: the ``(T, B, N)`` sequence is cut into work items
of one batch row and up to ``CH`` neurons; a work item keeps its state in local arrays,
runs the whole time loop, and vectorises over its neurons (``omp simd``), so every time
step reads and writes contiguous rows. OpenMP spreads work items over threads.

* ``sf_forward``: step forward; writes outputs, the final state and, when asked, the
  state after every step (the trace, which is also what backward reads).
* ``sf_backward``: reverse time; recomputes each step's vector-Jacobian product from the
  saved pre-step state and accumulates parameter gradients per neuron.
"""
from __future__ import annotations

import torch

from . import printer
from .printer import COMMON, Target, c_const
from .trace import Traced

CH = 512
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
typedef {ctype} scalar_t;
#define CH {ch}
"""

_ITEM = """    const int64_t M = B * N, nch = (N + CH - 1) / CH;
{param_decls}
    #pragma omp parallel for num_threads(nthreads) schedule(static)
    for (int64_t w = 0; w < B * nch; ++w) {{
        const int64_t f0 = (w % nch) * CH, off = (w / nch) * N + f0;
        const int64_t len = (N - f0 < CH) ? N - f0 : CH;
"""


def forward_source(tr: Traced, layout: tuple[bool, ...], target: Target) -> str:
    ns = tr.n_state
    decls, pexpr = _param_decls(layout)
    inputs = ["xt[i]"] + [f"s{k}[i]" for k in range(ns)] + pexpr
    lines, outs = printer.emit(tr.forward.graph, inputs, target, tr.dtype)
    body = "\n".join(" " * 16 + ln for ln in lines)
    stores = [f"zt[i] = {outs[0]};"] + [f"s{k}[i] = {outs[1 + k]};" for k in range(ns)]
    stores += [f"if (S{k}) S{k}[t * M + off + i] = s{k}[i];" for k in range(ns)]
    return (
        "void sf_forward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
        "                scalar_t* restrict z, scalar_t* const* state, scalar_t* const* saved,\n"
        "                const scalar_t* const* params) {\n"
        + _ITEM.format(param_decls="\n".join("    " + d for d in decls))
        + "".join(f"        scalar_t s{k}[CH]; scalar_t* restrict S{k} = saved[{k}];\n"
                  f"        for (int64_t i = 0; i < len; ++i) s{k}[i] = state[{k}][off + i];\n" for k in range(ns))
        + "        for (int64_t t = 0; t < T; ++t) {\n"
        "            const scalar_t* restrict xt = x + t * M + off;\n"
        "            scalar_t* restrict zt = z + t * M + off;\n"
        "            #pragma omp simd\n"
        "            for (int64_t i = 0; i < len; ++i) {\n"
        f"{body}\n" + "".join(" " * 16 + s + "\n" for s in stores)
        + "            }\n        }\n"
        + "".join(f"        for (int64_t i = 0; i < len; ++i) state[{k}][off + i] = s{k}[i];\n" for k in range(ns))
        + "    }\n}\n"
    )


def backward_source(tr: Traced, layout: tuple[bool, ...], target: Target) -> str:
    ns, np_ = tr.n_state, tr.n_params
    graph = tr.backward.graph
    decls, pexpr = _param_decls(layout)
    inputs = ["xt[i]"] + [f"sp{k}[i]" for k in range(ns)] + pexpr + ["gzt[i]"] + [f"g{k}[i]" for k in range(ns)]
    lines, outs = printer.emit(graph, inputs, target, tr.dtype)
    body = "\n".join(" " * 16 + ln for ln in lines)
    gp = range(np_)
    stores = [f"gxt[i] = {_or0(outs[0])};"] + [f"g{k}[i] = {_or0(outs[1 + k])};" for k in range(ns)]
    stores += [f"a{k}[i] += {_or0(outs[1 + ns + k])};" for k in gp]
    return (
        "void sf_backward(int64_t T, int64_t B, int64_t N, int nthreads, const scalar_t* restrict x,\n"
        "                 const scalar_t* const* state0, const scalar_t* const* saved,\n"
        "                 const scalar_t* const* params, const scalar_t* restrict gz,\n"
        "                 scalar_t* const* gstate, scalar_t* restrict gx, scalar_t* const* gparams) {\n"
        + _ITEM.format(param_decls="\n".join("    " + d for d in decls))
        + "".join(f"        scalar_t g{k}[CH];\n"
                  f"        for (int64_t i = 0; i < len; ++i) g{k}[i] = gstate[{k}][off + i];\n" for k in range(ns))
        + "".join(f"        scalar_t a{k}[CH];\n        for (int64_t i = 0; i < len; ++i) a{k}[i] = 0;\n"
                  for k in gp)
        + "        for (int64_t t = T - 1; t >= 0; --t) {\n"
        "            const scalar_t* restrict xt = x ? x + t * M + off : 0;\n"
        "            const scalar_t* restrict gzt = gz + t * M + off;\n"
        "            scalar_t* restrict gxt = gx + t * M + off;\n"
        + "".join(f"            const scalar_t* restrict sp{k} = !saved[{k}] ? 0 : "
                  f"(t ? saved[{k}] + (t - 1) * M + off : state0[{k}] + off);\n" for k in range(ns))
        + "            #pragma omp simd\n"
        "            for (int64_t i = 0; i < len; ++i) {\n"
        f"{body}\n" + "".join(" " * 16 + s + "\n" for s in stores)
        + "            }\n        }\n"
        + "".join(f"        for (int64_t i = 0; i < len; ++i) gstate[{k}][off + i] = g{k}[i];\n" for k in range(ns))
        + "".join(f"        for (int64_t i = 0; i < len; ++i) gparams[{k}][off + i] = a{k}[i];\n" for k in gp)
        + "    }\n}\n"
    )


def _or0(expr: str | None) -> str:
    return "0" if expr is None else expr


def source(tr: Traced, layout: tuple[bool, ...]) -> str:
    target = c_target(tr.dtype)
    return (_HEAD.format(ctype=_ctype(tr.dtype), ch=CH) + f"/* {tr.spec.key()} | {tr.surrogate!r} */\n"
            + forward_source(tr, layout, target) + backward_source(tr, layout, target))
