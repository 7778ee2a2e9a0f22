"""Trace a neuron spec's step into elementwise graphs that kernel printers turn into code.

``trace(spec, surrogate, dtype)`` returns two ``torch.fx`` graphs of ATen ops on scalars:

* ``forward(x, *state, *params) -> (z, *state')`` — the spec's ``step`` itself;
* ``backward(x, *state, *params, gz, *gstate') -> (gx, *gstate, *gparams)`` — its vector-
  Jacobian product, obtained by differentiating the same step with ``torch.func.vjp``, so
  the surrogate derivative is inside the graph.

The reverse-time kernel recomputes the step from the saved pre-step state, so it only
needs the forward's inputs: which of them the backward really reads is ``backward_reads``.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache, partial

import torch
from torch.fx.experimental.proxy_tensor import make_fx

from ..surrogate import spike

__all__ = ["Traced", "trace", "UnsupportedGraph"]


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
        f = make_fx(fwd)(*scalars(n_in))
        b = make_fx(bwd)(*scalars(n_in + n_out))
    except Exception as e:  # a step that cannot be traced runs on the reference path
        raise UnsupportedGraph(f"tracing the step failed: {type(e).__name__}: {e}") from e
    for g in (f, b):
        g.graph.eliminate_dead_code()
        g.recompile()
    return Traced(spec, surrogate, dtype, f, b)
