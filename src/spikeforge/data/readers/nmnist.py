"""N-MNIST and N-Caltech101 ``.bin`` files (Orchard et al. 2015, ATIS sensor).

The published layout (the N-MNIST readme): a file is a list of 40-bit events, 5 bytes each,
most significant first::

    byte 0      x address (pixels)
    byte 1      y address (pixels)
    byte 2      bit 7: polarity (0 = OFF, 1 = ON); bits 6..0: timestamp bits 22..16
    bytes 3, 4  timestamp bits 15..0 (microseconds)

An event whose y address is 240 is not a pixel event but a timestamp-overflow marker: the
23-bit counter wrapped, so every later event is ``2**23`` microseconds later than its field
says. (Orchard's ``eventvision.py``, and tonic's ``read_mnist_file`` adapted from it, add
``2**13`` per marker instead; the released N-MNIST and N-Caltech101 recordings last about
300 ms, well under ``2**23`` us = 8.4 s, and contain no marker, so the two agree on them.)
"""
from __future__ import annotations

import numpy as np

from ._common import DatasetError, check_inside, check_sorted, make_events, read_bytes

__all__ = ["read_nmnist_bin", "OVERFLOW_Y", "OVERFLOW_US"]

OVERFLOW_Y = 240
OVERFLOW_US = 1 << 23


def read_nmnist_bin(path, sensor_size=None, strict: bool = True) -> tuple[np.ndarray, tuple[int, int, int]]:
    """``(events, sensor_size)`` from one ``.bin`` file.

    ``sensor_size`` ``(width, height, 2)``, when given, is checked (an event outside it is a
    ``DatasetError``) and returned; when ``None`` the extent of the events is returned. With
    ``strict`` (the default) time stamps that go backwards are a ``DatasetError``.
    """
    data = read_bytes(path)
    if len(data) % 5:
        raise DatasetError(path, f"{len(data)} bytes is not a whole number of 5-byte events (truncated)")
    raw = np.frombuffer(data, dtype=np.uint8).reshape(-1, 5)
    x, y, b2 = raw[:, 0], raw[:, 1], raw[:, 2]
    t = ((b2.astype(np.int64) & 0x7F) << 16) | (raw[:, 3].astype(np.int64) << 8) | raw[:, 4]
    marker = y == OVERFLOW_Y
    if marker.any():
        t += np.cumsum(marker, dtype=np.int64) * OVERFLOW_US
        keep = ~marker
        x, y, b2, t = x[keep], y[keep], b2[keep], t[keep]
    if strict:
        check_sorted(path, t)
    if sensor_size is None:
        sensor_size = (int(x.max()) + 1 if len(x) else 0, int(y.max()) + 1 if len(y) else 0, 2)
    else:
        check_inside(path, x, y, sensor_size)
    return make_events(t, x, y, b2 >> 7), tuple(sensor_size)
