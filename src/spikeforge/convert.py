"""ANN -> SNN conversion (first increment): a trained ReLU network becomes integrate-and-fire.

``ann_to_snn(model, calibration)`` walks ``model`` with ``torch.fx.symbolic_trace`` and
rebuilds it as an ordinary spikeforge ``nn.Sequential`` that runs on ``(T, B, ...)``:

- ``BatchNorm1d/2d`` is folded into the ``Linear``/``Conv1d``/``Conv2d`` just before it
  (``fold_batchnorm``), ``Dropout`` is removed;
- every ``ReLU`` becomes ``sf.nn.IF(reset="soft")`` (reset by subtraction), threshold 1;
- weights are balanced on calibration data (data-based normalisation, Diehl et al. 2015;
  Rueckauer et al. 2017): ``lambda_l`` is the ``percentile`` of the activations of ReLU ``l``
  (100 = the maximum; per output channel with ``per_channel=True``) and the layer feeding it
  gets ``W_l * lambda_{l-1} / lambda_l`` and ``b_l / lambda_l``; the IF thresholds stay 1;
- ``Linear`` runs on ``(T, B, F)`` as it is; ``Conv1d/2d`` and ``AvgPool1d/2d`` are wrapped in
  ``sf.nn.TimeDistributed``; ``Flatten`` becomes ``sf.nn.Flatten(start_dim=2)``;
- the last layer has no neuron: it is the readout, and the output is its input current at
  every step, ``(T, B, K)``; ``output.mean(0)`` (the integrated current divided by ``T``)
  approximates the ANN's output and converges to it as ``T`` grows.

The input is the analog sample repeated over time (direct coding, constant current): give
``(T, B, ...)``, or pass ``steps`` and give ``(B, ...)``. MaxPool, residual additions and
QCFS activations are for a later increment and raise ``ConversionError`` naming the node.
"""
from __future__ import annotations

import copy
import math
import operator
from collections import OrderedDict
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from . import encoding
from .nn import IF, Flatten, Scale, TimeDistributed

__all__ = ["ConversionError", "DirectInput", "ann_to_snn", "calibrate", "fold_batchnorm"]

_LINEAR = (nn.Linear, nn.Conv1d, nn.Conv2d)
_POOL = (nn.AvgPool1d, nn.AvgPool2d)
_KEPT = (*_LINEAR, nn.BatchNorm1d, nn.BatchNorm2d, nn.ReLU, *_POOL, nn.Flatten,
         nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)
_LATER = {nn.MaxPool1d: "MaxPool", nn.MaxPool2d: "MaxPool", nn.AdaptiveMaxPool2d: "MaxPool"}
_RESIDUAL = (operator.add, operator.iadd, torch.add, torch.cat)
_BATCH = 256


class ConversionError(ValueError):
    """The model cannot be converted (an unsupported layer or layout); names the fx node."""


