"""Calibration (the activation levels lambda) and the spiking graph with balanced weights.

Every tensor of the spiking network stands for an ANN tensor divided by a *scale*: a scalar, or
one value per channel (dim 1) / per feature. The input has scale 1; an IF neuron's spikes have the
scale ``lambda`` of the activation it replaces (rate ``r`` stands for ``lambda * r``). A Linear/Conv
absorbs any scale of its input into its weights and produces the scale its consumers want
(``W * s_in / s_out``, ``b / s_out``). Activations want ``lambda`` (so the IF threshold is 1),
both inputs of an addition must share one scale, and the model's output wants 1. Where a tensor
does not carry the scale its consumer wants (a residual shortcut of spikes), a ``Scale`` layer
on that edge multiplies it by ``s_supplied / s_wanted``.
"""
from __future__ import annotations

import copy
import math
from collections.abc import Iterable

import torch
from torch import Tensor, nn

from ..neurons import Reset
from ..nn import IF, Flatten, Scale, TimeDistributed
from ._graph import ACTIVATION, ADD, LINEAR, POOL, ConversionError, Node
from .maxpool import SpikingMaxPool
from .qcfs import QCFS

__all__ = ["calibrate_nodes", "spiking_nodes"]

_BATCH = 256


def _batches(calibration) -> Iterable[Tensor]:
    for x in _raw_batches(calibration):
        if x.dim() < 2:
            raise ValueError(f"ann_to_snn: calibration must be samples (N, ...) with a batch dimension first, "
                             f"got a batch of shape {tuple(x.shape)}")
        if x.is_floating_point() and not bool(torch.isfinite(x).all()):
            raise ValueError("ann_to_snn: calibration holds NaN or inf (the activation levels would be wrong)")
        yield x


def _raw_batches(calibration) -> Iterable[Tensor]:
    if isinstance(calibration, Tensor):
        yield from calibration.split(_BATCH)
        return
    if not isinstance(calibration, Iterable):
        raise TypeError(f"ann_to_snn: calibration must be a tensor (N, ...) or an iterable of tensors or "
                        f"(x, ...) batches, got {type(calibration).__name__}")
    for batch in calibration:
        x = batch[0] if isinstance(batch, (tuple, list)) else batch
        if not isinstance(x, Tensor):
            raise TypeError(f"ann_to_snn: calibration batches must be tensors or (x, ...) tuples, got "
                            f"{type(x).__name__}")
        yield x


def _level(acts: Tensor, percentile: float, per_channel: bool) -> Tensor:
    rows = acts.transpose(0, 1).reshape(acts.shape[1], -1) if per_channel else acts.reshape(1, -1)
    k = max(1, math.ceil(percentile / 100.0 * rows.shape[1]))
    lam = rows.kthvalue(k, dim=1).values if k < rows.shape[1] else rows.amax(dim=1)
    lam = torch.where(lam > 0, lam, torch.ones_like(lam))  # a channel silent in calibration: scale 1
    return lam if per_channel else lam[0]


def run_ann(source: str, nodes: list[Node], x: Tensor, seen: dict | None = None) -> dict[str, Tensor]:
    """Every node's output on ``x`` (and the source's); ``seen[name]`` collects activations."""
    env = {source: x}
    for n in nodes:
        env[n.name] = env[n.inputs[0]] + env[n.inputs[1]] if n.module is ADD else n.module(env[n.inputs[0]])
        if seen is not None and n.name in seen:
            seen[n.name].append(env[n.name])
    return env


@torch.no_grad()
def calibrate_nodes(source: str, nodes: list[Node], calibration, percentile: float, per_channel: bool):
    """``lambda`` of every activation (a ReLU's ``percentile`` of its outputs, per channel with
    ``per_channel``; a QCFS's own threshold) and the per-sample output shape of every node."""
    acts = {n.name: [] for n in nodes if isinstance(n.module, nn.ReLU)}
    shapes: dict[str, tuple] = {}
    count = 0
    for x in _batches(calibration):
        count += len(x)
        env = run_ann(source, nodes, x, acts)
        shapes = {k: tuple(v.shape[1:]) for k, v in env.items()}
    if count == 0:
        raise ValueError("ann_to_snn: calibration data is empty")
    levels = {k: _level(torch.cat(a), percentile, per_channel) for k, a in acts.items()}
    for n in nodes:
        if isinstance(n.module, QCFS):
            levels[n.name] = n.module.threshold.detach().clone()
    return levels, shapes


# -- scales ------------------------------------------------------------------------------------
def _shaped(s: Tensor, shape: tuple) -> Tensor:
    """A scale as a tensor that broadcasts over the per-sample shape ``shape``."""
    return s if s.dim() == 0 else s.reshape(-1, *[1] * (len(shape) - 1))


def _per(scale: Tensor, n: int, shape: tuple = ()) -> Tensor:
    return scale.expand(n).reshape(n, *shape) if scale.dim() == 0 else scale.reshape(n, *shape)


def _balanced(layer: nn.Module, s_in: Tensor, s_out: Tensor) -> nn.Module:
    layer = copy.deepcopy(layer)
    out_f, in_f = layer.weight.shape[:2]
    tail = (1,) * (layer.weight.dim() - 2)
    with torch.no_grad():
        layer.weight.mul_(_per(s_in, in_f, tail).unsqueeze(0) / _per(s_out, out_f, (1,) + tail))
        if layer.bias is not None:
            layer.bias.div_(_per(s_out, out_f))
    return layer if isinstance(layer, nn.Linear) else TimeDistributed(layer)


