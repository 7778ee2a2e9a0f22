"""A module that runs a graph of modules: what an imported NIR graph that is not a chain becomes.

Nodes are modules (an ``Identity`` for NIR's Input and Output); an edge feeds a node's
output into another node's input, and a node's inputs are summed (NIR's convention). An
edge that closes a cycle (found from the input, in depth-first order) carries the source's
output of the *previous* time step (zero at the first). A graph without cycles runs whole
sequences node after node; a graph with one runs step by step (``spikeforge.step``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.stream import reset, step

__all__ = ["Graph"]


def order(names: list[str], edges: list[tuple[str, str]], source: str) -> tuple[list[str], set]:
    """(topological order of the nodes reached from ``source``, the cycle-closing edges)."""
    succ: dict[str, list[str]] = {n: [] for n in names}
    for a, b in edges:
        succ[a].append(b)
    state, post, back = {}, [], set()

    def visit(n):   # iterative DFS would be longer; graphs here are small
        state[n] = "open"
        for m in succ[n]:
            if state.get(m) == "open":
                back.add((n, m))
            elif m not in state:
                visit(m)
        state[n] = "done"
        post.append(n)

    visit(source)
    return post[::-1], back


class Graph(nn.Module):
    """Modules ``nodes`` (name -> module) joined by ``edges`` (source, target), from the node
    named ``input`` to the node named ``output``; time-first ``(T, B, ...)``."""

    def __init__(self, nodes: dict[str, nn.Module], edges: list[tuple[str, str]], input: str = "input",
                 output: str = "output") -> None:
        super().__init__()
        self.nodes = nn.ModuleDict(nodes)
        self.edges = [tuple(e) for e in edges]
        self.input, self.output = input, output
        self.order, self.back = order(list(nodes), self.edges, input)
        if output not in self.order:
            raise ValueError(f"the graph's output {output!r} cannot be reached from its input {input!r}")
        self.preds = {n: [a for a, b in self.edges if b == n] for n in self.order}

    def forward(self, x: Tensor) -> Tensor:
        if self.back:
            reset(self)
            out = torch.stack([self.step(x_t) for x_t in x.unbind(0)])
            reset(self)
            return out
        values = {}
        for n in self.order:
            inp = x if n == self.input else _sum(values[a] for a in self.preds[n])
            values[n] = self.nodes[n](inp)
        return values[self.output]

    def step(self, x: Tensor) -> Tensor:
        last = getattr(self, "_last", {})
        values = {}
        for n in self.order:
            if n == self.input:
                inp = x
            else:
                inp = _sum(last.get(a, 0.0) if (a, n) in self.back else values[a] for a in self.preds[n])
            values[n] = step(self.nodes[n], inp)
        self._last = {a: values[a] for a, _ in self.back}
        return values[self.output]

    def reset(self) -> None:
        self._last = {}
        for m in self.nodes.values():
            reset(m)

    def extra_repr(self) -> str:
        return f"edges={self.edges}"


def _sum(items):
    total = None
    for v in items:
        total = v if total is None else total + v
    return total
