"""``nir.NIRGraph`` -> spikeforge model (time-first, any backend).

Each node becomes a module through ``IMPORTERS`` (NIR node type -> function), a neuron node
through the spec that lists its type in ``nir_types`` (or the registered spec a spikeforge
export named in the node's metadata). A chain becomes an ``nn.Sequential``, the subgraph of
a recurrent layer a ``Recurrent``, anything else a ``Graph``. Every field is checked first:
an unknown node, a missing or non-finite field, a non-positive time constant or edges whose
shapes disagree raise ``NIRError`` naming the node and the field; nothing half-built is
returned.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from .. import functional as F
from .. import nn as snn
from ..neurons import REGISTRY, NotExpressible
from ._errors import NIRError
from ._graph import Graph, order

__all__ = ["build", "IMPORTERS"]


def _t(a) -> torch.Tensor:
    return torch.as_tensor(np.asarray(a, dtype=np.float64), dtype=torch.get_default_dtype())


def _compact(t: torch.Tensor) -> torch.Tensor:
    """A per-neuron array whose entries are all equal as one scalar (same values, scalar kernels)."""
    return t.reshape(-1)[0].clone() if t.numel() and bool((t == t.reshape(-1)[0]).all()) else t


def _field(node, name: str, key: str):
    v = getattr(node, key, None)
    if v is None:
        raise NIRError(f"node {name!r} ({type(node).__name__}): field {key} is missing")
    a = np.asarray(v)
    if a.dtype.kind in "fiu" and not np.all(np.isfinite(a)):
        raise NIRError(f"node {name!r} ({type(node).__name__}): field {key} holds NaN or inf")
    return a


def _ints(a, n: int) -> tuple[int, ...]:
    return tuple(int(v) for v in np.broadcast_to(np.asarray(a), (n,)))


def _affine(node, name, dt):
    w = _field(node, name, "weight")
    m = nn.Linear(w.shape[1], w.shape[0], bias=True)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        m.bias.copy_(_t(_field(node, name, "bias")))
    return m


def _linear(node, name, dt):
    w = _field(node, name, "weight")
    m = nn.Linear(w.shape[1], w.shape[0], bias=False)
    with torch.no_grad():
        m.weight.copy_(_t(w))
    return m


def _conv(node, name, dt):
    w = _field(node, name, "weight")
    d = w.ndim - 2
    cls = nn.Conv1d if d == 1 else nn.Conv2d
    pad = node.padding if isinstance(node.padding, str) else _ints(node.padding, d)
    m = cls(w.shape[1] * int(node.groups), w.shape[0], w.shape[2:], stride=_ints(node.stride, d), padding=pad,
            dilation=_ints(node.dilation, d), groups=int(node.groups), bias=True)
    with torch.no_grad():
        m.weight.copy_(_t(w))
        m.bias.copy_(_t(_field(node, name, "bias")))
    return snn.TimeDistributed(m)


def _pool(cls):
    def make(node, name, dt):
        return cls(_ints(node.kernel_size, 2), _ints(node.stride, 2), _ints(node.padding, 2))
    return make


def _flatten(node, name, dt):
    shape = node.input_type.get("input") if isinstance(node.input_type, dict) else None
    rank = len(shape) if shape is not None else None
    end = int(node.end_dim)
    if end != -1 and (rank is None or end != rank - 1):
        raise NIRError(f"node {name!r} (Flatten): field end_dim={end} is not supported (only flattening to the "
                       f"last dim, end_dim=-1)")
    return snn.Flatten(int(node.start_dim) + 2)


def _delay(node, name, dt):
    steps = _field(node, name, "delay") / dt
    if np.any(steps < 0) or not np.allclose(steps, np.round(steps), rtol=0, atol=1e-6):
        raise NIRError(f"node {name!r} (Delay): field delay must be whole non-negative multiples of dt={dt}, "
                       f"got {np.asarray(node.delay).ravel()[:4]}...")
    steps = torch.as_tensor(np.round(steps).astype(np.int64)).reshape(-1)
    return snn.Delay(int(steps.max()) if steps.numel() else 0, steps.numel(), delays=steps)


def _scale(node, name, dt):
    return snn.Scale(_compact(_t(_field(node, name, "scale"))))


def _threshold(node, name, dt):
    return snn.Threshold(_compact(_t(_field(node, name, "threshold"))))


IMPORTERS = {"Affine": _affine, "Linear": _linear, "Conv1d": _conv, "Conv2d": _conv,
             "SumPool2d": _pool(snn.SumPool2d), "AvgPool2d": _pool(snn.AvgPool2d), "Flatten": _flatten,
             "Delay": _delay, "Scale": _scale, "Threshold": _threshold}


def _meta(node) -> dict:
    out = {}
    for k, v in (getattr(node, "metadata", None) or {}).items():
        v = v.decode() if isinstance(v, bytes) else v
        out[k] = v.item() if isinstance(v, np.generic) or (isinstance(v, np.ndarray) and v.ndim == 0) else v
    return out


def _spec_class(kind: str, meta: dict):
    """The registered spec for a neuron node: the one a spikeforge export named, if it reads
    this node type (a subclass counts), else the one that lists the type."""
    named = REGISTRY.get(meta.get("spikeforge_spec", ""))
    readers = [c for c in REGISTRY.values() if kind in c.nir_types]
    if named is not None and any(issubclass(named, c) for c in readers):
        return named
    return readers[0] if readers else None


def _neuron(node, name, dt, cls):
    kind, meta = type(node).__name__, _meta(node)
    options = {k[len("spikeforge_"):]: v for k, v in meta.items() if k.startswith("spikeforge_")}
    keys = [k for k in ("tau", "tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset", "w_in")
            if hasattr(node, k)]
    fields = {k: _t(_field(node, name, k)) for k in keys}
    for k in ("tau", "tau_syn", "tau_mem"):
        if k in fields and not bool((fields[k] > 0).all()):
            raise NIRError(f"node {name!r} ({kind}): field {k} must be > 0, got a minimum of "
                           f"{fields[k].min().item():.4g}")
    try:
        spec, params = cls.from_nir(kind, fields, dt, options)
        F.make_params(spec, params)
    except (NotExpressible, ValueError, TypeError) as e:
        raise NIRError(f"node {name!r} ({kind}): {e}") from None
    opts = {f: getattr(spec, f) for f in spec.options()}
    module = snn.MODULES[type(spec).__name__](**opts, **{k: _compact(v) for k, v in params.items()})
    w_in = fields.get("w_in")
    if w_in is not None and not bool((w_in == 1).all()):   # CubaLIF/CubaLI: i' = ... + w_in * x
        return nn.Sequential(snn.Scale(_compact(w_in)), module)
    return module


def _node(node, name: str, dt: float, nir) -> nn.Module:
    kind = type(node).__name__
    if kind in ("Input", "Output"):
        return nn.Identity()
    if kind == "NIRGraph":
        return build(node, dt, nir, name)
    if kind in IMPORTERS:
        return IMPORTERS[kind](node, name, dt)
    cls = _spec_class(kind, _meta(node))
    if cls is not None:
        return _neuron(node, name, dt, cls)
    known = sorted(set(IMPORTERS) | {t for c in REGISTRY.values() for t in c.nir_types} | {"NIRGraph"})
    raise NIRError(f"node {name!r} has type {kind}, which spikeforge does not import; supported: {', '.join(known)}")


def _shape(node, key: str):
    t = getattr(node, f"{key}_type", None)
    v = t.get(key) if isinstance(t, dict) else None
    return None if v is None else tuple(int(x) for x in np.asarray(v).ravel())


def _check_edges(g, where: str) -> None:
    for a, b in g.edges:
        for n in (a, b):
            if n not in g.nodes:
                raise NIRError(f"{where}edge ({a!r}, {b!r}) names a node {n!r} that the graph does not have")
        out, inp = _shape(g.nodes[a], "output"), _shape(g.nodes[b], "input")
        if out is not None and inp is not None and math.prod(out) != math.prod(inp):
            raise NIRError(f"{where}edge ({a!r}, {b!r}): node {a!r} gives shape {out} but node {b!r} takes {inp}")


def _ends(g, where: str) -> tuple[str, str]:
    ins = [n for n, v in g.nodes.items() if type(v).__name__ == "Input"]
    outs = [n for n, v in g.nodes.items() if type(v).__name__ == "Output"]
    if len(ins) != 1 or len(outs) != 1:
        raise NIRError(f"{where}graph needs exactly one Input and one Output node, has {len(ins)} and {len(outs)}")
    return ins[0], outs[0]


def build(g, dt: float, nir, prefix: str = "") -> nn.Module:
    """The module of graph ``g`` (nodes checked and built before anything is returned)."""
    where = f"subgraph {prefix!r}: " if prefix else ""
    _check_edges(g, where)
    source, sink = _ends(g, where)
    modules = {n: _node(v, f"{prefix}.{n}" if prefix else n, dt, nir) for n, v in g.nodes.items()}
    edges = _collapse_recurrent(modules, [tuple(e) for e in g.edges])
    ordered, back = order(list(modules), edges, source)
    chain = _chain(ordered, edges, back, source, sink)
    if chain is not None:
        inner = [modules[n] for n in chain[1:-1]]
        return inner[0] if len(inner) == 1 and isinstance(inner[0], snn.Recurrent) else nn.Sequential(*inner)
    shapes = {_safe(n): _shape(v, "output") for n, v in g.nodes.items() if n in modules}
    return Graph({_safe(n): m for n, m in modules.items()}, [(_safe(a), _safe(b)) for a, b in edges],
                 _safe(source), _safe(sink), {k: v for k, v in shapes.items() if v is not None})


def _collapse_recurrent(modules: dict, edges: list) -> list:
    """Each loop neuron -> weight -> neuron whose weight has no other edge becomes one
    ``Recurrent(neuron, weight)`` node (in place of the neuron; the weight node goes): the
    graph of a recurrent layer, whether a subgraph of its own or part of a larger graph."""
    for w, m in list(modules.items()):
        ins, outs = [a for a, b in edges if b == w], [b for a, b in edges if a == w]
        if not (isinstance(m, nn.Linear) and len(ins) == 1 and ins == outs):
            continue
        n = ins[0]
        if isinstance(modules[n], snn.Neuron) and modules[n].spec_type.spiking:
            modules[n] = snn.Recurrent(modules[n], m)
            del modules[w]
            edges = [e for e in edges if w not in e]
    return edges


def _safe(name: str) -> str:
    return name.replace(".", "_")


def _chain(ordered, edges, back, source, sink):
    """The node order if the graph is one path from source to sink, else None."""
    if back or len(edges) != len(ordered) - 1 or sink not in ordered:
        return None
    nxt = dict(edges)
    if len(nxt) != len(edges):
        return None
    path = [source]
    while path[-1] != sink and path[-1] in nxt:
        path.append(nxt[path[-1]])
    return path if path[-1] == sink and len(path) == len(ordered) else None
