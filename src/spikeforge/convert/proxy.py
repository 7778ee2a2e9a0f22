"""ANN-proxy training: the loss sees the converted SNN's output, the gradient is the ANN's.

``ProxyModel(ann, steps)`` wraps a ReLU/QCFS network. Its forward on ``(B, ...)`` converts the
ANN's current weights (``ann_to_snn``, calibrated on the batch itself, or on ``calibration``),
runs the SNN for ``steps`` steps of direct input and returns

    ``out = ann(x) + (snn(x).mean(0) - ann(x)).detach()``

so the value is the SNN's (its integrated readout divided by ``T``) and the gradient flows
through the ANN, whose weights the SNN shares after balancing (a straight-through estimator
over the whole network; the "ANN proxy" of Kundu et al. 2021, "Spike-thrift", and the tandem
learning of Wu et al. 2021, "Progressive tandem learning for pattern recognition with deep
spiking neural networks", in its simplest form). Training with it teaches the ANN the errors the
conversion makes at that ``T`` (too few steps, thresholds), so the converted model is more
accurate there. The SNN is converted from the ANN as it is in eval mode (BatchNorm folded with
its running statistics, Dropout off); the ANN half of the output follows ``ann.training``.
``snn(x)`` gives the converted model of the current weights, for evaluation.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import encoding

__all__ = ["ProxyModel"]


class ProxyModel(nn.Module):
    """``forward(x)``: the SNN's value with the ANN's gradient (see the module docstring);
    ``ann`` is the wrapped network (its parameters are this module's)."""

    def __init__(self, ann: nn.Module, steps: int, *, calibration=None, percentile: float = 99.9,
                 per_channel: bool = False, v_init: float | None = None) -> None:
        super().__init__()
        if not isinstance(ann, nn.Module):
            raise TypeError(f"ProxyModel: ann must be a torch.nn.Module, got {type(ann).__name__}")
        if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
            raise ValueError(f"ProxyModel: steps must be an int >= 1, got {steps!r}")
        from . import _check

        _check(percentile, per_channel, v_init)     # refused now, not at the first forward
        self.ann, self.steps, self.calibration = ann, steps, calibration
        self.options = {"percentile": percentile, "per_channel": per_channel, "v_init": v_init}

    def snn(self, calibration: Tensor) -> nn.Module:
        """The ANN's current weights converted (calibrated on ``self.calibration`` if given)."""
        from . import ann_to_snn

        training = self.ann.training
        try:
            with torch.no_grad():
                return ann_to_snn(self.ann, self.calibration if self.calibration is not None else calibration,
                                  **self.options)
        finally:
            self.ann.train(training)

    def forward(self, x: Tensor) -> Tensor:
        ann_out = self.ann(x)
        with torch.no_grad():
            snn_out = self.snn(x)(encoding.direct(x, self.steps)).mean(0)
        return ann_out + (snn_out - ann_out).detach()