class DirectInput(nn.Module):
    """Direct coding: ``(B, ...) -> (steps, B, ...)``, the sample repeated as a constant current."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ann_to_snn: steps must be an int >= 1 or None, got {steps!r}")
        self.steps = steps

    def forward(self, x: Tensor) -> Tensor:
        return encoding.direct(x, self.steps)

    def extra_repr(self) -> str:
        return f"steps={self.steps}"


# -- graph -> chain of modules -------------------------------------------------------------
def _from_function(node: fx.Node) -> nn.Module:
    if node.target in (F.relu, torch.relu):
        return nn.ReLU()
    if node.target is torch.flatten:
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return nn.Flatten(start, end)
    if node.target in _RESIDUAL:
        raise ConversionError(f"ann_to_snn: node {node.name!r} ({getattr(node.target, '__name__', node.target)}) "
                              f"joins branches (residual addition / concatenation): not supported yet, a later "
                              f"increment of the conversion adds residuals")
    raise ConversionError(f"ann_to_snn: node {node.name!r} calls function {node.target!r}, which the conversion "
                          f"does not know; supported: Linear, Conv1d/2d, BatchNorm1d/2d, ReLU, AvgPool1d/2d, Flatten, Dropout")


def _from_node(gm: fx.GraphModule, node: fx.Node) -> nn.Module:
    if node.op == "call_module":
        module = gm.get_submodule(node.target)
        for kind, what in _LATER.items():
            if isinstance(module, kind):
                raise ConversionError(f"ann_to_snn: node {node.name!r} ({type(module).__name__} at {node.target!r}): "
                                      f"{what} is not supported yet (a later increment adds a spiking max-pool)")
        if type(module) not in _KEPT:
            raise ConversionError(f"ann_to_snn: node {node.name!r} is a {type(module).__name__} ({node.target!r}), "
                                  f"which the conversion does not support; supported: "
                                  f"{', '.join(k.__name__ for k in _KEPT)}")
        return module
    if node.op == "call_function":
        return _from_function(node)
    if node.op == "call_method" and node.target == "relu":
        return nn.ReLU()
    raise ConversionError(f"ann_to_snn: node {node.name!r} ({node.op} {node.target!r}) is not supported; "
                          f"use modules (nn.ReLU, nn.Flatten, ...) in the model")


def _chain(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """The model as a chain of ``(node name, module)``; anything else is an error naming the node."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"ann_to_snn: model must be a torch.nn.Module, got {type(model).__name__}")
    try:
        gm = fx.symbolic_trace(model)
    except Exception as e:  # noqa: BLE001 - re-raised with the cause
        raise ConversionError(f"ann_to_snn: torch.fx.symbolic_trace failed on {type(model).__name__}: {e}") from e
    chain, previous = [], None
    for node in gm.graph.nodes:
        inputs = [a for a in node.all_input_nodes]
        if node.op == "placeholder":
            if previous is not None:
                raise ConversionError(f"ann_to_snn: the model takes more than one input (node {node.name!r})")
            previous = node
            continue
        if len(inputs) != 1 or inputs[0] is not previous:
            raise ConversionError(f"ann_to_snn: node {node.name!r} ({node.op} {node.target!r}) does not take exactly "
                                  f"the previous node as its input; only a chain of layers is supported yet "
                                  f"(residuals and branches are for a later increment)")
        if node.op == "output":
            break
        chain.append((node.name, _from_node(gm, node)))
        previous = node
    return chain


# -- BatchNorm folding ------------------------------------------------------------------------
def _fold(layer: nn.Module, bn: nn.Module, name: str) -> nn.Module:
    want = nn.BatchNorm2d if isinstance(layer, nn.Conv2d) else nn.BatchNorm1d  # Linear, Conv1d
    if not isinstance(bn, want) or bn.running_mean is None:
        raise ConversionError(f"ann_to_snn: node {name!r}: {type(bn).__name__} cannot be folded into the "
                              f"{type(layer).__name__} before it (it needs a {want.__name__} with running statistics)")
    layer = copy.deepcopy(layer)
    gain = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        gain = gain * bn.weight
    bias = layer.bias if layer.bias is not None else torch.zeros_like(bn.running_mean)
    new_bias = (bias - bn.running_mean) * gain + (bn.bias if bn.affine else 0.0)
    with torch.no_grad():
        layer.weight.mul_(gain.view(-1, *[1] * (layer.weight.dim() - 1)))
        layer.bias = nn.Parameter(new_bias.detach().clone())
    return layer


def fold_batchnorm(model: nn.Module) -> nn.Sequential:
    """The model as an ``nn.Sequential`` of its chain (named by fx node), each BatchNorm folded
    into the Linear/Conv1d/Conv2d before it and Dropout/Identity removed. Equals ``model.eval()``."""
    out: OrderedDict[str, nn.Module] = OrderedDict()
    for name, module in _chain(model):
        if isinstance(module, (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)):
            continue
        if isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
            last = next(reversed(out), None)
            if last is None or not isinstance(out[last], _LINEAR):
                raise ConversionError(f"ann_to_snn: node {name!r}: BatchNorm must directly follow a Linear or "
                                      f"Conv1d/Conv2d (it is folded into it)")
            out[last] = _fold(out[last], module, name)
            continue
        out[name] = copy.deepcopy(module) if isinstance(module, _LINEAR) else module
    return nn.Sequential(out).eval()


# -- calibration ----------------------------------------------------------------------------
def _batches(calibration) -> Iterable[Tensor]:
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


def _check_percentile(percentile) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"ann_to_snn: percentile must be a number in (0, 100] (100 = the maximum), got {percentile!r}")
    return float(percentile)