def _demands(nodes: list[Node], levels: dict, shapes: dict) -> dict[str, Tensor | None]:
    """The scale each node's output is wanted at (by its first consumer that wants one; the
    output of the model wants 1), from the last node back."""
    consumers: dict[str, list[Node]] = {}
    for n in nodes:
        for i in n.inputs:
            consumers.setdefault(i, []).append(n)
    need: dict[str, Tensor | None] = {}
    for n in reversed(nodes):
        wants = [torch.ones(())] if n is nodes[-1] else []
        for c in consumers.get(n.name, []):
            if isinstance(c.module, ACTIVATION):
                wants.append(levels[c.name])
            elif c.module is ADD or isinstance(c.module, POOL):
                wants.append(need[c.name])
            elif isinstance(c.module, nn.Flatten):
                if need[c.name] is not None and need[c.name].dim() > 0:
                    raise ConversionError(f"ann_to_snn: node {c.name!r}: a Flatten that feeds an activation or an "
                                          f"addition directly cannot be balanced per channel; use per_channel=False")
                wants.append(need[c.name])
        need[n.name] = next((w for w in wants if w is not None), None)
    return need


def _flat(module: nn.Flatten, name: str, scale: Tensor, shape: tuple) -> tuple[nn.Module, Tensor]:
    if module.start_dim != 1 or module.end_dim not in (-1, len(shape)):
        raise ConversionError(f"ann_to_snn: node {name!r}: only Flatten(start_dim=1, end_dim=-1) is supported, got "
                              f"start_dim={module.start_dim}, end_dim={module.end_dim}")
    if scale.dim() == 1:
        scale = scale.repeat_interleave(math.prod(shape[1:]))
    return Flatten(start_dim=2), scale


class _Builder:
    """Walks the folded ANN graph forwards and emits the spiking one."""

    def __init__(self, source: str, levels: dict, shapes: dict, v_init: float | None, reset: Reset) -> None:
        self.levels, self.shapes, self.v_init, self.reset = levels, shapes, v_init, reset
        self.supply: dict[str, Tensor] = {source: torch.ones(())}
        self.out: list[Node] = []

    def edge(self, name: str, want: Tensor, consumer: str, k: int) -> str:
        """``name``, or a ``Scale`` node after it that brings its scale to ``want``."""
        shape = self.shapes[name]
        ratio = _shaped(self.supply[name], shape) / _shaped(want, shape)
        if bool((ratio == 1).all()):
            return name
        scaled = f"{consumer}_scale{k}"
        self.out.append(Node(scaled, Scale(ratio), (name,)))
        self.supply[scaled] = want
        return scaled

    def add(self, n: Node, need: dict) -> None:
        m, src = n.module, n.inputs[0] if n.inputs else None
        if isinstance(m, LINEAR):
            s_out = need[n.name] if need[n.name] is not None else torch.ones(())
            node, supply = Node(n.name, _balanced(m, self.supply[src], s_out), n.inputs), s_out
        elif isinstance(m, ACTIVATION):
            lam = self.levels[n.name]
            if not torch.equal(_shaped(self.supply[src], self.shapes[src]), _shaped(lam, self.shapes[src])):
                raise ConversionError(f"ann_to_snn: node {n.name!r}: a ReLU must be fed by a Linear/Conv1d/Conv2d "
                                      f"(through pools or additions only) so that its threshold can be balanced")
            v0 = self.v_init if self.v_init is not None else (0.5 if isinstance(m, QCFS) else 0.0)
            v0 = v0 if self.reset is Reset.SOFT else 0.0      # a hard reset goes back to its start, 0
            node, supply = Node(n.name, IF(reset=self.reset, v_threshold=1.0, v_reset=v0), n.inputs), lam
        elif m is ADD:
            want = need[n.name] if need[n.name] is not None else self.supply[n.inputs[0]]
            inputs = tuple(self.edge(i, want, n.name, k) for k, i in enumerate(n.inputs))
            node, supply = Node(n.name, ADD, inputs), want
        elif isinstance(m, POOL):
            layer = SpikingMaxPool(m) if isinstance(m, (nn.MaxPool1d, nn.MaxPool2d)) else TimeDistributed(m)
            node, supply = Node(n.name, layer, n.inputs), self.supply[src]
        else:  # nn.Flatten
            layer, supply = _flat(m, n.name, self.supply[src], self.shapes[src])
            node = Node(n.name, layer, n.inputs)
        self.out.append(node)
        self.supply[n.name] = supply


def spiking_nodes(source: str, nodes: list[Node], levels: dict, shapes: dict,
                  v_init: float | None = None, reset: Reset = Reset.SOFT) -> list[Node]:
    """The spiking graph of the folded ANN graph (see the module docstring)."""
    need = _demands(nodes, levels, shapes)
    b = _Builder(source, levels, shapes, v_init, reset)
    for n in nodes:
        b.add(n, need)
    b.edge(nodes[-1].name, torch.ones(()), "output", 0)   # a model that ends in an activation: undo its scale
    return b.out
