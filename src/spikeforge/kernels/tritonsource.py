"""Triton source for the fused GPU kernels, printed from a spec's traced step graphs.

The same graphs as the C kernels (``csource``), the same printer, another op table.
The ``(T, B, N)`` sequence is flattened to ``M = B * N`` lanes; each program owns
``BLOCK`` lanes, keeps their state in registers and runs the whole time loop, so every
step loads and stores one coalesced row. Half-precision inputs are loaded, upcast to
float32, computed in float32 and rounded once when stored.

* ``sf_forward``: step forward; writes outputs, the final state and, where the
  ``SAVE<k>`` flags ask, the state after every step (the trace backward reads).
* ``sf_backward``: reverse time; recomputes each step's vector-Jacobian product from the
  saved pre-step state and accumulates parameter gradients per lane in registers.

Transcendental functions are ``libdevice`` calls (the CUDA math library PyTorch's own
kernels use). Triton's CPU interpreter has no libdevice, so ``libdevice_module()``
gives it equivalents written with ``tl`` primitives (``_interpmath``). The
kernels call Triton builtins only, none of the ``@triton.jit`` helpers of
``triton.language.standard`` (``tl.zeros``, ``tl.sigmoid``, ...): those are fixed as
compiled or interpreted when triton is imported, builtins follow ``TRITON_INTERPRET``
whenever a kernel module is imported.
"""
from __future__ import annotations

import math
import os

import torch

from . import printer
from .printer import COMMON, Target
from .trace import Traced

aten = torch.ops.aten
TL = {torch.float32: "tl.float32", torch.float64: "tl.float64", torch.float16: "tl.float16",
      torch.bfloat16: "tl.bfloat16", torch.bool: "tl.int1"}
DTYPES = (torch.float32, torch.float64, torch.float16, torch.bfloat16)


def interpreting() -> bool:
    """Whether Triton runs kernels in its CPU interpreter (``TRITON_INTERPRET``, read as Triton does)."""
    return os.environ.get("TRITON_INTERPRET", "").strip().lower() in ("1", "true", "on", "yes")


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 stays float64; float32, float16 and bfloat16 compute in float32."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _const(v: float, dtype) -> str:
    if math.isnan(v):
        return 'float("nan")'
    if math.isinf(v):
        return 'float("-inf")' if v < 0 else 'float("inf")'
    return repr(float(v))


def _is_literal(expr: str) -> bool:
    try:
        float(expr.replace('float("', "").replace('")', ""))
        return True
    except ValueError:
        return False


def _declare(name: str, expr: str, dt: torch.dtype) -> str:
    # Triton turns an assigned Python number into a float32 scalar: give it its dtype.
    if _is_literal(expr):
        return f"{name} = tl.full((), {expr}, {TL[dt]})"
    return f"{name} = {expr}"


# torch's maximum, minimum and clamp propagate NaN; tl.maximum's default drops it (maxnum)
_MAX = "tl.maximum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)"
_MIN = "tl.minimum({0}, {1}, propagate_nan=tl.PropagateNan.ALL)"


def triton_target(dtype: torch.dtype) -> Target:
    """The op table for compute dtype ``dtype`` (float32 or float64)."""
    ct = TL[dtype]
    ops = dict(COMMON)
    ops.update({
        aten.exp.default: "libdevice.exp({0})", aten.log.default: "libdevice.log({0})",
        aten.atan.default: "libdevice.atan({0})", aten.erf.default: "libdevice.erf({0})",
        aten.tanh.default: "libdevice.tanh({0})", aten.sqrt.default: "libdevice.sqrt({0})",
        aten.rsqrt.default: "libdevice.rsqrt({0})", aten.abs.default: "tl.abs({0})",
        aten.floor.default: "tl.floor({0})",
        aten.reciprocal.default: "(1.0 / {0})",
        aten.sigmoid.default: "(1.0 / (1.0 + libdevice.exp(-{0})))",
        aten.where.self: "tl.where({0}, {1}, {2})",
        aten.maximum.default: _MAX, aten.minimum.default: _MIN,
        aten.pow.Tensor_Scalar: "libdevice.pow({0}, tl.full({0}.shape, {1}, {0}.dtype))",
        aten.sign.default: f"(({{0}} > 0).to({ct}) - ({{0}} < 0).to({ct}))",
        # booleans as selects: the interpreter's `&` fails on an int1 lane vector and an int1 scalar
        aten.bitwise_and.Tensor: "tl.where({0}, {1}, False)", aten.bitwise_or.Tensor: "tl.where({0}, True, {1})",
        aten.bitwise_xor.Tensor: "({0} != {1})",
        "cast": "tl.cast({0}, {t})", "max": _MAX, "min": _MIN,
    })
    return Target(ops=ops, const=_const, declare=_declare, typename=TL.__getitem__)


