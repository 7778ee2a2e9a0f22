"""The quantization-clip-floor-shift activation (QCFS; Bu et al. 2022, "Optimal ANN-SNN
conversion for high-accuracy and ultra-low-latency spiking neural networks", ICLR) to train an
ANN with, so that its conversion is accurate after few steps.

``QCFS(levels=L, threshold=lambda)``: ``y = lambda * clamp(floor(x * L / lambda + 1/2) / L, 0, 1)``,
``lambda`` trainable (one per layer). The floor passes the gradient straight through (as in Bu et
al.'s code): inside ``(0, lambda)`` the gradient is 1 for ``x``; above ``lambda`` it is 0 for ``x``
and 1 for ``lambda``. ``ann_to_snn`` converts it to a soft-reset IF neuron with threshold
``lambda`` (as weights scaled by ``1/lambda`` and threshold 1) that starts at ``lambda / 2``: with a
constant input, ``T = L`` steps give exactly the QCFS output (Bu et al., Theorem 2).
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

__all__ = ["QCFS", "qcfs"]


def qcfs(x: Tensor, levels: int, threshold: Tensor) -> Tensor:
    """The QCFS activation (see the module docstring); ``threshold`` > 0, a scalar tensor."""
    y = x * levels / threshold + 0.5
    y = y + (torch.floor(y) - y).detach()           # straight-through floor
    return threshold * torch.clamp(y / levels, 0.0, 1.0)


class QCFS(nn.Module):
    """``qcfs`` with a trainable threshold ``lambda`` (initial value ``threshold``)."""

    def __init__(self, levels: int = 8, threshold: float = 8.0) -> None:
        super().__init__()
        if isinstance(levels, bool) or not isinstance(levels, int) or levels < 1:
            raise ValueError(f"QCFS: levels must be an int >= 1, got {levels!r}")
        if isinstance(threshold, bool) or not isinstance(threshold, (int, float)) or not 0 < threshold < math.inf:
            raise ValueError(f"QCFS: threshold must be a finite number > 0, got {threshold!r}")
        self.levels = levels
        self.threshold = nn.Parameter(torch.tensor(float(threshold)))

    def forward(self, x: Tensor) -> Tensor:
        return qcfs(x, self.levels, self.threshold)

    def extra_repr(self) -> str:
        return f"levels={self.levels}, threshold={float(self.threshold):.4g}"
