"""The parsed, checked and compiled form of a neuron written as equations (``_Model``)."""
from __future__ import annotations

import keyword
import math
from ast import Name as _Name
from dataclasses import dataclass

from .._spec import Param
from ._parse import (FUNCTIONS, Compiled, EquationError, compile_euler, compile_expr, names_in, parse_equations,
                     parse_expression, parse_reset, parse_threshold)
from ._units import Unit, parse_unit, unit_of

__all__ = ["Model", "build_model", "as_params"]

EULER = ("explicit", "sequential")
RESERVED = {"dt", "t"} | set(FUNCTIONS)


@dataclass(frozen=True)
class Model:
    """Everything a generated spec's methods read: names, and one closure ``env -> value``
    per derivative, Euler term, threshold side, reset value and resting value."""

    state: tuple[str, ...]
    params: tuple[str, ...]
    input: str
    derivatives: tuple[Compiled, ...]
    euler_terms: tuple[Compiled, ...]
    sequential: bool
    fire: tuple[Compiled, Compiled] | None        # (high, low): spike where high - low >= 0
    resets: tuple[tuple[int, str, Compiled], ...]  # (state index, "=" | "+=" | "-=", value)
    rest: tuple[Compiled | None, ...]
    output: int                                    # the state a non-spiking model outputs


def as_params(params) -> dict[str, Param]:
    """``{name: number | (number, unit) | Param}`` -> ``{name: Param}``."""
    if params is None:
        return {}
    if not isinstance(params, dict):
        raise TypeError(f"from_equations: params must be a dict name -> number, (number, unit) or Param, got "
                        f"{type(params).__name__}")
    out = {}
    for k, v in params.items():
        if isinstance(v, Param):
            out[k] = v
        elif isinstance(v, tuple) and len(v) == 2 and isinstance(v[1], str):
            out[k] = Param(_number(k, v[0]), v[1])
        else:
            out[k] = Param(_number(k, v))
    return out


def _number(k, v) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise TypeError(f"from_equations: parameter {k!r} must be a number, (number, unit) or Param, got {v!r}")
    if not math.isfinite(v):
        raise ValueError(f"from_equations: parameter {k!r} must be a finite number, got {v!r}")
    return float(v)


def _check_names(state, params: dict, input: str) -> dict[str, str]:
    known = {}
    for kind, names in (("state variable", state), ("parameter", params), ("input", (input,))):
        for n in names:
            if not (isinstance(n, str) and n.isidentifier()) or keyword.iskeyword(n):
                raise EquationError(f"from_equations: {kind} name {n!r} is not a Python identifier")
            if n in RESERVED:
                raise EquationError(f"from_equations: {kind} {n!r} uses a reserved name "
                                    f"({', '.join(sorted(RESERVED))})")
            if n in known:
                raise EquationError(f"from_equations: {n!r} is both a {known[n]} and a {kind}")
            known[n] = kind
    return known


def build_model(equations: str, threshold, reset, params: dict[str, Param], input: str, euler: str,
                rest, output, units) -> Model:
    if euler not in EULER:
        raise ValueError(f"from_equations: euler must be one of {EULER}, got {euler!r}")
    eqs = parse_equations(equations)
    state = tuple(e.var for e in eqs)
    known = _check_names(state, params, input)
    no_input = {k: v for k, v in known.items() if k != input}
    cond = None if threshold is None else parse_threshold(threshold)
    assigns = [] if reset is None else parse_reset(reset)
    if assigns and cond is None:
        raise EquationError("from_equations: reset is given without a threshold; give threshold='v > v_threshold'")
    for a in assigns:
        if a.var not in state:
            raise EquationError(f"from_equations: reset assigns {a.var!r}, which is not a state variable "
                                f"({', '.join(state)})")
    for src in ([cond.high, cond.low] if cond else []) + [a.rhs for a in assigns]:
        if input in names_in(src):
            raise EquationError(f"from_equations: the threshold and reset cannot read the input {input!r} "
                                f"(in {src.line!r}); they act on the state")
    rest_src = _rest(rest, state)
    fire = None if cond is None else (compile_expr(cond.high, no_input), compile_expr(cond.low, no_input))
    pk = {k: v for k, v in known.items() if v == "parameter"}
    model = Model(state, tuple(params), input, tuple(compile_expr(e.rhs, known) for e in eqs),
                  tuple(compile_euler(e.rhs, known) for e in eqs), euler == "sequential", fire,
                  tuple((state.index(a.var), a.op, compile_expr(a.rhs, no_input)) for a in assigns),
                  tuple(None if r is None else compile_expr(r, pk) for r in rest_src), _output(output, state, cond))
    _check_units(eqs, cond, assigns, rest_src, params, input, units or {}, state)   # names are known by now
    return model