def _lane_outputs(graph, lane_inputs: list[bool]) -> list[bool]:
    """For each graph output: does it vary per lane (depend on a per-lane input)? The
    others (constants, scalar parameters) are broadcast before they are stored or carried."""
    lane, placeholders = {}, iter(lane_inputs)
    for n in graph.nodes:
        if n.op == "placeholder":
            lane[n.name] = next(placeholders)
        elif n.op == "call_function":
            lane[n.name] = any(lane.get(a.name, False) for a in n.all_input_nodes)
        elif n.op == "output":
            return [isinstance(o, torch.fx.Node) and lane[o.name] for o in n.args[0]]
    return []


class _Printer:
    """Shared pieces of the two kernels for one (traced graphs, I/O dtype, layout)."""

    def __init__(self, tr: Traced, io: torch.dtype, layout: tuple[bool, ...]):
        self.tr, self.layout = tr, layout
        self.ct, self.io = TL[tr.dtype], TL[io]
        self.target = triton_target(tr.dtype)

    def load(self, ptr: str, mask: bool = True, other: str = "0.0") -> str:
        expr = f"tl.load({ptr}, mask=mask, other={other})" if mask else f"tl.load({ptr})"
        return expr if self.io == self.ct else f"{expr}.to({self.ct})"

    def store(self, ptr: str, expr: str, lane: bool = True) -> str:
        if not lane:
            expr = f"(tl.full([BLOCK], 0.0, {self.ct}) + {expr})"
        if self.io != self.ct:
            expr = f"({expr}).to({self.io})"
        return f"tl.store({ptr}, {expr}, mask=mask)"

    def carry(self, expr: str | None, lane: bool) -> str:
        """A value carried from one step to the next: always a (BLOCK,) tensor of the compute dtype."""
        if expr is None:
            return f"tl.full([BLOCK], 0.0, {self.ct})"
        return expr if lane else f"(tl.full([BLOCK], 0.0, {self.ct}) + {expr})"

    def params(self) -> tuple[list[str], list[str], list[bool]]:
        """Loads before the time loop, the parameter names and which vary per lane (padding
        lanes get 1.0: no division by zero where nothing is stored)."""
        lines = [f"p{k} = " + (self.load(f"P{k} + col", other="1.0") if per else self.load(f"P{k}", mask=False))
                 for k, per in enumerate(self.layout)]
        return lines, [f"p{k}" for k in range(len(self.layout))], list(self.layout)

    def emit(self, graph, inputs, lane_inputs):
        lines, outs = printer.emit(graph, inputs, self.target, self.tr.dtype)
        return lines, outs, _lane_outputs(graph, lane_inputs)


_PROLOGUE = """    idx = tl.program_id(0).to(tl.int64) * BLOCK + tl.arange(0, BLOCK)
    mask = idx < M
    col = idx % N
"""


def _indent(lines, n):
    return "".join(" " * n + ln + "\n" for ln in lines)


def forward_source(tr: Traced, io: torch.dtype, layout: tuple[bool, ...]) -> str:
    ns, pr = tr.n_state, _Printer(tr, io, layout)
    pload, pnames, plane = pr.params()
    lines, outs, lane = pr.emit(tr.forward.graph, ["xt", *[f"s{k}" for k in range(ns)], *pnames],
                                [True] * (1 + ns) + plane)
    # outputs are stored before the state names are rebound: an output may be an input name
    step = [pr.store("Z + o", outs[0], lane[0])]
    step += [f"u{k} = {pr.carry(outs[1 + k], lane[1 + k])}" for k in range(ns)]
    step += [f"s{k} = u{k}" for k in range(ns)]
    save = [ln for k in range(ns) for ln in (f"if SAVE{k}:", "    " + pr.store(f"S{k} + o", f"s{k}"))]
    args = ["X", "Z", *[f"F{k}" for k in range(ns)], *[f"S{k}" for k in range(ns)],
            *[f"P{k}" for k in range(len(layout))], "M", "N", "T",
            *[f"SAVE{k}: tl.constexpr" for k in range(ns)], "BLOCK: tl.constexpr"]
    return (
        f"@triton.jit\ndef sf_forward({', '.join(args)}):\n"
        + _PROLOGUE + _indent(pload, 4)
        + _indent([f"s{k} = " + pr.load(f"F{k} + idx") for k in range(ns)], 4)
        + "    for t in range(T):\n"
        "        o = idx + tl.cast(t, tl.int64) * M\n"
        f"        xt = {pr.load('X + o')}\n"
        + _indent(lines, 8) + _indent(step + save, 8)
        + _indent([pr.store(f"F{k} + idx", f"s{k}") for k in range(ns)], 4)
    )


