"""A spiking max-pool for converted networks.

``SpikingMaxPool(pool)`` takes the kernel, stride, padding and dilation of an ``nn.MaxPool1d/2d``.
With ``S_t = sum_{tau <= t} x_tau`` the running sum of its input (on spikes: the spike count so
far), it outputs the increment of the pooled running sum,

    ``y_t = maxpool(S_t) - maxpool(S_{t-1})``    (``S_{-1} = 0``),

so that its own running sum is ``maxpool(S_t)``: after ``t`` steps it has passed exactly as much
as the position of the window that has received the most so far. On spikes ``y_t`` is 0 or 1 (a
count grows by at most 1 per step), i.e. it passes the spike of the leading position, and one more
when the lead changes hands to a position that fired while not leading. Its rate
``maxpool(S_T) / T`` is the largest *mean rate so far*, which converges to the largest input
rate with an error of order ``1/T`` (like the IF neurons' rates). It is exact at every step for
constant inputs (the first layer under direct coding). The gating by the leading spike count of
Rueckauer et al. 2017 (section 2.2.3) passes only the current leader's spikes and loses spikes
whenever the leader changes; this increment does not.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..nn.stream import detached_dict

__all__ = ["SpikingMaxPool"]


class SpikingMaxPool(nn.Module):
    """The max-pool of running sums above on ``(T, B, C, L)`` (1d) or ``(T, B, C, H, W)``
    (2d); ``step(x_t)`` carries the running sums; ``reset()`` (or ``spikeforge.reset``)
    starts a new stream."""

    def __init__(self, pool: nn.MaxPool1d | nn.MaxPool2d) -> None:
        super().__init__()
        if not isinstance(pool, (nn.MaxPool1d, nn.MaxPool2d)) or pool.return_indices:
            raise TypeError(f"SpikingMaxPool: pool must be an nn.MaxPool1d/2d without return_indices, got {pool!r}")
        self.dims = 1 if isinstance(pool, nn.MaxPool1d) else 2
        self.kw = {k: getattr(pool, k) for k in ("kernel_size", "stride", "padding", "dilation", "ceil_mode")}
        self.total = None       # running sums of the stream (B, C, ...)
        self.pooled = None      # their max-pool at the last step

    def _pool(self, s: Tensor) -> Tensor:
        return (F.max_pool1d if self.dims == 1 else F.max_pool2d)(s, **self.kw)

    def _check(self, x: Tensor, rank: int, what: str) -> None:
        if not isinstance(x, Tensor) or x.dim() != rank:
            shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SpikingMaxPool{self.dims}d: {what} must be "
                             f"({'T, ' if what == 'x' else ''}B, C, {'L' if self.dims == 1 else 'H, W'}), got {shape}")

    def forward(self, x: Tensor) -> Tensor:
        self._check(x, self.dims + 3, "x")
        pooled = self._pool(x.cumsum(0).flatten(0, 1)).unflatten(0, x.shape[:2])
        return torch.cat([pooled[:1], pooled[1:] - pooled[:-1]])

    def step(self, x: Tensor) -> Tensor:
        self._check(x, self.dims + 2, "x_t")
        self.total = x if self.total is None else self.total + x
        pooled = self._pool(self.total)
        out = pooled if self.pooled is None else pooled - self.pooled
        self.pooled = pooled
        return out

    def reset(self) -> None:
        self.total = self.pooled = None

    def __getstate__(self):
        return detached_dict(self, "total", "pooled")

    def extra_repr(self) -> str:
        return ", ".join(f"{k}={v}" for k, v in self.kw.items())
