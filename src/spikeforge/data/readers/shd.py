"""SHD and SSC, the Heidelberg spiking audio sets (Cramer et al. 2020): HDF5 files.

Layout of ``shd_train.h5`` and the others: ``spikes/times`` and ``spikes/units`` are ragged
arrays (one variable-length row per sample) of spike times in seconds (floating point) and of
channel numbers (0..699, the 700 fibres of the cochlea model); ``labels`` holds one integer
class per sample; ``extra/keys`` the class names (optional here).

Each sample becomes an ``EVENT_DTYPE`` array with ``t`` in microseconds (``floor(seconds * 1e6)``
in double precision, the value tonic's ``SHD`` gives), ``x`` the channel, ``y = 0`` and
``p = 1``: the layout of the camera readers, so one transform serves both. (tonic's own audio
events have the fields ``t, x, p`` only.) The sensor size is ``(700, 1, 1)``.
"""
from __future__ import annotations

import os

import numpy as np

from ._common import DatasetError, make_events

__all__ = ["read_shd", "ShdFile", "SHD_SENSOR"]

SHD_SENSOR = (700, 1, 1)
_MAX_US = float(1 << 62)


class ShdFile:
    """An open SHD/SSC file, read one sample at a time (checks every access)."""

    def __init__(self, path) -> None:
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise DatasetError(path, "no such file")
        try:
            import h5py
        except ImportError:
            raise DatasetError(path, "reading SHD/SSC needs h5py (pip install 'spikeforge[data]')") from None
        try:
            self.file = h5py.File(self.path, "r")
        except Exception as e:  # h5py raises OSError, or others for damaged superblocks
            raise DatasetError(path, f"not a readable HDF5 file ({type(e).__name__})") from None
        try:
            self.times, self.units = self.file["spikes/times"], self.file["spikes/units"]
            self.labels = np.asarray(self.file["labels"][()])
            n, n_t, n_u = len(self.labels) if self.labels.ndim == 1 else -1, len(self.times), len(self.units)
        except Exception as e:
            self.close()
            raise DatasetError(path, f"no spikes/times, spikes/units and labels datasets ({type(e).__name__})") from None
        if not n == n_t == n_u:
            self.close()
            raise DatasetError(path, f"{n_t} time rows, {n_u} unit rows and {n} labels (they must match)")
        if n and (self.labels.dtype.kind not in "iu" or self.labels.min() < 0):
            self.close()
            raise DatasetError(path, "labels are not non-negative integers")

    def __len__(self) -> int:
        return len(self.labels)

    def classes(self) -> list[str]:
        """The class names from ``extra/keys`` when present, else ``'0'``, ``'1'``, ..."""
        try:
            keys = self.file["extra/keys"][()]
            return [k.decode() if isinstance(k, bytes) else str(k) for k in keys]
        except Exception:
            return [str(i) for i in range(int(self.labels.max()) + 1 if len(self.labels) else 0)]

    def sample(self, i: int) -> tuple[np.ndarray, int]:
        """``(events, label)`` of sample ``i``."""
        try:
            sec = np.asarray(self.times[i], dtype=np.float64)
            ch = np.asarray(self.units[i])
        except Exception as e:
            raise DatasetError(self.path, f"sample {i} cannot be read ({type(e).__name__})") from None
        if sec.ndim != 1 or ch.shape != sec.shape:
            raise DatasetError(self.path, f"sample {i} has {sec.size} times but {ch.size} units")
        if ch.dtype.kind not in "iu":
            raise DatasetError(self.path, f"sample {i}: units are {ch.dtype}, not integers")
        us = sec * 1e6
        bad = np.flatnonzero(~(np.isfinite(us) & (us >= 0) & (us < _MAX_US)))
        if len(bad):
            raise DatasetError(self.path, f"sample {i}: spike time {sec[bad[0]]!r} s is not a time")
        out = np.flatnonzero((ch < 0) | (ch >= SHD_SENSOR[0]))
        if len(out):
            raise DatasetError(self.path, f"sample {i}: channel {int(ch[out[0]])} outside 0..{SHD_SENSOR[0] - 1}")
        return make_events(np.floor(us).astype(np.int64), ch, 0, 1), int(self.labels[i])

    def close(self) -> None:
        f, self.file = getattr(self, "file", None), None
        if f is not None:
            f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def read_shd(path, indices=None) -> tuple[list[np.ndarray], np.ndarray, tuple[int, int, int]]:
    """``(events per sample, labels, sensor_size)`` of an SHD/SSC file, or of the samples ``indices``."""
    with ShdFile(path) as f:
        idx = range(len(f)) if indices is None else [int(i) for i in indices]
        pairs = [f.sample(i) for i in idx]
    return [e for e, _ in pairs], np.array([lab for _, lab in pairs], dtype=np.int64), SHD_SENSOR
