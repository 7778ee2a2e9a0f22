"""spikeforge model -> ``nir.NIRGraph``.

Shapes come from one forward pass on zeros (``input_shape``, T = B = 1) with hooks on
every module. A container (``nn.Sequential``, ``Residual``, ``Recurrent``, an imported
``Graph``) becomes edges between the fragments of its children; a layer becomes one node
through ``EXPORTERS`` (module type -> function; a neuron through its spec's ``to_nir``).
Anything NIR cannot express raises ``NIRError`` naming the module, the layer and the field.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field, fields

import numpy as np
import torch
from torch import nn

from .. import __version__
from ..neurons import NotExpressible
from ..nn import layers as L
from ..nn.delay import Delay, DelayPer
from ..nn.neuron import Neuron
from ..nn.stream import reset
from ._graph import Graph
from ._errors import NIRError

__all__ = ["export", "EXPORTERS"]


@dataclass
class Fragment:
    """Nodes and edges of one module; ``first``: the nodes its input feeds, ``last``: the node
    whose output is its output (``None``: the input passes through, as in an empty Sequential)."""

    nodes: dict = field(default_factory=dict)
    edges: list = field(default_factory=list)
    first: list = field(default_factory=list)
    last: str | None = None


class _Context:
    def __init__(self, nir, dt: float, shapes: dict) -> None:
        self.nir, self.dt, self.shapes = nir, dt, shapes

    def shape(self, m: nn.Module, which: str) -> tuple[int, ...]:
        if m not in self.shapes:
            raise NIRError(f"{type(m).__name__} was not reached by the shape pass (it is not called in forward)")
        return self.shapes[m][which]


def _np(t) -> np.ndarray:
    return t.detach().cpu().double().numpy() if isinstance(t, torch.Tensor) else np.asarray(t, dtype=np.float64)


def _one(name: str, node) -> Fragment:
    name = name or type(node).__name__.lower()   # a model that is a single layer
    return Fragment({name: node}, [], [name], name)


def _linear(ctx, m: nn.Linear, name):
    w = _np(m.weight)
    node = ctx.nir.Linear(weight=w) if m.bias is None else ctx.nir.Affine(weight=w, bias=_np(m.bias))
    return _one(name, node)


def _conv(ctx, m, name):
    if isinstance(m.padding, str):
        raise NotExpressible(type(m).__name__, "padding", f"{m.padding!r} is exported as integers only")
    if m.groups != 1:
        raise NotExpressible(type(m).__name__, "groups", f"{m.groups}: nir 1.0 takes a Conv node's input channels "
                             f"from weight.shape[1], so a grouped convolution makes a graph it cannot read back")
    if m.padding_mode != "zeros":
        raise NotExpressible(type(m).__name__, "padding_mode", f"{m.padding_mode!r} (NIR pads with zeros)")
    spatial = ctx.shape(m, "in")[1:]
    cls = ctx.nir.Conv1d if isinstance(m, nn.Conv1d) else ctx.nir.Conv2d
    one = (lambda v: int(v[0])) if isinstance(m, nn.Conv1d) else (lambda v: np.asarray(v, dtype=np.int64))
    bias = _np(m.bias) if m.bias is not None else np.zeros(m.out_channels)
    node = cls(input_shape=one(spatial) if isinstance(m, nn.Conv1d) else np.asarray(spatial), weight=_np(m.weight),
               stride=one(m.stride), padding=one(m.padding), dilation=one(m.dilation), groups=m.groups, bias=bias)
    return _one(name, node)


def _avgpool(ctx, m: nn.AvgPool2d, name):
    if m.ceil_mode:
        raise NotExpressible("AvgPool2d", "ceil_mode", "True has no NIR field")
    kw = {k: np.broadcast_to(np.asarray(getattr(m, k) if getattr(m, k) is not None else m.kernel_size), (2,)).copy()
          for k in ("kernel_size", "stride", "padding")}
    if m.divisor_override == 1:
        return _one(name, ctx.nir.SumPool2d(**kw))
    if m.divisor_override is not None or (m.count_include_pad is False and np.any(kw["padding"])):
        raise NotExpressible("AvgPool2d", "divisor_override", "only the mean (NIR AvgPool2d) or the sum "
                             "(divisor_override=1, NIR SumPool2d) are expressible")
    return _one(name, ctx.nir.AvgPool2d(**kw))


def _flatten(ctx, m: L.Flatten, name):
    shape = ctx.shape(m, "in")
    return _one(name, ctx.nir.Flatten(input_type={"input": np.asarray(shape)}, start_dim=m.start_dim - 2,
                                      end_dim=-1))


def _neuron(ctx, m: Neuron, name):
    spec = m.spec
    shape = ctx.shape(m, "in")
    params = {n: getattr(m, n).detach().double() for n in spec.params}   # exact products: tau * 1e-4
    node_type, values = spec.to_nir(params, ctx.dt / spec.dt)
    arrays = {k: np.broadcast_to(_np(v), shape).copy() for k, v in values.items()}
    meta = {"spikeforge_spec": type(spec).__name__, "spikeforge_dt": spec.dt}
    meta.update({f"spikeforge_{f.name}": _meta_value(getattr(spec, f.name)) for f in fields(spec) if f.name != "dt"})
    return _one(name, getattr(ctx.nir, node_type)(**arrays, metadata=meta))


def _meta_value(v):
    return v.value if hasattr(v, "value") else v


def _delay(ctx, m: Delay, name):
    if m.per is not DelayPer.NEURON:
        raise NotExpressible("Delay", "per", "DelayPer.SYNAPSE has no NIR node (NIR's Delay is per neuron)")
    return _one(name, ctx.nir.Delay(delay=_np(m.delays) * ctx.dt))


def _scale(ctx, m: L.Scale, name):
    return _one(name, ctx.nir.Scale(scale=np.broadcast_to(_np(m.scale), ctx.shape(m, "in")).copy()))


def _threshold(ctx, m: L.Threshold, name):
    return _one(name, ctx.nir.Threshold(threshold=np.broadcast_to(_np(m.threshold), ctx.shape(m, "in")).copy()))


def _distributed(ctx, m: L.TimeDistributed, name):
    inner = m.module
    if type(inner) in (nn.Conv1d, nn.Conv2d, nn.Linear, nn.AvgPool2d):
        ctx.shapes[inner] = {k: v for k, v in ctx.shapes[m].items()}
        return _layer(ctx, inner, name)
    raise NotExpressible(type(inner).__name__, "layer", "has no NIR node")


def _sequential(ctx, m: nn.Sequential, name):
    frag, prev = Fragment(), None
    for i, child in enumerate(m):
        f = _layer(ctx, child, _join(name, str(i)))
        if not f.nodes:          # a pass-through (identity, dropout)
            continue
        _merge(frag, f)
        if prev is None:
            frag.first = list(f.first)
        else:
            frag.edges += [(prev, d) for d in f.first]
        prev = f.last
    frag.last = prev
    return frag


def _residual(ctx, m: L.Residual, name):
    inner = _layer(ctx, m.module, _join(name, "module"))
    out = _join(name, "sum")
    frag = Fragment(dict(inner.nodes), list(inner.edges), [*inner.first, out], out)
    frag.nodes[out] = _identity_node(ctx, ctx.shape(m, "out"))   # the summing point
    frag.edges.append((inner.last, out))
    return frag


def _recurrent(ctx, m: L.Recurrent, name):
    ctx.shapes[m.neuron] = ctx.shapes[m]
    neuron = _neuron(ctx, m.neuron, "neuron")
    ctx.shapes[m.recurrent] = {"in": ctx.shapes[m]["out"], "out": ctx.shapes[m]["out"]}
    rec = _layer(ctx, m.recurrent, "recurrent")
    shape = np.asarray(ctx.shape(m, "in"))
    nodes = {"input": ctx.nir.Input(input_type={"input": shape}), **neuron.nodes, **rec.nodes,
             "output": ctx.nir.Output(output_type={"output": shape})}
    edges = [("input", "neuron"), ("neuron", rec.first[0]), (rec.last, "neuron"), ("neuron", "output")]
    return _one(name, ctx.nir.NIRGraph(nodes=nodes, edges=edges, type_check=False))


def _graph(ctx, m: Graph, name):
    frag = Fragment()
    ends = {}
    name = name or "graph"   # (its nodes "input" and "output" would meet the top level's)
    for n, child in m.nodes.items():
        if n in (m.input, m.output):   # kept as identity nodes: sums may meet there
            f = _one(_join(name, n), _identity_node(ctx, ctx.shape(child, "in")))
        else:
            f = _layer(ctx, child, _join(name, n))
        _merge(frag, f)
        ends[n] = f
    for a, b in m.edges:
        frag.edges += [(ends[a].last, d) for d in ends[b].first]
    frag.first, frag.last = ends[m.input].first, ends[m.output].last
    return frag


def _identity(ctx, m, name):
    return Fragment()


def _identity_node(ctx, shape):
    """A node that passes its (summed) input on: ``Scale`` by ones (nir 1.0 cannot write its
    ``Identity`` node to a file)."""
    return ctx.nir.Scale(scale=np.ones(shape))


EXPORTERS = {nn.Linear: _linear, nn.Conv1d: _conv, nn.Conv2d: _conv, nn.AvgPool2d: _avgpool, L.Flatten: _flatten,
             Neuron: _neuron, Delay: _delay, L.Scale: _scale, L.Threshold: _threshold,
             L.TimeDistributed: _distributed, nn.Sequential: _sequential, L.Residual: _residual,
             L.Recurrent: _recurrent, Graph: _graph, nn.Identity: _identity, nn.Dropout: _identity,
             L.TimeDropout: _identity}


def _layer(ctx, m: nn.Module, name: str) -> Fragment:
    for cls in type(m).__mro__:
        if cls in EXPORTERS:
            try:
                return EXPORTERS[cls](ctx, m, name)
            except NotExpressible as e:
                raise NIRError(f"{_where(name)} ({type(m).__name__}): {e}") from None
    raise NIRError(f"{_where(name)} ({type(m).__name__}) has no NIR node; exportable layers: "
                   f"{', '.join(sorted(c.__name__ for c in EXPORTERS))}")


def _where(name: str) -> str:
    return "model" + "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in name.split("_") if p) if name else "model"


def _join(a: str, b: str) -> str:
    return f"{a}_{b}" if a else b


def _merge(into: Fragment, f: Fragment) -> None:
    into.nodes.update(f.nodes)
    into.edges += f.edges


def _shapes(model: nn.Module, input_shape) -> dict:
    """Feature shapes (no time, no batch) of every module's input and output, from one pass."""
    shapes, hooks = {}, []

    def hook(m, args, out):
        if args and isinstance(args[0], torch.Tensor) and isinstance(out, torch.Tensor):
            shapes[m] = {"in": tuple(args[0].shape[2:]), "out": tuple(out.shape[2:])}

    probe = copy.deepcopy(model)
    originals = dict(zip(probe.modules(), model.modules()))
    for m in probe.modules():
        hooks.append(m.register_forward_hook(hook))
    reset(probe)
    with torch.no_grad():
        probe(torch.zeros(1, 1, *input_shape, dtype=next(probe.parameters(), torch.zeros(())).dtype))
    for h in hooks:
        h.remove()
    return {originals[m]: s for m, s in shapes.items()}


