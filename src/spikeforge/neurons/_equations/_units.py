"""A small unit algebra for ``from_equations``: dimension checks, never conversions.

A unit is a scale and the exponents of three base dimensions (time, potential, current);
``"ms"``, ``"mV"``, ``"nA"``, ``"MOhm"``, ``"nS"``, ``"pF"``, ``"Hz"`` and products, quotients
and integer powers of them (``"mV/ms"``, ``"1/ms"``, ``"ms**-1"``) are understood, as are the
dimension words the built-in specs use (``"time"``, ``"potential"``, ``"resistance"``,
``"1/time"``, ...), which fix the dimension but not the scale. ``""`` means "not given":
such a quantity matches anything, and so does a bare number. Values are never converted, so
terms that are added, compared or assigned must have the same dimension *and* the same scale
(``mV`` plus ``V`` is an error rather than a silent factor of 1000).
"""
from __future__ import annotations

import ast
import math
from typing import NamedTuple

__all__ = ["Unit", "parse_unit", "unit_of", "DIMENSIONLESS"]

_T, _P, _C = (1, 0, 0), (0, 1, 0), (0, 0, 1)


def _dims(*parts, power=1):
    out = [0, 0, 0]
    for sign, d in parts:
        for k in range(3):
            out[k] += sign * d[k]
    return tuple(power * e for e in out)


class Unit(NamedTuple):
    """``scale`` (SI factor; ``None``: a dimension word, scale unspecified) and ``dims``
    (exponents of time, potential, current)."""

    scale: float | None
    dims: tuple[int, int, int]

    def __mul__(self, o: "Unit") -> "Unit":
        s = None if self.scale is None or o.scale is None else self.scale * o.scale
        return Unit(s, tuple(a + b for a, b in zip(self.dims, o.dims)))

    def __truediv__(self, o: "Unit") -> "Unit":
        s = None if self.scale is None or o.scale is None else self.scale / o.scale
        return Unit(s, tuple(a - b for a, b in zip(self.dims, o.dims)))

    def __pow__(self, n: float) -> "Unit":
        return Unit(None if self.scale is None else self.scale ** n, tuple(int(round(e * n)) for e in self.dims))

    def matches(self, o: "Unit") -> bool:
        if self.dims != o.dims:
            return False
        return self.scale is None or o.scale is None or math.isclose(self.scale, o.scale, rel_tol=1e-9)

    def show(self) -> str:
        for sym, dims in _SI.items():
            for prefix, factor in _PREFIX.items():
                if dims == self.dims and self.scale is not None and math.isclose(factor, self.scale, rel_tol=1e-9):
                    return prefix + sym
        names = ("time", "potential", "current")
        part = lambda sign: "*".join(n if sign * e == 1 else f"{n}^{sign * e}"   # noqa: E731
                                     for n, e in zip(names, self.dims) if sign * e > 0)
        num, den = part(1), part(-1)
        dim = (num or "1") + (f"/{den}" if den else "") if num or den else "dimensionless"
        return dim if self.scale in (None, 1.0) else f"{dim} x {self.scale:g}"

DIMENSIONLESS = Unit(1.0, (0, 0, 0))
_PREFIX = {"G": 1e9, "M": 1e6, "k": 1e3, "": 1.0, "m": 1e-3, "u": 1e-6, "n": 1e-9, "p": 1e-12}
_SI = {"s": _dims((1, _T)), "V": _dims((1, _P)), "A": _dims((1, _C)), "Ohm": _dims((1, _P), (-1, _C)),
       "S": _dims((1, _C), (-1, _P)), "F": _dims((1, _C), (1, _T), (-1, _P)), "C": _dims((1, _C), (1, _T)),
       "Hz": _dims((-1, _T))}
_WORDS = {"time": _dims((1, _T)), "potential": _dims((1, _P)), "current": _dims((1, _C)),
          "resistance": _SI["Ohm"], "conductance": _SI["S"], "capacitance": _SI["F"], "charge": _SI["C"]}


def _symbol(name: str) -> Unit | None:
    if name in _WORDS:
        return Unit(None, _WORDS[name])
    for prefix, factor in _PREFIX.items():
        base = name[len(prefix):] if name.startswith(prefix) else None
        if base in _SI:
            return Unit(factor, _SI[base])
    return None


