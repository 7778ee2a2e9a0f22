"""Event streams to tensors: frames, voxel grids, time surfaces; denoising and downsampling.

Each operation is a pure numpy function (``to_frame``, ``to_voxel_grid``, ``to_time_surface``,
``denoise``, ``downsample``) and a frozen dataclass that calls it (``ToFrame``, ``ToVoxelGrid``,
``ToTimeSurface``, ``Denoise``, ``Downsample``), as in tonic. The functions take a stream
(structured array with fields ``t`` in microseconds, ``x``, ``y``, ``p``, sorted by ``t``: spikeforge's
``EVENT_DTYPE`` or tonic's arrays) and a ``sensor_size`` ``(W, H, P)``.

Layout: the dense representations are **time first**, ``(T, P, H, W)`` (channel = polarity; a
voxel grid has one signed channel). The dataclasses return float32 torch tensors; a batch of
them becomes ``(T, B, P, H, W)`` with ``pad_collate`` (zero padding at the end up to the
longest ``T``), the layout spikeforge's networks take.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ._streams import (Stream, as_stream, check_sensor_size, count_bins, count_windows, time_bins,
                       time_windows)

__all__ = ["to_frame", "to_voxel_grid", "to_time_surface", "denoise", "downsample", "downsampled_size",
           "ToFrame", "ToVoxelGrid", "ToTimeSurface", "Denoise", "Downsample", "pad_collate"]


def _windows(s: Stream, time_window, event_count, n_time_bins, n_event_bins, overlap,
             include_incomplete, start_time, end_time):
    given = [k for k, v in (("time_window", time_window), ("event_count", event_count),
                            ("n_time_bins", n_time_bins), ("n_event_bins", n_event_bins)) if v is not None]
    if len(given) != 1:
        raise ValueError(f"give exactly one of time_window, event_count, n_time_bins, n_event_bins; got {given}")
    if time_window is not None:
        return time_windows(s.t, time_window, overlap, include_incomplete, start_time, end_time)
    if n_time_bins is not None:
        return time_bins(s.t, n_time_bins, overlap, start_time, end_time)
    if event_count is not None:
        return count_windows(len(s.t), event_count, overlap, include_incomplete)
    return count_bins(len(s.t), n_event_bins, overlap)


def to_frame(events: np.ndarray, sensor_size, *, time_window=None, event_count=None, n_time_bins=None,
             n_event_bins=None, overlap=0, include_incomplete: bool = False, start_time=None,
             end_time=None, binary: bool = False) -> np.ndarray:
    """Event counts per pixel and polarity, float32 ``(T, P, H, W)`` (``binary=True``: 1 where the
    count is at least 1, else 0: spikes, as ``SpikeLinear``'s sparse path takes); give exactly one of:

    - ``time_window`` (µs): windows ``[t0 + i (time_window - overlap), ... + time_window)`` from
      ``start_time`` (default the first event) while they end by ``end_time`` (default the last
      event); ``include_incomplete`` adds the overhanging window. ``overlap`` in µs.
    - ``event_count``: ``event_count`` consecutive events per frame; ``overlap`` in events.
    - ``n_time_bins``: ``[start_time, end_time]`` in equal bins (last bin closed), every event counted
      once; ``overlap`` a fraction of a bin each bin is enlarged by.
    - ``n_event_bins``: the events in equal runs, every event counted once; ``overlap`` likewise.
    Every mode gives at least one frame (an empty stream: zeros)."""
    s = as_stream(events, sensor_size)
    starts, ends = _windows(s, time_window, event_count, n_time_bins, n_event_bins, overlap,
                            include_incomplete, start_time, end_time)
    w, h, n_pol = s.size
    lengths = (ends - starts).clip(min=0)
    frame = np.repeat(np.arange(len(starts)), lengths)
    offsets = np.cumsum(lengths) - lengths
    idx = np.arange(int(lengths.sum())) + np.repeat(starts - offsets, lengths)   # events of each window
    cells = n_pol * h * w
    if not isinstance(binary, (bool, np.bool_)):
        raise ValueError(f"binary must be True or False, got {binary!r}")
    counts = np.bincount(frame * cells + s.flat()[idx], minlength=len(starts) * cells)
    if binary:
        counts = np.minimum(counts, 1)
    return counts.astype(np.float32).reshape(len(starts), n_pol, h, w)


def to_voxel_grid(events: np.ndarray, sensor_size, n_time_bins: int) -> np.ndarray:
    """Voxel grid of Zhu et al. (2019), float32 ``(n_time_bins, 1, H, W)``: time is scaled so the
    first event is at bin 0 and the last at bin ``n_time_bins - 1``; each event adds its polarity
    (+1 for p = 1, -1 for p = 0; +1 on a single-polarity sensor) to its two nearest bins with
    weights linear in the distance. The grid's sum is the sum of the polarities."""
    s = as_stream(events, sensor_size)
    if isinstance(n_time_bins, bool) or not isinstance(n_time_bins, (int, np.integer)) or n_time_bins < 1:
        raise ValueError(f"n_time_bins must be a positive integer, got {n_time_bins!r}")
    w, h, n_pol = s.size
    grid = np.zeros((n_time_bins + 1) * h * w)            # one spare bin takes the zero weights at the end
    if len(s.t):
        span = int(s.t[-1] - s.t[0])
        ts = (n_time_bins - 1) * (s.t - s.t[0]) / span if span else np.zeros(len(s.t))
        left = ts.astype(np.int64)
        frac = ts - left
        sign = np.where(s.p == 1, 1.0, -1.0) if n_pol == 2 else np.ones(len(s.t))
        pix = s.y * w + s.x
        grid += np.bincount(left * h * w + pix, sign * (1.0 - frac), minlength=len(grid))
        grid += np.bincount((left + 1) * h * w + pix, sign * frac, minlength=len(grid))
    return grid[:n_time_bins * h * w].astype(np.float32).reshape(n_time_bins, 1, h, w)


def to_time_surface(events: np.ndarray, sensor_size, dt: int, tau: float, overlap: int = 0,
                    include_incomplete: bool = False) -> np.ndarray:
    """Time surfaces (tonic's ToTimesurface), float32 ``(T, P, H, W)``: windows as ``to_frame``'s
    ``time_window=dt``; at the end ``e`` of window ``i`` each pixel and polarity holds
    ``exp(-(e - t_last) / tau)`` of its latest event so far (0 where none yet)."""
    s = as_stream(events, sensor_size)
    if not (isinstance(tau, (int, float)) and tau > 0):
        raise ValueError(f"tau must be a positive number of microseconds, got {tau!r}")
    starts, ends = time_windows(s.t, dt, overlap, include_incomplete)
    w, h, n_pol = s.size
    flat, t0 = s.flat(), (int(s.t[0]) if len(s.t) else 0)
    last = np.full(n_pol * h * w, -np.inf)
    out = np.empty((len(starts), n_pol * h * w), dtype=np.float32)
    done = 0
    for i, end in enumerate(ends):                          # one step per window, vectorised inside
        np.maximum.at(last, flat[done:end], s.t[done:end].astype(np.float64))
        done = max(done, int(end))
        out[i] = np.exp((last - (t0 + i * (dt - overlap) + dt)) / tau)
    return out.reshape(len(starts), n_pol, h, w)


def denoise(events: np.ndarray, sensor_size, filter_time: int) -> np.ndarray:
    """The events that have an earlier event (in stream order, any polarity) at one of the four
    adjacent pixels less than ``filter_time`` µs before them (tonic's Denoise); same dtype."""
    s = as_stream(events, sensor_size)
    if isinstance(filter_time, bool) or not isinstance(filter_time, (int, float, np.number)) or filter_time <= 0:
        raise ValueError(f"filter_time must be a positive number of microseconds, got {filter_time!r}")
    n, (w, h, _) = len(s.t), s.size
    pix = s.y * w + s.x
    order = np.argsort(pix, kind="stable")
    keys = pix[order].astype(np.int64) * n + order          # sorted by (pixel, position in stream)
    keep = np.zeros(n, dtype=bool)
    idx = np.arange(n)
    for dx, dy in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        nx, ny = s.x + dx, s.y + dy
        inside = (nx >= 0) & (nx < w) & (ny >= 0) & (ny < h)
        target = (ny * w + nx).astype(np.int64)
        pos = np.searchsorted(keys, target * n + idx) - 1   # latest earlier event at that pixel
        found = inside & (pos >= 0)
        prev = keys[pos.clip(min=0)]
        found &= prev // max(n, 1) == target
        keep |= found & (s.t - s.t[prev % max(n, 1)] < filter_time)
    return events[keep]


def downsampled_size(sensor_size, spatial_factor=1.0, target_size=None) -> tuple[int, int, int]:
    """The sensor size after ``downsample`` with the same arguments."""
    w, h, n_pol = check_sensor_size(sensor_size)
    fx, fy = _factors(sensor_size, spatial_factor, target_size)
    return max(int(np.ceil(w * fx - 1e-9)), 1), max(int(np.ceil(h * fy - 1e-9)), 1), n_pol


def downsample(events: np.ndarray, sensor_size, spatial_factor=1.0, time_factor=1.0,
               target_size=None) -> np.ndarray:
    """Pixel coordinates times ``spatial_factor`` (one number or ``(fx, fy)``; or the factors that
    map ``sensor_size`` onto ``target_size`` ``(W', H')``) and times times ``time_factor``, each
    rounded down (tonic's Downsample). No event is dropped; the new size is ``downsampled_size``."""
    s = as_stream(events, sensor_size)
    fx, fy = _factors(sensor_size, spatial_factor, target_size)
    if not (isinstance(time_factor, (int, float)) and time_factor > 0):
        raise ValueError(f"time_factor must be a positive number, got {time_factor!r}")
    out = events.copy()
    out["x"] = np.floor(s.x * fx)
    if "y" in events.dtype.names:                       # absent in tonic's audio layout (t, x, p)
        out["y"] = np.floor(s.y * fy)
    out["t"] = np.floor(s.t * time_factor)
    return out


def _factors(sensor_size, spatial_factor, target_size) -> tuple[float, float]:
    if target_size is not None:
        w, h, _ = check_sensor_size(sensor_size)
        if not (isinstance(target_size, (tuple, list)) and len(target_size) == 2
                and all(isinstance(v, int) and v > 0 for v in target_size)):
            raise ValueError(f"target_size must be (W, H), two positive integers, got {target_size!r}")
        return target_size[0] / w, target_size[1] / h
    f = spatial_factor if isinstance(spatial_factor, (tuple, list)) else (spatial_factor, spatial_factor)
    if len(f) != 2 or not all(isinstance(v, (int, float)) and 0 < v <= 1 for v in f):
        raise ValueError(f"spatial_factor must be a number or (fx, fy) in (0, 1], got {spatial_factor!r}")
    return float(f[0]), float(f[1])


# --- thin callables ----------------------------------------------------------------------------

@dataclass(frozen=True)
class ToFrame:
    """``to_frame`` as a transform: events -> float32 tensor ``(T, P, H, W)`` (counts, or 0/1 with
    ``binary=True``)."""

    sensor_size: tuple[int, int, int]
    time_window: int | None = None
    event_count: int | None = None
    n_time_bins: int | None = None
    n_event_bins: int | None = None
    overlap: float = 0
    include_incomplete: bool = False
    start_time: int | None = None
    end_time: int | None = None
    binary: bool = False

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_frame(
            events, self.sensor_size, time_window=self.time_window, event_count=self.event_count,
            n_time_bins=self.n_time_bins, n_event_bins=self.n_event_bins, overlap=self.overlap,
            include_incomplete=self.include_incomplete, start_time=self.start_time, end_time=self.end_time,
            binary=self.binary))