def export(model: nn.Module, *, dt: float, input_shape=None, nir_module=None):
    """The NIR graph of ``model`` (see ``spikeforge.nir.export``)."""
    if input_shape is None:
        input_shape = _guess_input_shape(model)
    ctx = _Context(nir_module, float(dt), _shapes(model, tuple(input_shape)))
    body = _layer(ctx, model, "")
    shape_out = ctx.shapes[model]["out"]
    nodes = {"input": nir_module.Input(input_type={"input": np.asarray(input_shape)}), **body.nodes,
             "output": nir_module.Output(output_type={"output": np.asarray(shape_out)})}
    edges = [("input", d) for d in body.first] + body.edges + [(body.last or "input", "output")]
    meta = {"dt": float(dt), "discretisation": "euler", "time_first": True, "source": f"spikeforge {__version__}"}
    return nir_module.NIRGraph(nodes=nodes, edges=edges, metadata=meta, type_check=False)


def _guess_input_shape(model: nn.Module) -> tuple[int, ...]:
    for m in model.modules():
        if isinstance(m, nn.Linear):
            return (m.in_features,)
        if isinstance(m, (nn.Conv1d, nn.Conv2d)):
            break
    raise NIRError("input_shape is needed to export this model (the shape of one time step of one sample, "
                   "e.g. input_shape=(2, 34, 34))")
