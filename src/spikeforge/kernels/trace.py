"""Trace a neuron spec's step into elementwise graphs that kernel printers turn into code.

``trace(spec, surrogate, dtype)`` returns two ``torch.fx`` graphs of ATen ops on scalars:

* ``forward(x, *state, *params) -> (z, *state')`` — the spec's ``step`` itself;
* ``backward(x, *state, *params, gz, *gstate') -> (gx, *gstate, *gparams)`` — its vector-
  Jacobian product, obtained by differentiating the same step with ``torch.func.vjp``, so
  the surrogate derivative is inside the graph.

The reverse-time kernel recomputes the step from the saved pre-step state, so it only
needs the forward's inputs: which of them the backward really reads is ``backward_reads``.

Both graphs are traced through a small decomposition table (``DECOMPOSITIONS``), so that
``relu``, ``masked_fill``, ``heaviside``, ``hardtanh``, ``leaky_relu``, ``sgn``, the logical
ops and their derivatives reach the printers as comparisons and selects, and a graph with
an in-place op (the ``masked_fill_`` in torch's derivative of ``maximum``) is functionalised.
The derivatives are torch's own formulas, traced, so their conventions at the boundaries
(``relu'(0) = 0``, ``clamp`` passing the gradient at its bounds, ...) are torch's too.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import torch
from torch._decomp import get_decompositions
from torch.fx.experimental.proxy_tensor import make_fx

from ..surrogate import spike

__all__ = ["Traced", "trace", "UnsupportedGraph", "DECOMPOSITIONS"]
aten = torch.ops.aten


class UnsupportedGraph(Exception):
    """The step uses an operation a printer cannot emit (the message names it)."""


@dataclass(frozen=True)
class Traced:
    spec: object
    surrogate: object
    dtype: torch.dtype
    forward: torch.fx.GraphModule
    backward: torch.fx.GraphModule

    @property
    def n_state(self) -> int:
        return len(self.spec.state)

    @property
    def n_params(self) -> int:
        return len(self.spec.params)

    def backward_reads(self) -> tuple[bool, ...]:
        """For each forward input (x, *state, *params): does the backward graph read it?"""
        ph = [n for n in self.backward.graph.nodes if n.op == "placeholder"]
        return tuple(len(n.users) > 0 for n in ph[: 1 + self.n_state + self.n_params])


def _heaviside(x, values):
    """``torch.heaviside`` as one select: ``values`` where x == 0, else x > 0 (NaN gives 0, as ATen's)."""
    return torch.where(x == 0, values, (x > 0).to(x.dtype))


# Ops traced as the elementwise ops they are made of (torch's own decompositions, and one here).
DECOMPOSITIONS = {
    **get_decompositions([
        aten.relu, aten.threshold_backward, aten.masked_fill, aten.hardtanh, aten.hardtanh_backward,
        aten.leaky_relu, aten.leaky_relu_backward, aten.sgn, aten.logical_and, aten.logical_or,
        aten.logical_not, aten.logical_xor]),
    aten.heaviside.default: _heaviside,
}


def _mutates(n: torch.fx.Node) -> bool:
    schema = getattr(n.target, "_schema", None)
    return n.op == "call_function" and schema is not None and schema.is_mutable


def _make_fx(fn, args):
    """Trace ``fn`` through ``DECOMPOSITIONS``; a graph with an in-place op (torch's derivative
    of ``maximum`` has one) is traced again, functionalised. (``functionalize`` cannot wrap
    the step itself: it has no rule for the autograd Function ``spike``; the first graph has
    none left.)"""
    g = make_fx(fn, decomposition_table=DECOMPOSITIONS)(*args)
    if any(_mutates(n) for n in g.graph.nodes):
        g = make_fx(torch.func.functionalize(g, remove="mutations"), decomposition_table=DECOMPOSITIONS)(*args)
    g.graph.eliminate_dead_code()
    g.recompile()
    return g


def _step_fn(spec, surrogate):
    P = spec.Params
    ns = len(spec.state)
    fire = partial(spike, surrogate=surrogate)

    def fwd(x, *rest):
        z, s = spec.step(x, tuple(rest[:ns]), P(*rest[ns:]), fire)
        return (z, *s)

    return fwd


@lru_cache(maxsize=None)
def trace(spec, surrogate, dtype: torch.dtype) -> Traced:
    """Trace (cached per spec, surrogate and dtype)."""
    fwd = _step_fn(spec, surrogate)
    n_in = 1 + len(spec.state) + len(spec.params)
    n_out = 1 + len(spec.state)

    def bwd(*args):
        _, vjp = torch.func.vjp(fwd, *args[:n_in])
        return vjp(tuple(args[n_in:]))

    def scalars(k):
        return [torch.zeros((), dtype=dtype) for _ in range(k)]

    try:
        f = _make_fx(fwd, scalars(n_in))
        b = _make_fx(bwd, scalars(n_in + n_out))
    except Exception as e:  # a step that cannot be traced runs on the reference path
        raise UnsupportedGraph(f"tracing the step failed: {type(e).__name__}: {e}") from e
    return Traced(spec, surrogate, dtype, f, b)