@dataclass(frozen=True)
class ToVoxelGrid:
    """``to_voxel_grid`` as a transform: events -> float32 tensor ``(n_time_bins, 1, H, W)``."""

    sensor_size: tuple[int, int, int]
    n_time_bins: int

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_voxel_grid(events, self.sensor_size, self.n_time_bins))


@dataclass(frozen=True)
class ToTimeSurface:
    """``to_time_surface`` as a transform: events -> float32 tensor ``(T, P, H, W)``."""

    sensor_size: tuple[int, int, int]
    dt: int
    tau: float
    overlap: int = 0
    include_incomplete: bool = False

    def __call__(self, events: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(to_time_surface(events, self.sensor_size, self.dt, self.tau, self.overlap,
                                                self.include_incomplete))


@dataclass(frozen=True)
class Denoise:
    """``denoise`` as a transform: events -> events."""

    sensor_size: tuple[int, int, int]
    filter_time: int = 10_000

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return denoise(events, self.sensor_size, self.filter_time)


@dataclass(frozen=True)
class Downsample:
    """``downsample`` as a transform: events -> events on a sensor of ``self.out_size``."""

    sensor_size: tuple[int, int, int]
    spatial_factor: float | tuple[float, float] = 1.0
    time_factor: float = 1.0
    target_size: tuple[int, int] | None = None

    @property
    def out_size(self) -> tuple[int, int, int]:
        return downsampled_size(self.sensor_size, self.spatial_factor, self.target_size)

    def __call__(self, events: np.ndarray) -> np.ndarray:
        return downsample(events, self.sensor_size, self.spatial_factor, self.time_factor, self.target_size)


def pad_collate(batch):
    """Collate ``[(tensor (T_i, ...), label), ...]`` (or bare tensors) into ``(T, B, ...)`` zero-padded
    at the end to the longest ``T_i`` (and a label tensor): ``DataLoader(..., collate_fn=pad_collate)``."""
    labelled = isinstance(batch[0], (tuple, list))
    for i, b in enumerate(batch):
        x = b[0] if labelled else b
        if getattr(getattr(x, "dtype", None), "names", None):
            raise ValueError(f"pad_collate: sample {i} is still an event array ({len(x)} events), not a tensor: "
                             f"no frame transform ran on it (tonic's Compose returns a stream that a transform "
                             f"left empty as it is, skipping the rest)")
    xs = [torch.as_tensor(b[0] if labelled else b) for b in batch]
    if any(x.shape[1:] != xs[0].shape[1:] for x in xs):
        raise ValueError(f"pad_collate: samples differ beyond the time axis: {sorted({tuple(x.shape[1:]) for x in xs})}")
    out = xs[0].new_zeros((max(x.shape[0] for x in xs), len(xs), *xs[0].shape[1:]))
    for i, x in enumerate(xs):
        out[:x.shape[0], i] = x
    return (out, torch.as_tensor([b[1] for b in batch])) if labelled else out
