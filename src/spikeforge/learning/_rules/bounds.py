"""What ``Learner.apply`` does to the weights after adding the updates: bounds (hard, soft) and
normalisation of each postsynaptic neuron's incoming weights."""
from __future__ import annotations

import math
from dataclasses import dataclass
from enum import Enum

import torch
from torch import Tensor

__all__ = ["Bound", "Bounds", "Normalise"]


class Bound(Enum):
    """How ``apply`` keeps weights in ``[w_min, w_max]``: ``NONE``; ``HARD``: add the update,
    then clip; ``SOFT`` (multiplicative): a positive update is scaled by ``w_max - w``, a
    negative one by ``w - w_min`` (so the bounds are approached, not crossed, while
    ``|lr * dw| <= 1``; nothing is clipped)."""
    NONE = "none"
    HARD = "hard"
    SOFT = "soft"


@dataclass(frozen=True)
class Bounds:
    kind: Bound = Bound.HARD
    w_min: float = 0.0
    w_max: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.kind, Bound):
            raise TypeError(f"Bounds: kind must be a Bound (Bound.NONE, Bound.HARD, Bound.SOFT), got {self.kind!r}")
        for name in ("w_min", "w_max"):
            v = getattr(self, name)
            if not isinstance(v, (int, float)) or isinstance(v, bool) or not math.isfinite(v):
                raise ValueError(f"Bounds: {name} must be a finite number, got {v!r}")
        if self.w_min >= self.w_max:
            raise ValueError(f"Bounds: w_min must be < w_max, got w_min={self.w_min}, w_max={self.w_max}")

    def update(self, w: Tensor, dw: Tensor) -> None:
        if self.kind is Bound.SOFT:
            dw = dw.clamp(min=0) * (self.w_max - w) + dw.clamp(max=0) * (w - self.w_min)
        w.add_(dw)
        if self.kind is Bound.HARD:
            w.clamp_(self.w_min, self.w_max)


@dataclass(frozen=True)
class Normalise:
    """After each ``apply``: scale each postsynaptic neuron's incoming weights (a row of the
    Linear weight; an output channel's kernel of a Conv2d) so that they sum to ``total``
    (Diehl & Cook 2015). A row summing to 0 cannot be scaled and is left as it is
    (``Learner.apply`` returns how many were)."""
    total: float = 1.0

    def __post_init__(self) -> None:
        if not isinstance(self.total, (int, float)) or isinstance(self.total, bool) or not math.isfinite(self.total) \
                or self.total <= 0:
            raise ValueError(f"Normalise: total must be a positive finite number, got {self.total!r}")

    def __call__(self, w: Tensor) -> int:
        s = w.sum(dim=tuple(range(1, w.dim())), keepdim=True)
        ok = s != 0
        w.mul_(torch.where(ok, self.total / torch.where(ok, s, torch.ones_like(s)), torch.ones_like(s)))
        return int((~ok).sum())
