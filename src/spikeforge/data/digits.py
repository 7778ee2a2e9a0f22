"""scikit-learn's 8x8 handwritten digits, shipped inside the package (``digits.npz``).

1797 grey-level images (values 0..16) of the digits 0-9, with a fixed stratified split:
1259 train, 179 validation, 359 test (see ``tools/make_digits_npz.py``, which wrote the
file once; scikit-learn is not needed at run time).
"""
from __future__ import annotations

from functools import lru_cache
from importlib import resources

import numpy as np
import torch

from ._base import Labelled

__all__ = ["Digits", "load_digits_arrays", "DIGIT_SPLITS"]

DIGIT_SPLITS = {"train": 0, "val": 1, "test": 2}


@lru_cache(maxsize=1)
def _arrays() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    with resources.files("spikeforge.data").joinpath("digits.npz").open("rb") as f:
        z = np.load(f)
        return z["images"], z["labels"], z["split"]


def load_digits_arrays(split: str) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 8, 8) uint8 in 0..16 and labels (N,) of one split."""
    if split not in DIGIT_SPLITS:
        raise ValueError(f"Digits split must be one of {', '.join(DIGIT_SPLITS)}, got {split!r}")
    images, labels, which = _arrays()
    keep = which == DIGIT_SPLITS[split]
    return images[keep], labels[keep].astype(np.int64)


class Digits(Labelled):
    """``Digits(split)`` with split ``"train"``, ``"val"`` or ``"test"``. Items are
    ``(features, label)``: the image as 64 float32 values in [0, 1] (row-major) and an
    int64 class index. ``.images`` is (N, 8, 8); ``.data`` (N, 64) and ``.targets`` (N,)
    hold the whole split; ``transform`` (optional) is applied to the features."""

    classes = tuple(str(d) for d in range(10))
    n_features = 64

    def __init__(self, split: str = "train", transform=None) -> None:
        images, labels = load_digits_arrays(split)
        self.split, self.transform = split, transform
        self.images = torch.from_numpy(images.astype(np.float32) / 16.0)
        self.data = self.images.reshape(len(images), -1)
        self.targets = torch.from_numpy(labels)

    @property
    def samples(self):
        return self.data
