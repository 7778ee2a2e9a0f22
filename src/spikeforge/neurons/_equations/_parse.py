"""Read ``from_equations``' text into checked Python syntax trees and compile them.

Allowed in an expression: names (state variables, parameters, the input), numbers,
``+ - * / **``, unary minus and the functions in ``FUNCTIONS`` (each maps to a torch op the
kernel printers know). Every error names the offending token, its column and the line.
Expressions compile to closures over an environment ``{name: value}`` that apply Python's
own operators in the order written, so a tensor expression evaluates exactly as the same
text would inside a hand-written ``step``.
"""
from __future__ import annotations

import ast
import math
import operator
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

__all__ = ["EquationError", "Source", "Equation", "Assignment", "Condition", "parse_equations",
           "parse_threshold", "parse_reset", "parse_expression", "compile_expr", "compile_euler", "FUNCTIONS", "DT",
           "names_in"]

Env = dict
Compiled = Callable[[Env], Any]


class EquationError(ValueError):
    """A malformed equation; the message names the token, its column (1-based) and the line."""


@dataclass(frozen=True)
class Source:
    """An expression's tree and where it was written (``col``: offset of the tree's text in ``line``)."""

    tree: ast.expr
    line: str
    col: int

    def fail(self, node: ast.AST, what: str) -> EquationError:
        seg = ast.get_source_segment(self.line[self.col:], node) or ast.unparse(node)
        return EquationError(f"from_equations: {what} {seg!r} at column {self.col + node.col_offset + 1} "
                             f"in {self.line!r}")


@dataclass(frozen=True)
class Equation:
    var: str
    rhs: Source


@dataclass(frozen=True)
class Assignment:
    var: str
    op: str          # "=", "+=", "-="
    rhs: Source


@dataclass(frozen=True)
class Condition:
    """``high >= low`` (a spike where ``high - low`` crosses 0 from below)."""

    high: Source
    low: Source


def _math1(fn_t, fn_f):
    return lambda a: fn_t(a) if isinstance(a, Tensor) else fn_f(a)


def _extreme(pick_t, clamp, pick_f):
    def f(a, b):
        if isinstance(a, Tensor) and isinstance(b, Tensor):
            return pick_t(a, b)
        if isinstance(a, Tensor):
            return clamp(a, b)
        if isinstance(b, Tensor):
            return clamp(b, a)
        return pick_f(a, b)
    return f


_max = _extreme(torch.maximum, torch.clamp_min, max)
_min = _extreme(torch.minimum, torch.clamp_max, min)

#: name -> (number of arguments, implementation, unit rule: "same", "dimensionless", "sqrt", "number")
FUNCTIONS: dict[str, tuple[int, Callable, str]] = {
    "exp": (1, _math1(torch.exp, math.exp), "dimensionless"),
    "log": (1, _math1(torch.log, math.log), "dimensionless"),
    "tanh": (1, _math1(torch.tanh, math.tanh), "dimensionless"),
    "sigmoid": (1, _math1(torch.sigmoid, lambda a: 1.0 / (1.0 + math.exp(-a))), "dimensionless"),
    "atan": (1, _math1(torch.atan, math.atan), "dimensionless"),
    "erf": (1, _math1(torch.erf, math.erf), "dimensionless"),
    "floor": (1, _math1(torch.floor, lambda a: float(math.floor(a))), "dimensionless"),
    "sqrt": (1, _math1(torch.sqrt, math.sqrt), "sqrt"),
    "abs": (1, _math1(torch.abs, abs), "same"),
    "relu": (1, _math1(torch.relu, lambda a: max(a, 0.0)), "same"),
    "sign": (1, _math1(torch.sign, lambda a: float((a > 0) - (a < 0))), "number"),
    "min": (2, _min, "same"),
    "max": (2, _max, "same"),
    "clamp": (3, lambda a, lo, hi: _min(_max(a, lo), hi), "same"),
}
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv,
           ast.Pow: operator.pow}


def parse_expression(text: str, line: str, col: int) -> Source:
    """``text`` (found at offset ``col`` of ``line``) as an expression tree."""
    if not text.strip():
        raise EquationError(f"from_equations: an expression is missing at column {col + 1} in {line!r}")
    col += len(text) - len(text.lstrip())
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError as e:
        at = col + (e.offset or 1)
        tok = text[(e.offset or 1) - 1:].split()[0] if text[(e.offset or 1) - 1:].split() else text
        raise EquationError(f"from_equations: cannot read {tok!r} at column {at} in {line!r} ({e.msg})") from None
    return Source(tree, line, col)


_ODE = re.compile(r"^\s*d\s*([A-Za-z_]\w*)\s*/\s*dt\s*=(?!=)")


def parse_equations(text: str) -> list[Equation]:
    """``dv/dt = ...`` lines (``#`` starts a comment) -> one ``Equation`` per state variable."""
    if not isinstance(text, str):
        raise TypeError(f"from_equations: equations must be a string of 'dv/dt = ...' lines, got {text!r}")
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].rstrip()
        if not line.strip():
            continue
        m = _ODE.match(line)
        if m is None:
            raise EquationError(f"from_equations: expected 'd<state>/dt = <expression>' in {line.strip()!r} "
                                f"(one equation per line)")
        var = m.group(1)
        if any(e.var == var for e in out):
            raise EquationError(f"from_equations: state variable {var!r} has two equations (second: {line.strip()!r})")
        out.append(Equation(var, parse_expression(line[m.end():], line, m.end())))
    if not out:
        raise EquationError("from_equations: no equation given; write one 'd<state>/dt = <expression>' per state")
    return out


