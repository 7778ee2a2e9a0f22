"""What every event-file reader shares: the error type, the event layout, header and size checks.

Events come back as numpy structured arrays of ``EVENT_DTYPE`` (fields ``t, x, y, p``: tonic's
field names; ``t`` int64 microseconds, ``x``/``y`` int16 pixels or channels, ``p`` int8 0/1).
Sensor sizes follow tonic: ``(width, height, polarities)``.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..events import EVENT_DTYPE

__all__ = ["DatasetError", "EVENT_DTYPE", "make_events", "read_bytes", "check_sorted", "check_inside"]

# A header longer than this is not a header: refuse it instead of scanning a whole file for a newline.
MAX_HEADER_BYTES = 1 << 20


class DatasetError(ValueError):
    """A data file or folder that cannot be read as what it claims to be (missing, truncated,
    corrupted or inconsistent). The message is one line and names the file."""

    def __init__(self, path, problem: str) -> None:
        super().__init__(f"{os.fspath(path)}: {problem}" if path is not None else problem)


def read_bytes(path) -> bytes:
    """The whole file; a missing or unreadable file is a ``DatasetError``."""
    p = Path(path)
    try:
        return p.read_bytes()
    except FileNotFoundError:
        raise DatasetError(p, "no such file") from None
    except IsADirectoryError:
        raise DatasetError(p, "is a directory, not an event file") from None
    except OSError as e:
        raise DatasetError(p, f"cannot be read ({e.strerror or e})") from None


def make_events(t, x, y, p) -> np.ndarray:
    """A structured ``EVENT_DTYPE`` array from four equally long integer arrays (explicit casts:
    callers check the ranges first, so no value is wrapped)."""
    ev = np.empty(len(t), dtype=EVENT_DTYPE)
    ev["t"], ev["x"], ev["y"], ev["p"] = t, x, y, p
    return ev


def check_sorted(path, t: np.ndarray, what: str = "timestamps") -> None:
    """Time stamps must never go backwards (nor be negative)."""
    if len(t) == 0:
        return
    if t[0] < 0:
        raise DatasetError(path, f"negative {what[:-1]} {int(t[0])}")
    back = np.flatnonzero(np.diff(t) < 0)
    if len(back):
        i = int(back[0])
        raise DatasetError(path, f"{what} go backwards at event {i + 1} ({int(t[i])} -> {int(t[i + 1])} us); "
                                 "pass strict=False to read unsorted files as they are")


def check_inside(path, x: np.ndarray, y: np.ndarray, sensor_size) -> None:
    """Every pixel inside the sensor ``(width, height, ...)``."""
    if sensor_size is None or len(x) == 0:
        return
    w, h = sensor_size[0], sensor_size[1]
    bad = np.flatnonzero((x < 0) | (x >= w) | (y < 0) | (y >= h))
    if len(bad):
        i = int(bad[0])
        raise DatasetError(path, f"event {i} at pixel ({int(x[i])}, {int(y[i])}) lies outside the "
                                 f"{w}x{h} sensor")


def split_header(path, data: bytes, magic: bytes, end_line: bytes | None = None) -> tuple[list[bytes], int]:
    """ASCII header lines that start with ``#`` (the first must start with ``magic``), and the offset
    where the binary part begins: after ``end_line`` when given, else after the last ``#`` line."""
    if not data.startswith(magic):
        raise DatasetError(path, f"not a {magic.decode()} file (bad magic {data[:len(magic)]!r})")
    lines, pos = [], 0
    while pos < len(data) and data[pos:pos + 1] == b"#":
        nl = data.find(b"\n", pos, pos + MAX_HEADER_BYTES)
        if nl < 0:
            raise DatasetError(path, "header line without an end (truncated or not a header)")
        line = data[pos:nl].rstrip(b"\r")
        lines.append(line)
        pos = nl + 1
        if pos > MAX_HEADER_BYTES:
            raise DatasetError(path, f"header longer than {MAX_HEADER_BYTES} bytes")
        if end_line is not None and line == end_line:
            return lines, pos
    if end_line is not None:
        raise DatasetError(path, f"header has no {end_line.decode()} line (truncated)")
    return lines, pos
