"""Print a traced scalar ATen graph as straight-line code, given a table of op templates.

One walker serves every target language; a target supplies ``OpTable`` entries (a
format string per ATen overload) and how to write a constant. An op missing from the
table raises ``UnsupportedGraph`` naming it, and the caller reports it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from .trace import UnsupportedGraph

aten = torch.ops.aten
prims = torch.ops.prims

# Shared by every target: ops that are the identity on a scalar.
IDENTITY = {aten.detach.default, aten.alias.default, aten.clone.default, aten.expand.default,
            aten.view.default, aten.lift_fresh_copy.default}

# Templates over positional args {0}, {1}, ...; "{k:name}" reads a keyword argument.
COMMON = {
    aten.add.Tensor: "({0} + {1})", aten.add.Scalar: "({0} + {1})",
    aten.sub.Tensor: "({0} - {1})", aten.sub.Scalar: "({0} - {1})",
    aten.rsub.Scalar: "({1} - {0})", aten.rsub.Tensor: "({1} - {0})",
    aten.mul.Tensor: "({0} * {1})", aten.mul.Scalar: "({0} * {1})",
    aten.div.Tensor: "({0} / {1})", aten.div.Scalar: "({0} / {1})",
    aten.neg.default: "(-{0})",
    aten.tanh_backward.default: "({0} * (1 - {1} * {1}))",
    aten.sigmoid_backward.default: "({0} * {1} * (1 - {1}))",
    aten.ge.Scalar: "({0} >= {1})", aten.ge.Tensor: "({0} >= {1})",
    aten.gt.Scalar: "({0} > {1})", aten.gt.Tensor: "({0} > {1})",
    aten.le.Scalar: "({0} <= {1})", aten.le.Tensor: "({0} <= {1})",
    aten.lt.Scalar: "({0} < {1})", aten.lt.Tensor: "({0} < {1})",
    aten.eq.Scalar: "({0} == {1})", aten.eq.Tensor: "({0} == {1})",
    aten.ne.Scalar: "({0} != {1})", aten.ne.Tensor: "({0} != {1})",
    aten.isnan.default: "({0} != {0})",
    # on booleans only (checked): C keeps them as 0/1 ints, Triton as int1
    aten.bitwise_and.Tensor: "({0} & {1})", aten.bitwise_or.Tensor: "({0} | {1})",
    aten.bitwise_xor.Tensor: "({0} ^ {1})", aten.bitwise_not.default: "({0} == 0)",
}
BITWISE = {aten.bitwise_and.Tensor, aten.bitwise_or.Tensor, aten.bitwise_xor.Tensor, aten.bitwise_not.default}

# Overloads printed with another op's template (torch's decompositions emit some prims;
# the scalar operands of ``where`` become constants).
SAME_AS = {
    aten.where.ScalarOther: aten.where.self, aten.where.ScalarSelf: aten.where.self,
    aten.where.Scalar: aten.where.self, prims.where.default: aten.where.self,
    prims.bitwise_and.default: aten.bitwise_and.Tensor, prims.bitwise_or.default: aten.bitwise_or.Tensor,
    prims.bitwise_xor.default: aten.bitwise_xor.Tensor, prims.bitwise_not.default: aten.bitwise_not.default,
}

# Factories of a scalar constant: op -> its value from (args, kwargs).
CONSTANTS = {
    aten.scalar_tensor.default: lambda a, k: a[0], aten._efficientzerotensor.default: lambda a, k: 0.0,
    aten.zeros.default: lambda a, k: 0.0, aten.ones.default: lambda a, k: 1.0, aten.full.default: lambda a, k: a[1],
    aten.zeros_like.default: lambda a, k: 0.0, aten.ones_like.default: lambda a, k: 1.0,
    aten.full_like.default: lambda a, k: a[1],
}
CLAMPS = {aten.clamp.default, aten.clamp.Tensor, aten.clamp_min.default, aten.clamp_min.Tensor,
          aten.clamp_max.default, aten.clamp_max.Tensor}


@dataclass(frozen=True)
class Target:
    """A language: op templates, scalar constants, the declaration of one value, and
    optionally ``bound``: the expression that stands for a clamp's number bound (default:
    the number itself)."""

    ops: dict
    const: Callable[[float, torch.dtype], str]
    declare: Callable[[str, str, torch.dtype], str]
    typename: Callable[[torch.dtype], str]
    bound: Callable[[str], str] | None = None


def _fmt_arg(a, env, target, dtype):
    if isinstance(a, torch.fx.Node):
        return env[a.name]
    if isinstance(a, bool):
        return "1" if a else "0"
    if isinstance(a, (int, float)):
        return target.const(float(a), dtype)
    raise UnsupportedGraph(f"argument {a!r} of type {type(a).__name__} cannot be printed")


def _val_dtype(n: torch.fx.Node, default):
    v = n.meta.get("val")
    return v.dtype if isinstance(v, torch.Tensor) else default


def needed(graph: torch.fx.Graph, outputs: list[str], given) -> set[str]:
    """Names of the nodes that computing ``outputs`` evaluates or reads, when the nodes in
    ``given`` come from elsewhere (their inputs are not needed); a constant such as
    ``zeros_like(x)`` reads no input."""
    need = set(outputs)
    for n in reversed(graph.nodes):
        if n.name in need and n.name not in given and n.target not in CONSTANTS:
            need.update(a.name for a in n.all_input_nodes)
    return need


def emit(graph: torch.fx.Graph, inputs: list[str | None], target: Target, dtype: torch.dtype,
         prefix: str = "n_", given: dict[str, str] | None = None,
         used: list[bool] | None = None) -> tuple[list[str], list[str | None]]:
    """Lines computing the nodes that the used outputs need, and the expressions of the outputs
    (``None`` for an unused one).

    ``inputs[i]`` is the expression for the i-th placeholder (``None`` if unused); ``given``
    maps node names to expressions that stand for them (values computed elsewhere); ``used[k]``
    says whether output k is wanted (default: all)."""
    env, lines, given = {}, [], given or {}
    placeholders = [n for n in graph.nodes if n.op == "placeholder"]
    for n, expr in zip(placeholders, inputs):
        env[n.name] = expr if expr is not None else "<unused>"
    out = next(n for n in graph.nodes if n.op == "output")
    need = needed(graph, [o.name for k, o in enumerate(out.args[0])
                          if isinstance(o, torch.fx.Node) and (used is None or used[k])], given)
    for n in graph.nodes:
        if n.op == "placeholder":
            continue
        if n.op == "output":
            outs = [env[o.name] if isinstance(o, torch.fx.Node) and (used is None or used[k]) else None
                    for k, o in enumerate(n.args[0])]
            return lines, outs
        if n.name not in need:
            continue
        if n.op == "get_attr":   # a tensor literal in the step, e.g. torch.tensor(1.5)
            value = getattr(graph.owning_module, n.target, None) if graph.owning_module is not None else None
            if not (isinstance(value, torch.Tensor) and value.numel() == 1 and value.is_floating_point()):
                raise UnsupportedGraph(f"graph node {n.op} {n.target} (a tensor constant that is not one float) "
                                       f"cannot be printed")
            env[n.name] = target.const(float(value), dtype)
            continue
        if n.op != "call_function":
            raise UnsupportedGraph(f"graph node {n.op} {n.target} cannot be printed")
        if n.name in given:
            env[n.name] = given[n.name]
            continue
        name, dt = f"{prefix}{n.name}", _val_dtype(n, dtype)
        if not (dt.is_floating_point or dt == torch.bool):
            raise UnsupportedGraph(f"operation {n.target} gives a {dt} value; the kernels compute floats and bools")
        lines.append(target.declare(name, _expr(n, env, target, dtype), dt))
        env[n.name] = name
    raise UnsupportedGraph("graph has no output")


# clamp's gradient mask printed as one comparison with the clamp (``_clamped``); False: as traced
# (kept to measure and test the difference)
RANGE_EQ = True


def _expr(n, env, target, dtype) -> str:
    op = n.target
    if op in IDENTITY:
        return env[n.args[0].name]
    if op is aten._to_copy.default:
        to, x = n.kwargs.get("dtype", dtype), env[n.args[0].name]
        if to == torch.bool and _val_dtype(n.args[0], dtype) != torch.bool:
            return f"({x} != 0)"  # a cast would truncate 0.5 to 0
        if (to.is_floating_point and _val_dtype(n.args[0], dtype) == torch.bool and "bool_cast" in target.ops
                and not any(u.target is aten.where.self for u in n.users)):
            return target.ops["bool_cast"].format(x, one=target.const(1.0, to), zero=target.const(0.0, to))
        return target.ops["cast"].format(x, t=target.typename(to))
    if op in CONSTANTS:
        return target.const(float(CONSTANTS[op](n.args, n.kwargs)), dtype)
    if op in CLAMPS:
        return _clamp(n, env, target, dtype)
    if op is aten.pow.Tensor_Scalar and n.args[1] in _POW:
        return _POW[n.args[1]](env[n.args[0].name], target.ops, target.const(1.0, dtype))
    op = SAME_AS.get(op, op)
    clamp = _clamped(n, env) if op is aten.bitwise_and.Tensor and RANGE_EQ else None
    if clamp is not None:
        return target.ops[aten.eq.Tensor].format(env[clamp.name], env[clamp.args[0].name])
    if op in BITWISE and any(_val_dtype(a, None) != torch.bool for a in n.all_input_nodes):
        raise UnsupportedGraph(f"operation {n.target} is supported on booleans only")
    template = target.ops.get(op)
    if template is None:
        raise UnsupportedGraph(f"operation {op} is not supported by the kernel printer")
    args = [_fmt_arg(a, env, target, dtype) for a in n.args]
    return template.format(*args)


def _clamped(n, env):
    """The clamp ``clamp(a, lo, hi)``, already printed, when ``n`` is ``(a >= lo) & (a <= hi)`` with
    number bounds ``lo <= hi`` (clamp's gradient mask): the mask holds exactly where the clamp
    returns ``a`` itself (a NaN ``a``: neither; ``-0.0`` at a bound ``0.0``: both), one comparison
    instead of two and an ``and``."""
    tests = {a.target: a for a in n.args if isinstance(a, torch.fx.Node)}
    ge, le = tests.get(aten.ge.Scalar), tests.get(aten.le.Scalar)
    if len(n.args) != 2 or ge is None or le is None or ge.args[0] is not le.args[0]:
        return None
    a, lo, hi = ge.args[0], ge.args[1], le.args[1]
    if not all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in (lo, hi)) or not lo <= hi:
        return None
    return next((u for u in a.users if u.target is aten.clamp.default and tuple(u.args[1:]) == (lo, hi)
                 and not u.kwargs and u.name in env), None)


# The exponents torch's own pow kernel special-cases (exactly, as these), by what it computes;
# the others are the target's pow (which may keep a C loop scalar).
_POW = {
    0: lambda x, ops, one: one, 1: lambda x, ops, one: x, 2: lambda x, ops, one: f"({x} * {x})",
    3: lambda x, ops, one: f"(({x} * {x}) * {x})", 0.5: lambda x, ops, one: ops[aten.sqrt.default].format(x),
    -0.5: lambda x, ops, one: ops[aten.rsqrt.default].format(x),
    -1: lambda x, ops, one: ops[aten.reciprocal.default].format(x),
    -2: lambda x, ops, one: ops[aten.reciprocal.default].format(f"({x} * {x})"),
}


def _clamp(n, env, target, dtype) -> str:
    x = env[n.args[0].name]
    lo, hi = (n.args[1:] + (None, None))[:2]
    if n.target in (aten.clamp_max.default, aten.clamp_max.Tensor):
        lo, hi = None, n.args[1]
    for bound, op in ((lo, "max"), (hi, "min")):
        if bound is None:
            continue
        # a number bound is never NaN: the target's cheaper "max_x"/"min_x" (NaN only from x), if it has one
        number = isinstance(bound, (int, float)) and not isinstance(bound, bool) and not math.isnan(bound)
        key = op + "_x" if number and op + "_x" in target.ops else op
        b = _fmt_arg(bound, env, target, dtype)
        x = target.ops[key].format(x, target.bound(b) if key != op and target.bound is not None else b)
    return x


def c_const(v: float, dtype) -> str:
    if math.isnan(v):
        return "NAN"
    if math.isinf(v):
        return "(-INFINITY)" if v < 0 else "INFINITY"
    s = repr(float(v))
    return f"{s}f" if dtype == torch.float32 else s