@torch.no_grad()
def calibrate(folded: nn.Sequential, calibration, *, percentile: float = 99.9,
              per_channel: bool = False) -> tuple[dict[str, Tensor], dict[str, tuple]]:
    """Run ``folded`` (from ``fold_batchnorm``) on the calibration data: ``lambda`` of every
    ReLU (the ``percentile`` of its outputs; per channel, dim 1, with ``per_channel``) and the
    per-sample input shape of every layer."""
    percentile = _check_percentile(percentile)
    if not isinstance(per_channel, bool):
        raise TypeError(f"ann_to_snn: per_channel must be True or False, got {per_channel!r}")
    acts: dict[str, list[Tensor]] = {n: [] for n, m in folded.named_children() if isinstance(m, nn.ReLU)}
    shapes: dict[str, tuple] = {}
    seen = 0
    for x in _batches(calibration):
        seen += len(x)
        for name, module in folded.named_children():
            shapes[name] = tuple(x.shape[1:])
            x = module(x)
            if name in acts:
                acts[name].append(x)
    if seen == 0:
        raise ValueError("ann_to_snn: calibration data is empty")
    return {n: _level(torch.cat(a), percentile, per_channel) for n, a in acts.items()}, shapes


# -- the spiking model --------------------------------------------------------------------------
def _next_level(names: list[str], modules: list[nn.Module], i: int, levels: dict[str, Tensor]) -> Tensor:
    """lambda of the ReLU fed by layer ``i`` (through AvgPool1d/2d only), else 1 (an analog output)."""
    for name, module in zip(names[i + 1:], modules[i + 1:]):
        if isinstance(module, nn.ReLU):
            return levels[name]
        if not isinstance(module, _POOL):
            break
    return torch.ones(())


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


def _flatten(module: nn.Flatten, name: str, scale: Tensor, shape: tuple) -> tuple[nn.Module, Tensor]:
    if module.start_dim != 1 or module.end_dim not in (-1, len(shape)):
        raise ConversionError(f"ann_to_snn: node {name!r}: only Flatten(start_dim=1, end_dim=-1) is supported, got "
                              f"start_dim={module.start_dim}, end_dim={module.end_dim}")
    if scale.dim() == 1:
        scale = scale.repeat_interleave(math.prod(shape[1:]))
    return Flatten(start_dim=2), scale


def _spiking(folded: nn.Sequential, levels: dict[str, Tensor], shapes: dict[str, tuple]) -> list[nn.Module]:
    names, modules = zip(*folded.named_children())
    names, modules = list(names), list(modules)
    scale, out = torch.ones(()), []
    for i, (name, module) in enumerate(zip(names, modules)):
        if isinstance(module, _LINEAR):
            s_out = _next_level(names, modules, i, levels)
            out.append(_balanced(module, scale, s_out))
            scale = s_out
        elif isinstance(module, nn.ReLU):
            if not torch.equal(scale, levels[name]):
                raise ConversionError(f"ann_to_snn: node {name!r}: a ReLU must be fed by a Linear/Conv1d/Conv2d (through "
                                      f"AvgPool1d/2d only) so that its threshold can be balanced")
            out.append(IF(reset="soft", v_threshold=1.0))
        elif isinstance(module, _POOL):
            out.append(TimeDistributed(copy.deepcopy(module)))
        else:  # nn.Flatten
            flat, scale = _flatten(module, name, scale, shapes[name])
            out.append(flat)
    if not torch.equal(scale, torch.ones(())):  # the model ends in a ReLU/pool: undo the last scale
        last = shapes[names[-1]]
        out.append(Scale(scale if scale.dim() == 0 else _per(scale, scale.numel(), (1,) * (len(last) - 1))))
    return out


def ann_to_snn(model: nn.Module, calibration, *, steps: int | None = None, percentile: float = 99.9,
               per_channel: bool = False) -> nn.Sequential:
    """Convert a trained ReLU network (Linear, Conv1d/2d, BatchNorm1d/2d, ReLU, AvgPool1d/2d, Flatten,
    Dropout) into a spiking ``nn.Sequential`` of soft-reset IF neurons; see the module docstring.

    ``calibration``: a tensor ``(N, ...)`` of inputs or an iterable of tensors / ``(x, ...)``
    batches (a DataLoader). ``percentile``: 100 balances on the maximum activation, 99.9 (default)
    on a robust percentile; ``per_channel`` balances every output channel on its own.
    ``steps``: ``None`` -> the model takes ``(T, B, ...)``; an int -> it takes ``(B, ...)`` and
    repeats it ``steps`` times. The output is the readout current ``(T, B, K)``: use ``.mean(0)``."""
    if steps is not None:
        DirectInput(steps)  # validates
    folded = fold_batchnorm(model)
    if len(folded) == 0:
        raise ConversionError("ann_to_snn: the model has no layers to convert")
    levels, shapes = calibrate(folded, calibration, percentile=percentile, per_channel=per_channel)
    layers = _spiking(folded, levels, shapes)
    return nn.Sequential(*([DirectInput(steps)] if steps is not None else []), *layers)
