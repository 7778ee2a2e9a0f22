"""The traced model as a small graph of layers (``Node``), BatchNorm folding, and ``Graph``,
the container that runs such a graph on sequences and step by step.

``trace(model)`` runs ``torch.fx.symbolic_trace`` and keeps, per fx node, the layer (an
``nn.Module``; ``F.relu``/``torch.relu``/``.relu()`` become ``nn.ReLU`` and ``torch.flatten``
``nn.Flatten``) and the names of its inputs. Two tensors added (``+``, ``torch.add``) are an
``ADD`` node (no module). Anything else raises ``ConversionError`` naming the fx node.
"""
from __future__ import annotations

import copy
import operator
from collections import OrderedDict
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from ..nn import stream
from .qcfs import QCFS

__all__ = ["ConversionError", "Node", "Graph", "trace", "fold", "as_module", "nodes_of", "ADD",
           "LINEAR", "POOL", "ACTIVATION"]

LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d)
POOL = (nn.AvgPool1d, nn.AvgPool2d, nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.MaxPool1d, nn.MaxPool2d)
ACTIVATION = (nn.ReLU, QCFS)
_DROPPED = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_NORM = (nn.BatchNorm1d, nn.BatchNorm2d)
KNOWN = (*LINEAR, *_NORM, *ACTIVATION, *POOL, nn.Flatten, *_DROPPED)
_ADD = (operator.add, operator.iadd, torch.add)
_JOIN = (torch.cat, torch.stack, operator.mul, torch.mul)
ADD = None   # the module of an addition node


class ConversionError(ValueError):
    """The model cannot be converted (an unsupported layer or layout); names the fx node."""


@dataclass
class Node:
    """One layer: ``module`` applied to the output of ``inputs[0]``, or (``module is ADD``)
    the sum of the outputs of ``inputs``."""

    name: str
    module: nn.Module | None
    inputs: tuple[str, ...]


_SUPPORTED = ("Linear, Conv1d/2d, BatchNorm1d/2d (folded), ReLU, sf.convert.QCFS, AvgPool1d/2d, "
              "AdaptiveAvgPool1d/2d, MaxPool1d/2d, Flatten, Dropout, Identity, additions of two branches")


def _function(node: fx.Node) -> nn.Module | None:
    t = node.target
    if t in (F.relu, torch.relu):
        return nn.ReLU()
    if t is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return nn.Flatten(start, end)
    what = getattr(t, "__name__", repr(t))
    if t in _ADD:
        tensors = [a for a in node.args if isinstance(a, fx.Node)]
        if len(tensors) != 2 or len(node.args) != 2 or node.kwargs:
            raise ConversionError(f"ann_to_snn: node {node.name!r} ({what}) must add exactly two tensors (branches), "
                                  f"without constants or alpha; got args {node.args}, kwargs {node.kwargs}")
        return ADD
    if t in _JOIN:
        raise ConversionError(f"ann_to_snn: node {node.name!r} ({what}) joins branches by {what}: not supported "
                              f"(only additions of two branches are); supported: {_SUPPORTED}")
    raise ConversionError(f"ann_to_snn: node {node.name!r} calls function {t!r}, which the conversion does not "
                          f"know; supported: {_SUPPORTED}")