def parse_unit(text: str, owner: str) -> Unit | None:
    """The unit written ``text`` (``None`` for ``""``: not given); ``owner`` names what it
    belongs to in the error message."""
    if not isinstance(text, str):
        raise TypeError(f"from_equations: the unit of {owner} must be a string such as 'ms' or 'mV/ms', "
                        f"got {text!r}")
    if not text.strip():
        return None
    try:
        tree = ast.parse(text.strip().replace("^", "**"), mode="eval").body
        return _eval(tree)
    except (SyntaxError, ValueError) as e:
        known = ", ".join(sorted(_WORDS)) + "; " + ", ".join(p + "s" for p in _PREFIX) + ", V, A, Ohm, S, F, Hz"
        raise ValueError(f"from_equations: cannot read the unit {text!r} of {owner} ({e}); write products, "
                         f"quotients and integer powers of: {known} (any SI prefix G M k m u n p), or '1'") from None


def _eval(node) -> Unit:
    if isinstance(node, ast.Name):
        u = _symbol(node.id)
        if u is None:
            raise ValueError(f"unknown unit {node.id!r}")
        return u
    if isinstance(node, ast.Constant) and node.value == 1 and not isinstance(node.value, bool):
        return DIMENSIONLESS
    if isinstance(node, ast.BinOp) and isinstance(node.op, (ast.Mult, ast.Div)):
        a, b = _eval(node.left), _eval(node.right)
        return a * b if isinstance(node.op, ast.Mult) else a / b
    if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Pow):
        n = node.right
        if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.USub) and isinstance(n.operand, ast.Constant):
            n = ast.Constant(-n.operand.value)
        if not (isinstance(n, ast.Constant) and isinstance(n.value, int) and not isinstance(n.value, bool)):
            raise ValueError("a unit's power must be an integer")
        return _eval(node.left) ** n.value
    raise ValueError(f"unexpected {ast.unparse(node)!r}")


def unit_of(src, node, units: dict, functions: dict) -> Unit | None:
    """The unit of ``node`` (a tree in ``src``, see ``_parse.Source``), checking that what is
    added, subtracted or passed to ``min``/``max``/``exp``... agrees; ``units`` maps names to
    their ``Unit`` (or ``None``: not given). ``None``: unknown (a bare number, or built from one)."""
    def walk(n):
        if isinstance(n, ast.Name):
            return units.get(n.id)
        if isinstance(n, ast.UnaryOp):
            return walk(n.operand)
        if isinstance(n, ast.BinOp):
            return _binop(src, n, walk(n.left), walk(n.right))
        if isinstance(n, ast.Call):
            return _call(src, n, [walk(a) for a in n.args], functions[n.func.id][2])
        return None     # a number

    return walk(node)


def _binop(src, n, a: Unit | None, b: Unit | None) -> Unit | None:
    if isinstance(n.op, (ast.Add, ast.Sub)):
        if a is not None and b is not None and not a.matches(b):
            raise src.fail(n, f"units do not match ({a.show()} {'+' if isinstance(n.op, ast.Add) else '-'} "
                              f"{b.show()}) in")
        return a if a is not None else b
    if isinstance(n.op, ast.Pow):
        if b is not None and b.dims != (0, 0, 0):
            raise src.fail(n.right, f"an exponent must be dimensionless, got {b.show()} for")
        if a is None or a.dims == (0, 0, 0):
            return a
        k = n.right.value if isinstance(n.right, ast.Constant) else None
        if k is None or any(abs(e * k - round(e * k)) > 1e-9 for e in a.dims):
            raise src.fail(n, f"{a.show()} can only be raised to a number that leaves whole powers, in")
        return a ** k
    if a is None or b is None:
        return None
    return a * b if isinstance(n.op, ast.Mult) else a / b


def _call(src, n, args: list, rule: str) -> Unit | None:
    """``rule`` (see ``_parse.FUNCTIONS``): "dimensionless" arguments, a "number" result,
    "sqrt" halves the powers, "same": all arguments and the result share one unit."""
    if rule == "dimensionless":
        for a, u in zip(n.args, args):
            if u is not None and u.dims != (0, 0, 0):
                raise src.fail(a, f"{n.func.id} needs a dimensionless argument, got {u.show()} for")
        return DIMENSIONLESS
    if rule == "number":
        return DIMENSIONLESS
    if rule == "sqrt":
        u = args[0]
        if u is not None and any(e % 2 for e in u.dims):
            raise src.fail(n, f"sqrt of {u.show()} has no unit, in")
        return None if u is None else u ** 0.5
    known = [u for u in args if u is not None]
    for u in known[1:]:
        if not known[0].matches(u):
            raise src.fail(n, f"the arguments of {n.func.id} have different units ({known[0].show()}, "
                              f"{u.show()}) in")
    return known[0] if known else None
