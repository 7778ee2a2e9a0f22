"""Write src/spikeforge/data/digits.npz from scikit-learn's 8x8 digits (run once; needs scikit-learn).

The package itself never imports scikit-learn: it reads the file written here. The file holds
``images`` (1797, 8, 8) uint8 in 0..16, ``labels`` (1797,) uint8 and ``split`` (1797,) uint8
(0 train, 1 val, 2 test): a stratified split, fixed once by ``RandomState(0)``, of 20 % test and
10 % validation per class.

    .venv/bin/pip install scikit-learn && .venv/bin/python tools/make_digits_npz.py
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parents[1] / "src" / "spikeforge" / "data" / "digits.npz"
TEST, VAL = 0.2, 0.1


def stratified_split(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    rng = np.random.RandomState(seed)
    split = np.zeros(len(labels), dtype=np.uint8)
    for c in np.unique(labels):
        idx = rng.permutation(np.flatnonzero(labels == c))
        n_test, n_val = round(TEST * len(idx)), round(VAL * len(idx))
        split[idx[:n_test]] = 2
        split[idx[n_test:n_test + n_val]] = 1
    return split


def main() -> None:
    from sklearn.datasets import load_digits

    d = load_digits()
    images = d.images.astype(np.uint8)
    assert images.max() <= 16 and np.array_equal(images, d.images)
    labels = d.target.astype(np.uint8)
    np.savez_compressed(OUT, images=images, labels=labels, split=stratified_split(labels))
    print(f"wrote {OUT} ({OUT.stat().st_size} bytes, {len(labels)} samples)")


if __name__ == "__main__":
    main()
