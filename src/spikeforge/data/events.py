"""Event streams: a simulated DVS recording of the digits by saccades, and event-to-frame binning.

An event is ``(t, x, y, p)``: a time stamp in microseconds, a pixel and a polarity (1 = the
log intensity rose by one contrast step, 0 = it fell). Streams are numpy structured arrays
of ``EVENT_DTYPE`` sorted by time.

``EventDigits`` records each 8x8 digit the way N-MNIST was recorded with a real sensor: the
image sits still while the sensor moves along three straight saccades that trace a
triangle. Each pixel compares the log intensity it sees (bilinear sampling of the moving
image) with the level of its last event and emits one event per contrast step crossed.
The simulation is deterministic (no sensor noise).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._base import Labelled
from .digits import Digits, load_digits_arrays
from .transforms import ToFrame, to_frame

__all__ = ["EVENT_DTYPE", "Saccades", "saccade_events", "to_frames", "EventDigits"]

EVENT_DTYPE = np.dtype([("t", "<i8"), ("x", "<i2"), ("y", "<i2"), ("p", "i1")])


@dataclass(frozen=True)
class Saccades:
    """How the sensor moves and responds. Positions are in pixels relative to the centred
    image; the sensor is the image plus ``margin`` pixels on every side."""

    amplitude: float = 1.0          # half-size of the triangle the sensor traces (pixels)
    step_us: int = 10_000           # time between two samples of the motion (10 ms)
    steps_per_saccade: int = 10     # so each saccade lasts 100 ms, as in N-MNIST
    margin: int = 2
    threshold: float = 0.25         # contrast step (natural log units)
    floor: float = 0.1              # added to the intensity (0..1) before the log

    def sensor_size(self, image_size: int = 8) -> tuple[int, int]:
        side = image_size + 2 * self.margin
        return side, side

    @property
    def duration_us(self) -> int:
        return 3 * self.steps_per_saccade * self.step_us

    def path(self) -> np.ndarray:
        """Sensor offset (dx, dy) at every motion sample, shape (3 * steps + 1, 2)."""
        a = self.amplitude
        corners = np.array([[-a, a], [a, a], [0.0, -a], [-a, a]])
        s = np.arange(self.steps_per_saccade) / self.steps_per_saccade
        legs = [c0 + s[:, None] * (c1 - c0) for c0, c1 in zip(corners[:-1], corners[1:])]
        return np.concatenate(legs + [corners[-1:]])


def _render(images: np.ndarray, dx: float, dy: float, margin: int) -> np.ndarray:
    """Bilinear samples of ``images`` (N, h, w) shifted by (dx, dy) on the padded sensor grid."""
    n, h, w = images.shape
    out = np.zeros((n, h + 2 * margin, w + 2 * margin))
    ix, iy = int(np.floor(dx)), int(np.floor(dy))
    fx, fy = dx - ix, dy - iy
    for oy, wy in ((iy, 1.0 - fy), (iy + 1, fy)):
        for ox, wx in ((ix, 1.0 - fx), (ix + 1, fx)):
            if wx * wy > 0.0:
                y0, x0 = margin + oy, margin + ox
                out[:, y0:y0 + h, x0:x0 + w] += wx * wy * images
    return out


def saccade_events(images: np.ndarray, cfg: Saccades = Saccades()) -> list[np.ndarray]:
    """One event stream per image (N, h, w) with intensities in [0, 1]."""
    path = cfg.path()
    ref = np.log(_render(images, *path[0], cfg.margin) + cfg.floor)
    parts = []
    for k, (dx, dy) in enumerate(path[1:], start=1):
        level = np.log(_render(images, dx, dy, cfg.margin) + cfg.floor)
        steps = np.trunc((level - ref) / cfg.threshold)
        ref += steps * cfg.threshold
        n, y, x = np.nonzero(steps)
        count = np.abs(steps[n, y, x]).astype(np.int64)
        parts.append((np.repeat(n, count), np.repeat(x, count), np.repeat(y, count),
                      np.repeat(steps[n, y, x] > 0, count), k * cfg.step_us))
    return _split_by_sample(parts, len(images))


def _split_by_sample(parts, n_samples: int) -> list[np.ndarray]:
    sample = np.concatenate([p[0] for p in parts])
    ev = np.empty(len(sample), dtype=EVENT_DTYPE)
    ev["x"] = np.concatenate([p[1] for p in parts])
    ev["y"] = np.concatenate([p[2] for p in parts])
    ev["p"] = np.concatenate([p[3] for p in parts])
    ev["t"] = np.concatenate([np.full(len(p[0]), p[4]) for p in parts])
    order = np.argsort(sample, kind="stable")        # parts are already in time order
    ev, sample = ev[order], sample[order]
    bounds = np.searchsorted(sample, np.arange(n_samples + 1))
    return [ev[bounds[i]:bounds[i + 1]] for i in range(n_samples)]


def to_frames(events: np.ndarray, sensor_size: tuple[int, int], n_time_bins: int,
              duration_us: int) -> np.ndarray:
    """Event counts (n_time_bins, 2, H, W) over the recording ``[0, duration_us]`` (the last instant
    in the last bin): ``transforms.to_frame`` with ``start_time=0, end_time=duration_us``."""
    return to_frame(events, (*sensor_size[:2], 2), n_time_bins=n_time_bins, start_time=0, end_time=duration_us)


class EventDigits(Labelled):
    """``EventDigits(split, transform=None, saccades=Saccades())``: the ``Digits`` split
    recorded as event streams. Items are ``(events, label)``, or ``(transform(events),
    label)``; ``frame_transform(n_time_bins)`` gives the matching ``ToFrame``."""

    classes = Digits.classes

    def __init__(self, split: str = "train", transform=None, saccades: Saccades = Saccades()) -> None:
        images, labels = load_digits_arrays(split)
        self.split, self.transform, self.saccades = split, transform, saccades
        self.sensor_size = saccades.sensor_size(images.shape[-1])
        self.duration_us = saccades.duration_us
        self.events = saccade_events(images.astype(np.float64) / 16.0, saccades)
        self.targets = torch.from_numpy(labels)

    def frame_transform(self, n_time_bins: int) -> ToFrame:
        return ToFrame((*self.sensor_size, 2), n_time_bins=n_time_bins, start_time=0, end_time=self.duration_us)

    @property
    def samples(self):
        return self.events

    def _repr_extra(self) -> str:
        return f", sensor_size={self.sensor_size}"
