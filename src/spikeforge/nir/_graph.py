"""A module that runs a graph of modules: what an imported NIR graph that is not a chain becomes.

Nodes are modules (an ``Identity`` for NIR's Input and Output); an edge feeds a node's
output into another node's input, and a node's inputs are summed (NIR's convention). A
cycle is cut at an edge that leaves a neuron where it can be (so a neuron <-> weight loop
runs as ``Recurrent`` does: the weight sees the previous step's spikes, none at the
first), else where a depth-first search from the input closes it; a cut edge carries its
source's output of the *previous* time step (zero at the first). A graph without cycles runs
whole sequences node after node; a graph with one runs step by step (``spikeforge.step``).
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..nn.neuron import Neuron
from ..nn.stream import reset, step

__all__ = ["Graph"]


def order(names: list[str], edges: list[tuple[str, str]], source: str, delays: set = frozenset()
          ) -> tuple[list[str], set]:
    """(topological order of the nodes reached from ``source``, the cycle-closing edges).
    ``delays``: nodes whose outgoing edges may carry the previous step (tried first)."""
    if delays:
        rest = [(a, b) for a, b in edges if a not in delays]
        if _kahn(names, rest) is not None:   # every cycle passes through a delay node
            cut = {(a, b) for a, b in edges if a in delays and a in _reach(b, rest)}
            reached = _reach(source, edges)
            kept = [(a, b) for a, b in edges if (a, b) not in cut and a in reached]
            pos = _kahn(sorted(reached, key=names.index), kept)
            if pos is not None:
                return sorted(pos, key=pos.get), cut
    return _dfs_order(names, edges, source)


def _reach(start: str, edges) -> set:
    seen, todo = {start}, [start]
    while todo:
        n = todo.pop()
        for a, b in edges:
            if a == n and b not in seen:
                seen.add(b)
                todo.append(b)
    return seen


def _kahn(names, edges) -> dict | None:
    """Position of each node in a topological order, or None if ``edges`` have a cycle."""
    indeg = {n: 0 for n in names}
    for _, b in edges:
        indeg[b] += 1
    ready, pos = [n for n in names if indeg[n] == 0], {}
    while ready:
        n = ready.pop(0)
        pos[n] = len(pos)
        for a, b in edges:
            if a == n:
                indeg[b] -= 1
                if indeg[b] == 0:
                    ready.append(b)
    return pos if len(pos) == len(names) else None


def _dfs_order(names, edges, source) -> tuple[list[str], set]:
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
                 output: str = "output", shapes: dict | None = None) -> None:
        super().__init__()
        self.nodes = nn.ModuleDict(nodes)
        self.shapes = dict(shapes or {})   # feature shape of a node's output (the zeros a cut edge starts from)
        self.edges = [tuple(e) for e in edges]
        self.input, self.output = input, output
        neurons = {n for n, m in nodes.items() if isinstance(m, Neuron) and m.spec_type.spiking}
        self.order, self.back = order(list(nodes), self.edges, input, neurons)
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
                inp = _sum(((last[a] if a in last else self._zeros(a, x)) if (a, n) in self.back else values[a])
                           for a in self.preds[n])
            values[n] = step(self.nodes[n], inp)
        self._last = {a: values[a] for a, _ in self.back}
        return values[self.output]

    def _zeros(self, name: str, x: Tensor):
        shape = self.shapes.get(name)
        return 0.0 if shape is None else x.new_zeros((x.shape[0], *shape))

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
