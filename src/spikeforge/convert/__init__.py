"""ANN -> SNN conversion: a trained ReLU (or QCFS) network becomes integrate-and-fire.

``ann_to_snn(model, calibration)`` traces ``model`` with ``torch.fx`` and rebuilds it as an
ordinary spikeforge model that runs on ``(T, B, ...)`` (an ``nn.Sequential`` for a chain of
layers, a ``Graph`` where branches are added):

- ``BatchNorm1d/2d`` is folded into the ``Linear``/``Conv1d``/``Conv2d`` just before it
  (``fold_batchnorm``), ``Dropout``/``Identity`` are removed;
- every ``ReLU`` becomes ``sf.nn.IF(reset="soft")`` (reset by subtraction) with threshold 1, and
  the weights are balanced on calibration data (data-based normalisation, Diehl et al. 2015;
  Rueckauer et al. 2017): ``lambda_l`` is the ``percentile`` of the outputs of ReLU ``l``
  (100 = the maximum; per output channel with ``per_channel=True``); a ``QCFS`` activation
  (``sf.convert.QCFS``) brings its own trained ``lambda`` and its IF starts at half the threshold;
- the layer feeding activation ``l`` gets ``W_l * lambda_{l-1} / lambda_l`` and ``b_l / lambda_l``;
  the two branches of an addition are brought to one scale (a ``Scale`` on a spiking shortcut);
- ``Conv1d/2d`` and average pools are wrapped in ``sf.nn.TimeDistributed``, ``MaxPool1d/2d``
  becomes ``SpikingMaxPool`` (gated by the running input sum), ``Flatten`` ``sf.nn.Flatten(2)``;
- the last layer has no neuron: the output is its input current at every step, ``(T, B, K)``;
  ``output.mean(0)`` approximates the ANN's output and converges to it as ``T`` grows.

The input is the analog sample repeated over time (direct coding): give ``(T, B, ...)``, or pass
``steps`` and give ``(B, ...)``. ``ProxyModel`` trains the ANN on the SNN's output (ANN-proxy
training). Unsupported layers raise ``ConversionError`` naming the fx node. See docs/conversion.md.
"""
from __future__ import annotations

from collections import OrderedDict

from torch import Tensor, nn

from .. import encoding
from ..neurons import Reset
from ._balance import calibrate_nodes, spiking_nodes
from ._graph import ConversionError, Graph, as_module, fold, nodes_of, trace
from .maxpool import SpikingMaxPool
from .proxy import ProxyModel
from .qcfs import QCFS, qcfs

__all__ = ["ConversionError", "DirectInput", "Graph", "ProxyModel", "QCFS", "SpikingMaxPool", "ann_to_snn",
           "calibrate", "fold_batchnorm", "qcfs"]


class DirectInput(nn.Module):
    """Direct coding: ``(B, ...) -> (steps, B, ...)``, the sample repeated as a constant current."""

    def __init__(self, steps: int) -> None:
        super().__init__()
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ann_to_snn: steps must be an int >= 1 or None, got {steps!r}")
        self.steps = steps

    def forward(self, x: Tensor) -> Tensor:
        return encoding.direct(x, self.steps)

    def step(self, x: Tensor) -> Tensor:
        """One step of a stream: the sample itself (the current of every step)."""
        return x

    def extra_repr(self) -> str:
        return f"steps={self.steps}"


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """The model with each BatchNorm folded into the Linear/Conv1d/Conv2d before it and
    Dropout/Identity removed: an ``nn.Sequential`` (named by fx node) for a chain, else a
    ``Graph``. Equals ``model.eval()``; ``model`` itself is not modified."""
    return as_module(*fold(*trace(model))).eval()


def _reset(reset) -> Reset:
    try:
        value = reset if isinstance(reset, Reset) else Reset(reset)
    except ValueError:
        value = None
    if value not in (Reset.SOFT, Reset.HARD):
        raise ValueError(f"ann_to_snn: reset must be 'soft' (reset by subtraction, the default) or 'hard' (to 0; "
                         f"exports to NIR, less accurate), got {reset!r}")
    return value


def _check(percentile, per_channel, v_init) -> float:
    if isinstance(percentile, bool) or not isinstance(percentile, (int, float)) or not 0 < percentile <= 100:
        raise ValueError(f"ann_to_snn: percentile must be a number in (0, 100] (100 = the maximum), got {percentile!r}")
    if not isinstance(per_channel, bool):
        raise TypeError(f"ann_to_snn: per_channel must be True or False, got {per_channel!r}")
    if v_init is not None and (isinstance(v_init, bool) or not isinstance(v_init, (int, float))
                               or not 0 <= v_init < 1):
        raise ValueError(f"ann_to_snn: v_init must be None or a number in [0, 1) (a fraction of the threshold), "
                         f"got {v_init!r}")
    return float(percentile)


def calibrate(folded: nn.Module, calibration, *, percentile: float = 99.9,
              per_channel: bool = False) -> tuple[dict, dict]:
    """Run ``folded`` (from ``fold_batchnorm``) on the calibration data: ``lambda`` of every
    activation (ReLU: the ``percentile`` of its outputs, per channel (dim 1) with
    ``per_channel``; QCFS: its threshold) and the per-sample input shape of every layer."""
    percentile = _check(percentile, per_channel, None)
    source, nodes = nodes_of(folded)
    levels, out_shapes = calibrate_nodes(source, nodes, calibration, percentile, per_channel)
    return levels, {n.name: out_shapes[n.inputs[0]] for n in nodes}


def ann_to_snn(model: nn.Module, calibration, *, steps: int | None = None, percentile: float = 99.9,
               per_channel: bool = False, v_init: float | None = None, reset: str | Reset = "soft") -> nn.Module:
    """Convert a trained network (Linear, Conv1d/2d, BatchNorm1d/2d, ReLU or QCFS, AvgPool,
    MaxPool, Flatten, Dropout, additions of two branches) into a spiking model of soft-reset
    IF neurons; see the module docstring.

    ``calibration``: a tensor ``(N, ...)`` of inputs or an iterable of tensors / ``(x, ...)``
    batches (a DataLoader). ``percentile``: 100 balances on the maximum activation, 99.9 (default)
    on a robust percentile; ``per_channel`` balances every output channel on its own.
    ``v_init``: the IF membranes' initial value as a fraction of the threshold (``None``: 0.5 for
    QCFS activations, 0 for ReLU). ``reset="hard"``: IF neurons that reset to 0 (NIR's IF, so a
    chain of Linear/Conv/AvgPool2d/Flatten exports with ``spikeforge.nir``; they lose the charge
    above threshold, so they are less accurate, and they start at 0). ``steps``: ``None`` -> the model takes ``(T, B, ...)``; an int
    -> it takes ``(B, ...)`` and repeats it ``steps`` times. The output is the readout current
    ``(T, B, K)``: use ``.mean(0)``."""
    percentile, reset = _check(percentile, per_channel, v_init), _reset(reset)
    if steps is not None:
        DirectInput(steps)  # validates
    source, nodes = fold(*trace(model))
    levels, shapes = calibrate_nodes(source, nodes, calibration, percentile, per_channel)
    snn = as_module(source, spiking_nodes(source, nodes, levels, shapes, v_init, reset))
    if steps is None:
        return snn
    layers = [("graph", snn)] if isinstance(snn, Graph) else list(snn.named_children())
    return nn.Sequential(OrderedDict([("direct", DirectInput(steps)), *layers]))