def _layer(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        if type(module) not in KNOWN:
            raise ConversionError(f"ann_to_snn: node {node.name!r} is a {type(module).__name__} ({node.target!r}), "
                                  f"which the conversion does not support; supported: {_SUPPORTED}")
        return copy.deepcopy(module)
    if node.op == "call_function":
        return _function(node)
    if node.op == "call_method" and node.target == "relu":
        return nn.ReLU()
    raise ConversionError(f"ann_to_snn: node {node.name!r} ({node.op} {node.target!r}) is not supported; "
                          f"use modules (nn.ReLU, nn.Flatten, ...) in the model")


class _Tracer(fx.Tracer):
    """Keeps ``QCFS`` a leaf (one node)."""

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        return isinstance(m, QCFS) or super().is_leaf_module(m, qualname)


def trace(model: nn.Module) -> tuple[str, list[Node]]:
    """The model's input name and its layers in execution order (copies of its modules)."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"ann_to_snn: model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        gm = fx.GraphModule(model, _Tracer().trace(model))
    except Exception as e:  # noqa: BLE001 - re-raised with the cause
        raise ConversionError(f"ann_to_snn: torch.fx.symbolic_trace failed on {type(model).__name__}: {e}") from e
    source, nodes = None, []
    for node in gm.graph.nodes:
        if node.op == "placeholder":
            if source is not None:
                raise ConversionError(f"ann_to_snn: the model takes more than one input (node {node.name!r})")
            source = node.name
            continue
        inputs = tuple(a.name for a in node.all_input_nodes)
        if node.op == "output":
            if len(node.args) != 1 or not isinstance(node.args[0], fx.Node):
                raise ConversionError(f"ann_to_snn: the model must return one tensor, got {node.args[0]!r}")
            if nodes and inputs[0] != nodes[-1].name:   # the result is an earlier node: drop what follows it
                raise ConversionError(f"ann_to_snn: the model returns node {inputs[0]!r}, not its last layer")
            break
        module = _layer(gm, node)
        if module is not ADD and len(inputs) != 1:
            raise ConversionError(f"ann_to_snn: node {node.name!r} ({node.op} {node.target!r}) takes {len(inputs)} "
                                  f"tensor inputs; a layer must take exactly one")
        nodes.append(Node(node.name, module, inputs))
    if source is None or not nodes:
        raise ConversionError("ann_to_snn: the model has no layers to convert")
    return source, nodes


# -- BatchNorm folding --------------------------------------------------------------------------
def _fold_one(layer: nn.Module, bn: nn.Module, name: str) -> nn.Module:
    want = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d  # Linear, Conv1d
    if not isinstance(bn, want) or bn.running_mean is None:
        raise ConversionError(f"ann_to_snn: node {name!r}: {type(bn).__name__} cannot be folded into the "
                              f"{type(layer).__name__} before it (it needs a {want.__name__} with running statistics)")
    gain = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        gain = gain * bn.weight
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * gain + (bn.bias if bn.affine else 0.0)
    with torch.no_grad():
        layer.weight.mul_(gain.view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias = nn.Parameter(new_bias.detach().clone())
    return layer


def fold(source: str, nodes: list[Node]) -> tuple[str, list[Node]]:
    """Each BatchNorm folded into the Linear/Conv before it (which must feed only it);
    Dropout/Identity removed (their consumers read their input)."""
    out: list[Node] = []
    alias: dict[str, str] = {}
    users: dict[str, int] = {}
    for n in nodes:
        for i in n.inputs:
            users[i] = users.get(i, 0) + 1
    by_name = {}
    for n in nodes:
        inputs = tuple(alias.get(i, i) for i in n.inputs)
        if isinstance(n.module, _DROPPED):
            alias[n.name] = inputs[0]
            continue
        if isinstance(n.module, _NORM):
            prev = by_name.get(inputs[0])
            if prev is None or not isinstance(prev.module, LINEAR) or users.get(n.inputs[0], 0) != 1:
                raise ConversionError(f"ann_to_snn: node {n.name!r}: BatchNorm must directly follow a Linear or "
                                      f"Conv1d/Conv2d that feeds nothing else (it is folded into it)")
            prev.module = _fold_one(prev.module, n.module, n.name)
            alias[n.name] = prev.name
            continue
        node = Node(n.name, n.module, inputs)
        by_name[n.name] = node
        out.append(node)
    if not out:
        raise ConversionError("ann_to_snn: the model has no layers to convert")
    return source, out


# -- containers ------------------------------------------------------------------------------------
def _is_chain(source: str, nodes: list[Node]) -> bool:
    prev = source
    for n in nodes:
        if n.module is ADD or n.inputs != (prev,):
            return False
        prev = n.name
    return True


def as_module(source: str, nodes: list[Node]) -> nn.Module:
    """A chain as an ``nn.Sequential`` named by node, anything else as a ``Graph``."""
    if _is_chain(source, nodes):
        return nn.Sequential(OrderedDict((n.name, n.module) for n in nodes))
    return Graph(source, nodes)


def nodes_of(module: nn.Module) -> tuple[str, list[Node]]:
    """The inverse of ``as_module``."""
    if isinstance(module, Graph):
        return module.source, [Node(n, None if n not in module.layers else module.layers[n], i)
                               for n, i in module.wiring]
    names = [n for n, _ in module.named_children()]
    return "input", [Node(n, m, (p,)) for n, m, p in zip(names, module.children(), ["input", *names[:-1]])]


class Graph(nn.Module):
    """Layers wired as a directed acyclic graph: ``wiring`` lists ``(name, inputs)`` in
    execution order; ``layers[name]`` is applied to the output of its one input, or, for a
    name without a layer, the outputs of its inputs are added. The last node is the output.
    Works on sequences ``(T, B, ...)`` and, with ``spikeforge.step``, one step at a time."""

    def __init__(self, source: str, nodes: list[Node]) -> None:
        super().__init__()
        self.source = source
        self.layers = nn.ModuleDict({n.name: n.module for n in nodes if n.module is not ADD})
        self.wiring = [(n.name, tuple(n.inputs)) for n in nodes]

    def _run(self, x: Tensor, call) -> Tensor:
        env = {self.source: x}
        for name, inputs in self.wiring:
            if name in self.layers:
                env[name] = call(self.layers[name], env[inputs[0]])
            else:
                env[name] = env[inputs[0]] + env[inputs[1]]
        return env[self.wiring[-1][0]]

    def forward(self, x: Tensor) -> Tensor:
        return self._run(x, lambda m, v: m(v))

    def step(self, x: Tensor) -> Tensor:
        """One time step ``(B, ...)`` through every layer (``spikeforge.step``)."""
        return self._run(x, stream.step)

    def extra_repr(self) -> str:
        return "wiring: " + ", ".join(f"{n}<-{'+'.join(i)}" for n, i in self.wiring)