_CMP = {ast.Gt: False, ast.GtE: False, ast.Lt: True, ast.LtE: True}   # True: the sides swap


def parse_threshold(text: str) -> Condition:
    """``"v > v_threshold"`` (or ``>=``, ``<``, ``<=``) -> ``Condition``."""
    if not isinstance(text, str):
        raise TypeError(f"from_equations: threshold must be a string such as 'v > v_threshold', got {text!r}")
    src = parse_expression(text, text, 0)
    t = src.tree
    if not (isinstance(t, ast.Compare) and len(t.ops) == 1 and type(t.ops[0]) in _CMP):
        raise EquationError(f"from_equations: threshold must be one comparison '<expr> > <expr>' (or >=, <, <=), "
                            f"got {text!r}")
    a, b = t.left, t.comparators[0]
    if _CMP[type(t.ops[0])]:
        a, b = b, a
    return Condition(Source(a, text, 0), Source(b, text, 0))


_ASSIGN = re.compile(r"^\s*([A-Za-z_]\w*)\s*(\+=|-=|=)(?!=)")


def parse_reset(text: str) -> list[Assignment]:
    """``"v = v_reset; u += d"`` (``;`` or new lines between assignments) -> ``Assignment`` s."""
    if not isinstance(text, str):
        raise TypeError(f"from_equations: reset must be a string such as 'v = v_reset', got {text!r}")
    out = []
    for part in re.split(r"[;\n]", text):
        if not part.strip():
            continue
        m = _ASSIGN.match(part)
        if m is None:
            raise EquationError(f"from_equations: expected '<state> = <expr>', '<state> += <expr>' or "
                                f"'<state> -= <expr>' in reset, got {part.strip()!r}")
        var = m.group(1)
        if any(a.var == var for a in out):
            raise EquationError(f"from_equations: reset assigns {var!r} twice in {text!r}")
        out.append(Assignment(var, m.group(2), parse_expression(part[m.end():], part, m.end())))
    if not out:
        raise EquationError("from_equations: reset is empty; write e.g. 'v = v_reset' or 'v -= v_threshold'")
    return out


def compile_expr(src: Source, known: dict[str, str], node: ast.AST | None = None) -> Compiled:
    """A closure ``env -> value`` for ``src`` (or one of its nodes); ``known`` maps each name
    that may appear to what it is (for the error message)."""
    n = src.tree if node is None else node
    if isinstance(n, ast.Constant) and isinstance(n.value, (int, float)) and not isinstance(n.value, bool):
        v = float(n.value)
        return lambda env: v
    if isinstance(n, ast.Name):
        if n.id not in known:
            names = ", ".join(f"{k} ({what})" for k, what in known.items())
            raise EquationError(f"{src.fail(n, 'unknown name')}; known: {names}")
        name = n.id
        return lambda env: env[name]
    if isinstance(n, ast.BinOp) and type(n.op) in _BINOPS:
        f, a, b = _BINOPS[type(n.op)], compile_expr(src, known, n.left), compile_expr(src, known, n.right)
        return lambda env: f(a(env), b(env))
    if isinstance(n, ast.UnaryOp) and isinstance(n.op, (ast.USub, ast.UAdd)):
        a = compile_expr(src, known, n.operand)
        return (lambda env: -a(env)) if isinstance(n.op, ast.USub) else a
    if isinstance(n, ast.Call):
        return _compile_call(src, known, n)
    raise src.fail(n, f"unsupported syntax ({type(n).__name__}; allowed: names, numbers, + - * / **, "
                      f"unary -, and calls of {', '.join(FUNCTIONS)})")


def _compile_call(src: Source, known, n: ast.Call) -> Compiled:
    if not isinstance(n.func, ast.Name) or n.func.id not in FUNCTIONS:
        raise src.fail(n.func, f"unknown function (known: {', '.join(FUNCTIONS)})")
    arity, fn, _ = FUNCTIONS[n.func.id]
    if n.keywords or len(n.args) != arity:
        raise src.fail(n, f"{n.func.id} takes {arity} positional argument{'s' * (arity > 1)}, in")
    args = [compile_expr(src, known, a) for a in n.args]
    return lambda env: fn(*(a(env) for a in args))


DT = " dt"   # the environment's key for the time step (not a name an equation can write)


def compile_euler(src: Source, known: dict[str, str]) -> Compiled:
    """``env -> env[DT] * rhs``, written the way the built-in specs write their Euler terms: ``dt``
    goes into the leftmost factor of a product (``dt * a * (b v - u)``) and divides by the
    denominator of a quotient (``dt / tau * (v_leak - v + r x)``). Same value, same rounding
    as the hand-written steps."""
    def scaled(n):
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Mult):
            a, b = scaled(n.left), compile_expr(src, known, n.right)
            return lambda env: a(env) * b(env)
        if isinstance(n, ast.BinOp) and isinstance(n.op, ast.Div):
            num, den = compile_expr(src, known, n.left), compile_expr(src, known, n.right)
            return lambda env: env[DT] / den(env) * num(env)
        f = compile_expr(src, known, n)
        return lambda env: env[DT] * f(env)
    return scaled(src.tree)


def names_in(src: Source) -> set[str]:
    return {n.id for n in ast.walk(src.tree) if isinstance(n, ast.Name)} - {
        n.func.id for n in ast.walk(src.tree) if isinstance(n, ast.Call) and isinstance(n.func, ast.Name)}
