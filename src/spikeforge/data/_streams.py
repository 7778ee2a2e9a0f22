"""Checking event streams and cutting them into windows (shared by the event transforms).

A stream is a numpy structured array with fields ``t, x, y, p`` (``spikeforge.data.EVENT_DTYPE``,
or tonic's arrays, whose fields may have other integer types or another order), sorted by ``t``;
``sensor_size`` is ``(W, H, P)``. ``Stream`` is the checked form the transforms compute on.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

__all__ = ["Stream", "check_sensor_size", "as_stream", "time_windows", "count_windows",
           "time_bins", "count_bins"]


class Stream(NamedTuple):
    t: np.ndarray          # int64, microseconds, sorted
    x: np.ndarray          # intp
    y: np.ndarray          # intp
    p: np.ndarray          # intp, 0 .. P-1 (always 0 for a single-polarity sensor)
    size: tuple[int, int, int]

    def flat(self) -> np.ndarray:
        """Index of each event in a (P, H, W) frame, flattened."""
        w, h, _ = self.size
        return (self.p * h + self.y) * w + self.x


def check_sensor_size(sensor_size, name: str = "sensor_size") -> tuple[int, int, int]:
    ok = isinstance(sensor_size, (tuple, list)) and len(sensor_size) == 3 and all(
        isinstance(v, (int, np.integer)) and not isinstance(v, bool) and v > 0 for v in sensor_size)
    if not ok:
        raise ValueError(f"{name} must be (W, H, P), three positive integers (tonic's layout), "
                         f"got {sensor_size!r}")
    return tuple(int(v) for v in sensor_size)


def as_stream(events, sensor_size, name: str = "events") -> Stream:
    """Check ``events`` against ``sensor_size`` and return its fields as plain arrays.

    Events without a ``y`` field (tonic's audio layout ``t, x, p``, e.g. its SHD/SSC) are read as
    ``y = 0`` when the sensor has height 1 (``(700, 1, 1)``): they bin over the channel axis ``x``.
    Polarity: bool and {-1, 1} (as some tonic readers give) map to {0, 1}; with ``P == 1``
    every event goes to channel 0."""
    size = check_sensor_size(sensor_size)
    names = getattr(getattr(events, "dtype", None), "names", None)
    if not isinstance(events, np.ndarray) or names is None:
        raise TypeError(f"{name} must be a numpy structured array with fields t, x, y, p "
                        f"(spikeforge.data.EVENT_DTYPE or tonic's), got {type(events).__name__}")
    audio = "y" not in names and size[1] == 1          # tonic's audio layout (t, x, p): x is the channel
    missing = [f for f in ("txp" if audio else "txyp") if f not in names]
    if missing or events.ndim != 1:
        raise ValueError(f"{name} must be a 1-d structured array with fields t, x, y, p (or t, x, p with "
                         f"sensor_size (W, 1, P)); missing {missing} (has {list(names)}, sensor_size {size})"
                         if missing else f"{name} must be 1-d, got shape {events.shape}")
    t = _integral(events["t"], f"{name}['t']").astype(np.int64, copy=False)
    x = _integral(events["x"], f"{name}['x']").astype(np.intp, copy=False)
    y = np.zeros(len(x), dtype=np.intp) if audio else \
        _integral(events["y"], f"{name}['y']").astype(np.intp, copy=False)
    p = _polarity(events["p"], size[2], name)
    if len(t):
        if t[0] < 0 or t.min() < 0:
            raise ValueError(f"{name}['t'] has negative time stamps (min {t.min()}); times are "
                             f"microseconds from the start of the recording")
        if np.any(t[1:] < t[:-1]):
            raise ValueError(f"{name} must be sorted by t (np.sort({name}, order='t'))")
        for field, v, limit, what in ((f"{name}['x']", x, size[0], "width W"),
                                      (f"{name}['y']", y, size[1], "height H")):
            if v.min() < 0 or v.max() >= limit:
                raise ValueError(f"{field} has values in [{v.min()}, {v.max()}] outside the sensor: "
                                 f"sensor_size {size} has {what} = {limit}")
    return Stream(t, x, y, p, size)


def _integral(v: np.ndarray, name: str) -> np.ndarray:
    if v.dtype.kind in "iub":
        return v
    if v.dtype.kind == "f" and (len(v) == 0 or np.all(np.isfinite(v) & (v == np.round(v)))):
        return v
    raise ValueError(f"{name} must hold integers, got dtype {v.dtype}"
                     + (" with fractional or non-finite values" if v.dtype.kind == "f" else ""))


def _polarity(p: np.ndarray, n_pol: int, name: str) -> np.ndarray:
    p = _integral(p, f"{name}['p']").astype(np.intp)
    if n_pol == 1 or len(p) == 0:
        return np.zeros(len(p), dtype=np.intp)
    if p.min() == -1 and n_pol == 2 and np.all((p == -1) | (p == 1)):
        p = (p > 0).astype(np.intp)
    if p.min() < 0 or p.max() >= n_pol:
        raise ValueError(f"{name}['p'] has values in [{p.min()}, {p.max()}] but sensor_size has "
                         f"P = {n_pol} polarities (0 .. {n_pol - 1})")
    return p


# --- windows: (starts, ends) index ranges into a sorted stream, one per output step -------------

def time_windows(t: np.ndarray, window: int, overlap: int = 0, include_incomplete: bool = False,
                 start_time=None, end_time=None) -> tuple[np.ndarray, np.ndarray]:
    """Windows ``[start + i * stride, start + i * stride + window)``, ``stride = window - overlap``
    (tonic's SliceByTime): as many whole windows as fit between ``start_time`` (default: first
    event) and ``end_time`` (default: last event), plus the overhanging one if
    ``include_incomplete``; at least one."""
    _positive(window, "time_window")
    stride = window - overlap
    if overlap < 0 or stride <= 0:
        raise ValueError(f"overlap must be in [0, time_window), got {overlap} with time_window {window}")
    start = (int(t[0]) if len(t) else 0) if start_time is None else start_time
    end = (int(t[-1]) if len(t) else start) if end_time is None else end_time
    n = (end - start - window) / stride
    n = max(int(math.ceil(n) if include_incomplete else math.floor(n)) + 1, 1)
    lo = start + np.arange(n) * stride
    return np.searchsorted(t, lo), np.searchsorted(t, lo + window)


def count_windows(n_events: int, count: int, overlap: int = 0,
                  include_incomplete: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """Windows of ``count`` consecutive events every ``count - overlap`` events (tonic's
    SliceByEventCount); at least one."""
    _positive(count, "event_count")
    stride = count - overlap
    if overlap < 0 or stride <= 0:
        raise ValueError(f"overlap must be in [0, event_count), got {overlap} with event_count {count}")
    size = min(count, n_events)
    n = (n_events - size) / stride
    n = int(math.ceil(n) if include_incomplete else math.floor(n)) + 1
    lo = np.arange(n) * stride
    return lo, np.minimum(lo + size, n_events)


def time_bins(t: np.ndarray, n_bins: int, overlap: float = 0.0, start_time=None,
              end_time=None) -> tuple[np.ndarray, np.ndarray]:
    """``n_bins`` bins of width ``w = (end - start) / n_bins`` covering ``[start, end]`` (the
    last bin includes ``end``); bin ``i`` is ``[start + i w, start + (i + 1 + overlap) w)``.
    Every event in ``[start, end]`` lands in exactly one bin when ``overlap == 0``."""
    _positive(n_bins, "n_time_bins")
    _fraction(overlap)
    start = (int(t[0]) if len(t) else 0) if start_time is None else int(start_time)
    end = (int(t[-1]) if len(t) else start) if end_time is None else int(end_time)
    span, i = end - start, np.arange(n_bins, dtype=np.int64)
    lo = start - (-i * span // n_bins)                         # start + ceil(i * span / n)
    if overlap:
        hi = start + np.ceil((i + 1 + overlap) * span / n_bins).astype(np.int64)
    else:
        hi = start - (-(i + 1) * span // n_bins)
    starts, ends = np.searchsorted(t, lo), np.searchsorted(t, hi)
    closed = hi > end
    closed[-1] = True                                           # the end instant belongs to the last bin
    ends[closed] = np.searchsorted(t, end, side="right")
    if span == 0:                                               # one instant: everything in bin 0
        ends[0] = ends[-1]
        starts[1:] = ends[1:] = ends[0]
    return starts, ends


def count_bins(n_events: int, n_bins: int, overlap: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """``n_bins`` runs of about ``n_events / n_bins`` consecutive events, each enlarged by
    ``overlap`` (a fraction of a bin); a partition of the stream when ``overlap == 0``."""
    _positive(n_bins, "n_event_bins")
    _fraction(overlap)
    i = np.arange(n_bins, dtype=np.int64)
    lo = -(-i * n_events // n_bins)
    hi = np.minimum(np.ceil((i + 1 + overlap) * n_events / n_bins).astype(np.int64), n_events)
    return lo, hi if overlap else -(-(i + 1) * n_events // n_bins)


def _positive(v, name: str) -> None:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v <= 0:
        raise ValueError(f"{name} must be a positive integer, got {v!r}")


def _fraction(v) -> None:
    if not (isinstance(v, (int, float)) and 0 <= v < 1):
        raise ValueError(f"overlap must be a fraction of a bin in [0, 1) for n_time_bins/n_event_bins, got {v!r}")
