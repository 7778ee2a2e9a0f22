"""The Yin-Yang data set (Kriener, Goltz & Petrovici 2021), generated exactly as published.

Each sample is a point ``(x, y)`` in the unit square, inside the big circle of radius
``r_big = 0.5`` centred at ``(0.5, 0.5)``, labelled yin (0), yang (1) or dot (2). The
features are ``(x, y, 1 - x, 1 - y)``. Samples come from ``numpy.random.RandomState``
with one seed per split; for each sample the class is drawn first (``randint(3)``), then
points are drawn uniformly in the square of side ``2 r_big`` until one falls inside the
big circle and in that class (rejection sampling keeps the classes balanced).
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from ._base import Labelled

__all__ = ["YinYang", "yinyang_class", "SPLITS", "CLASSES"]

CLASSES = ("yin", "yang", "dot")


class _Split(NamedTuple):
    size: int
    seed: int


SPLITS = {"train": _Split(5000, 42), "val": _Split(1000, 41), "test": _Split(1000, 40)}
R_SMALL, R_BIG = 0.1, 0.5


def _dist(x: float, y: float, cx: float, cy: float) -> float:
    return math.sqrt((x - cx) ** 2 + (y - cy) ** 2)  # as published (not hypot: same rounding)


def yinyang_class(x: float, y: float, r_small: float = R_SMALL, r_big: float = R_BIG) -> int:
    """The class of a point inside the big circle: 0 yin, 1 yang, 2 dot."""
    d_left = _dist(x, y, 0.5 * r_big, r_big)
    d_right = _dist(x, y, 1.5 * r_big, r_big)
    if d_left < r_small or d_right < r_small:
        return 2
    yang = (d_right <= r_small or r_small < d_left <= 0.5 * r_big
            or (y > r_big and d_right > 0.5 * r_big))
    return int(yang)


def _draw(rng: np.random.RandomState, goal: int, r_small: float, r_big: float) -> tuple[float, float]:
    while True:
        x, y = rng.rand(2) * 2.0 * r_big
        if _dist(x, y, r_big, r_big) > r_big:
            continue
        if yinyang_class(x, y, r_small, r_big) == goal:
            return float(x), float(y)


def generate(size: int, seed: int, r_small: float = R_SMALL, r_big: float = R_BIG) -> tuple[np.ndarray, np.ndarray]:
    """``size`` samples from seed ``seed``: features (size, 4) float64 and labels (size,) int64."""
    rng = np.random.RandomState(seed)
    xy = np.empty((size, 2))
    labels = np.empty(size, dtype=np.int64)
    for n in range(size):
        labels[n] = rng.randint(3)
        xy[n] = _draw(rng, int(labels[n]), r_small, r_big)
    return np.concatenate([xy, 1.0 - xy], axis=1), labels


class YinYang(Labelled):
    """``YinYang(split)`` with split ``"train"`` (5000 samples, seed 42), ``"val"`` (1000,
    seed 41) or ``"test"`` (1000, seed 40). Items are ``(features, label)``: a float32
    tensor ``(x, y, 1-x, 1-y)`` and an int64 class index. ``.data`` and ``.targets``
    hold the whole split as tensors; ``transform`` (optional) is applied to features.
    ``size``: generate this many samples from the split's seed instead (the published split
    is the first samples of any larger one)."""

    classes = CLASSES
    n_features = 4

    def __init__(self, split: str = "train", transform=None, size: int | None = None) -> None:
        if split not in SPLITS:
            raise ValueError(f"YinYang split must be one of {', '.join(SPLITS)}, got {split!r}")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
            raise ValueError(f"YinYang size must be a positive int or None (the published size), got {size!r}")
        self.split, self.transform = split, transform
        features, labels = generate(SPLITS[split].size if size is None else size, SPLITS[split].seed)
        self.data = torch.from_numpy(features).float()
        self.targets = torch.from_numpy(labels)

    @property
    def samples(self):
        return self.data