def _rest(rest, state) -> list:
    if rest is None:
        return [None] * len(state)
    if not isinstance(rest, dict) or set(rest) - set(state):
        raise ValueError(f"from_equations: rest must be a dict state -> number or expression of parameters, "
                         f"with keys among {state}, got {rest!r}")
    out = []
    for s in state:
        r = rest.get(s)
        if r is not None and not isinstance(r, str):
            r = repr(_number(f"rest[{s!r}]", r))
        out.append(None if r is None else parse_expression(r, r, 0))
    return out


def _output(output, state, cond) -> int:
    if output is None:
        if cond is None and len(state) > 1:
            raise ValueError(f"from_equations: a neuron without threshold outputs one of its states; "
                             f"name it with output= (one of {state})")
        return 0
    if cond is not None:
        raise ValueError("from_equations: output= is for non-spiking neurons (no threshold); a spiking one outputs "
                         "its spikes")
    if output not in state:
        raise ValueError(f"from_equations: output must be a state variable ({', '.join(state)}), got {output!r}")
    return state.index(output)


def _check_units(eqs, cond, assigns, rest_src, params, input, units: dict[str, str], state) -> None:
    """Dimensional consistency where units are given (see ``_units``)."""
    if not isinstance(units, dict):
        raise TypeError(f"from_equations: units must be a dict name -> unit string (e.g. {{'I': 'nA'}}), "
                        f"got {units!r}")
    extra = set(units) - set(state) - {input, "t"}
    if extra:
        raise ValueError(f"from_equations: units names {sorted(extra)}; it takes the state variables "
                         f"({', '.join(state)}), the input {input!r} and 't' (time)")
    u: dict[str, Unit | None] = {k: parse_unit(p.unit, f"parameter {k!r}") for k, p in params.items()}
    u.update({k: parse_unit(v, repr(k)) for k, v in units.items() if k != "t"})
    t = parse_unit(units["t"], "'t'") if "t" in units else _time_unit(u, params)
    fns = FUNCTIONS
    for a in assigns:          # a state's unit, unless given, is the one its reset assigns
        if u.get(a.var) is None and a.op == "=":
            u[a.var] = unit_of(a.rhs, a.rhs.tree, u, fns)
    if cond is not None:
        for x, y in ((cond.high, cond.low), (cond.low, cond.high)):
            if isinstance(x.tree, _Name) and u.get(x.tree.id) is None:
                u[x.tree.id] = unit_of(y, y.tree, u, fns)
        _same(cond.high, unit_of(cond.high, cond.high.tree, u, fns), unit_of(cond.low, cond.low.tree, u, fns),
              "the two sides of the threshold")
    for a in assigns:
        _same(a.rhs, u.get(a.var), unit_of(a.rhs, a.rhs.tree, u, fns), f"reset of {a.var!r}")
    for s, r in zip(state, rest_src):
        if r is not None:
            _same(r, u.get(s), unit_of(r, r.tree, u, fns), f"rest of {s!r}")
    for e in eqs:
        want = None if u.get(e.var) is None or t is None else u[e.var] / t
        _same(e.rhs, want, unit_of(e.rhs, e.rhs.tree, u, fns), f"d{e.var}/dt")


def _time_unit(u, params) -> Unit | None:
    """The time unit of ``dt``: the unit of the parameters that are times (they must agree)."""
    times = {k: v for k, v in u.items() if k in params and v is not None and v.dims == (1, 0, 0)}
    scales = {v.scale for v in times.values() if v.scale is not None}
    if len(scales) > 1:
        raise ValueError(f"from_equations: the time parameters have different units "
                         f"({', '.join(f'{k}: {params[k].unit}' for k in times)}); all times share dt's unit, "
                         f"and values are not converted")
    return next(iter(times.values()), None) if not scales else next(v for v in times.values() if v.scale)


def _same(src, want: Unit | None, got: Unit | None, what: str) -> None:
    if want is not None and got is not None and not want.matches(got):
        raise EquationError(f"from_equations: units do not match in {src.line!r}: {what} needs {want.show()}, "
                            f"the expression has {got.show()}")

