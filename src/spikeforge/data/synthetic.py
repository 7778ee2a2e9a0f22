"""A generated stand-in for SHD (Spiking Heidelberg Digits): same layout, nothing to download.

``shd_like(n, T, seed=...)`` returns ``(x, labels)``: ``x`` float32 ``(T, n, 700)`` of 0/1
spikes, ``labels`` int64 ``(n,)`` in ``0..19`` — the layout the real files give through
``SHD(root, transform=ToFrame(SHD_SENSOR, n_time_bins=T))``, ``pad_collate`` and
``x.flatten(2)`` (real frames hold spike *counts*; ``x.clamp(max=1)`` makes them binary, which
``SpikeLinear``'s sparse path needs).

Each class is a fixed pattern of a few "formant" ridges: Gaussian bands over the channels whose
centre drifts linearly in time, each active in one time interval (drawn once from
``pattern_seed``, shared by every ``seed``, so a train set and a test set with different seeds
hold the same classes). Class ``2k + 1`` is class ``2k`` reversed in time, so a classifier of
time-averaged spike counts is right on about half of the samples at best: the task needs memory.
Each sample jitters its class's pattern (time offset and stretch, a channel shift, per-ridge gain),
adds a uniform background rate, scales the rates so that the expected fraction of ones is
``density`` (SHD binned at 4-10 ms: about 1-5 %), and draws Bernoulli spikes. numpy's PCG64 makes it deterministic on every platform.
"""
from __future__ import annotations

import numpy as np
import torch

__all__ = ["shd_like", "SHD_CHANNELS", "SHD_CLASSES"]

SHD_CHANNELS = 700
SHD_CLASSES = 20
_RIDGES = 4
_BACKGROUND = 0.15   # share of the expected spikes that is class-independent background


def _patterns(n_classes: int, channels: int, pattern_seed: int) -> dict[str, np.ndarray]:
    """Per class and ridge: centre channel, drift (channels per sequence), width, onset, length."""
    rng = np.random.default_rng([pattern_seed, 0x5D])
    size = ((n_classes + 1) // 2, _RIDGES)
    p = {"centre": rng.uniform(0.05, 0.95, size) * channels,
         "drift": rng.uniform(-0.2, 0.2, size) * channels,
         "width": rng.uniform(0.02, 0.05, size) * channels,
         "onset": rng.uniform(0.0, 0.5, size),
         "length": rng.uniform(0.25, 0.5, size)}
    # class 2k + 1 is class 2k played backwards: the same channels over the whole sample, so
    # only the order in time tells the two apart (time-averaged counts cannot).
    rev = {"centre": p["centre"] + p["drift"] * p["length"], "drift": -p["drift"], "width": p["width"],
           "onset": 1.0 - p["onset"] - p["length"], "length": p["length"]}
    return {k: np.stack([p[k], rev[k]], 1).reshape(-1, _RIDGES)[:n_classes] for k in p}


def _rates(pat: dict, label: int, T: int, channels: int, rng: np.random.Generator) -> np.ndarray:
    """Unnormalised rate map (T, channels) of one jittered sample of class ``label``."""
    u = (np.arange(T) / T - rng.uniform(-0.08, 0.08)) / rng.uniform(0.85, 1.15)   # warped time
    ch = np.arange(channels)[None, :] + rng.normal(0.0, 0.015 * channels)         # shifted channels
    out = np.zeros((T, channels))
    for k in range(_RIDGES):
        on, ln = pat["onset"][label, k], pat["length"][label, k]
        active = np.clip(np.minimum(u - on, on + ln - u) / 0.05, 0.0, 1.0)       # soft-edged interval
        centre = pat["centre"][label, k] + pat["drift"][label, k] * (u - on)
        band = np.exp(-0.5 * ((ch - centre[:, None]) / pat["width"][label, k]) ** 2)
        out += rng.uniform(0.6, 1.4) * active[:, None] * band
    return out


def shd_like(n: int, T: int = 100, *, seed: int = 0, density: float = 0.03, n_classes: int = SHD_CLASSES,
             channels: int = SHD_CHANNELS, pattern_seed: int = 0,
             dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` SHD-shaped samples: ``(x, labels)`` with ``x`` of shape ``(T, n, channels)`` holding
    0/1 spikes (about ``density`` of them ones) and ``labels`` int64 ``(n,)``, balanced over
    ``n_classes`` classes in a seeded random order. Same arguments, same tensors."""
    if n < 1 or T < 1 or channels < 1 or n_classes < 1:
        raise ValueError(f"n, T, channels and n_classes must be >= 1, got {n}, {T}, {channels}, {n_classes}")
    if not 0.0 < density < 1.0:
        raise ValueError(f"density must be in (0, 1), got {density}")
    pat = _patterns(n_classes, channels, pattern_seed)
    rng = np.random.default_rng([seed, 0x5E])
    labels = rng.permutation(np.arange(n) % n_classes)
    x = torch.empty((T, n, channels), dtype=dtype)
    for i, label in enumerate(labels):
        r = _rates(pat, int(label), T, channels, rng)
        r = density * ((1 - _BACKGROUND) * r / max(r.mean(), 1e-12) + _BACKGROUND)
        x[:, i] = torch.from_numpy(rng.random((T, channels)) < np.minimum(r, 1.0))
    return x, torch.from_numpy(labels.astype(np.int64))