def backward_source(tr: Traced, io: torch.dtype, layout: tuple[bool, ...]) -> str:
    """Reads x and the saved states only where the backward graph uses them (``Kernel``
    knows which); writes gx and each parameter's per-lane gradient when its flag is set."""
    ns, np_, pr = tr.n_state, tr.n_params, _Printer(tr, io, layout)
    pload, pnames, plane = pr.params()
    inputs = ["xt", *[f"sp{k}" for k in range(ns)], *pnames, "gzt", *[f"g{k}" for k in range(ns)]]
    lines, outs, lane = pr.emit(tr.backward.graph, inputs, [True] * (1 + ns) + plane + [True] * (1 + ns))
    reads = tr.backward_reads()
    loads = [f"xt = {pr.load('X + o')}"] if reads[0] else []
    loads += [f"sp{k} = " + pr.load(f"tl.where(t > 0, V{k} + tl.maximum(o - M, idx), S{k} + idx)")
              for k in range(ns) if reads[1 + k]]
    loads.append(f"gzt = {pr.load('GZ + o')}")
    # the gradient of the recorded state after step t joins the carried state gradient
    loads += [ln for k in range(ns) for ln in (f"if HAS_GT{k}:", f"    g{k} += {pr.load(f'GT{k} + o')}")]
    # stores and sums first: an output may be an input name that the carry rebinds
    step = ["if WANT_GX:", "    " + pr.store("GX + o", outs[0] or "0.0", bool(outs[0]) and lane[0])]
    step += [f"a{k} += {outs[1 + ns + k]}" for k in range(np_) if outs[1 + ns + k] is not None]
    step += [f"u{k} = {pr.carry(outs[1 + k], lane[1 + k])}" for k in range(ns)]
    step += [f"g{k} = u{k}" for k in range(ns)]
    args = ["X", *[f"S{k}" for k in range(ns)], *[f"V{k}" for k in range(ns)], *[f"P{k}" for k in range(np_)],
            "GZ", *[f"G{k}" for k in range(ns)], *[f"GT{k}" for k in range(ns)], "GX", *[f"A{k}" for k in range(np_)], "M", "N", "T",
            *[f"WANT_P{k}: tl.constexpr" for k in range(np_)], *[f"HAS_GT{k}: tl.constexpr" for k in range(ns)],
            "WANT_GX: tl.constexpr", "BLOCK: tl.constexpr"]
    acc_out = [ln for k in range(np_) for ln in
               (f"if WANT_P{k}:", f"    tl.store(A{k} + idx, a{k}, mask=mask)")]
    return (
        f"@triton.jit\ndef sf_backward({', '.join(args)}):\n"
        + _PROLOGUE + _indent(pload, 4)
        + _indent([f"g{k} = " + pr.load(f"G{k} + idx") for k in range(ns)], 4)
        + _indent([f"a{k} = tl.full([BLOCK], 0.0, {pr.ct})" for k in range(np_)], 4)
        + "    for i in range(T):\n"
        "        t = T - 1 - i\n"
        "        o = idx + tl.cast(t, tl.int64) * M\n"
        + _indent(loads + lines + step, 8)
        + _indent([pr.store(f"G{k} + idx", f"g{k}") for k in range(ns)] + acc_out, 4)
    )


_HEAD = '''"""Generated by spikeforge from {key} | {surrogate} ({io} in, {ct} compute). Do not edit."""
import triton
import triton.language as tl

from spikeforge.kernels.tritonsource import libdevice_module

libdevice = libdevice_module()


'''


def source(tr: Traced, io: torch.dtype, layout: tuple[bool, ...]) -> str:
    head = _HEAD.format(key=tr.spec.key(), surrogate=repr(tr.surrogate).replace('"""', "'''"),
                        io=TL[io], ct=TL[tr.dtype])
    return head + forward_source(tr, io, layout) + "\n\n" + backward_source(tr, io, layout)


def libdevice_module():
    """``triton.language.extra.libdevice``; under ``TRITON_INTERPRET=1`` (no libdevice on
    CPU) the stand-ins of ``_interpmath``, written with ``tl`` primitives."""
    if interpreting():
        from . import _interpmath

        return _interpmath
    from triton.language.extra import libdevice

    return libdevice
