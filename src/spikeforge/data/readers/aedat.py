"""AEDAT files from iniVation / jAER cameras: versions 2.0 and 3.1 here, 4.0 through a package.

**AEDAT 2.0** (jAER; DVS128-era recordings such as CIFAR10-DVS): ASCII header lines starting
with ``#``, the first being ``#!AER-DAT2.0``; then 8-byte records, big-endian: a 32-bit address
and a 32-bit timestamp in microseconds. DVS128 address layout (jAER's DVS128 extractor masks):
bit 0 polarity, bits 1..7 x, bits 8..14 y, bit 15 marks a special (external/sync) event, which
is skipped. Coordinates are the sensor's own, not mirrored. (tonic's ``read_dvs_128`` reads
bits 1..7 as y and bits 8..14 as x.)

**AEDAT 3.1** (cAER; DVS128 Gesture): a header ``#!AER-DAT3.1`` ... ``#!END-HEADER``, whose
``#Source <id>: <camera>`` lines name the camera; then packets, little-endian. Each packet has
a 28-byte header (libcaer ``caer_event_packet_header``: int16 eventType, int16 eventSource,
int32 eventSize, eventTSOffset, eventTSOverflow, eventCapacity, eventNumber, eventValid)
followed by ``eventCapacity * eventSize`` bytes. Polarity packets (type 1) hold 8-byte events:
uint32 data (bit 0 valid mark, bit 1 polarity, bits 2..16 y, bits 17..31 x) and an int32
timestamp; the full time is ``eventTSOverflow << 31 | timestamp``. Events of other types are
skipped, events whose valid mark is clear are dropped.

**AEDAT 4.0** (iniVation DV): its framing is checked in ``aedat4.py``, its packets decoded by the
``aedat`` package (or ``expelliarmus``) when one is installed.
"""
from __future__ import annotations

import struct

import numpy as np

from ._common import DatasetError, check_inside, check_sorted, make_events, read_bytes, split_header
from .aedat4 import read_v4

__all__ = ["read_aedat", "CAMERAS"]

# (width, height) of the cameras a ``#Source`` line may name (prefix match)
CAMERAS = {"DVS128": (128, 128), "DAVIS128": (128, 128), "DAVIS240": (240, 180), "DAVIS346": (346, 260),
           "DVXPLORER": (640, 480)}
_PACKET = struct.Struct("<hhiiiiii")
_POLARITY = 1


def read_aedat(path, strict: bool = True) -> tuple[np.ndarray, tuple[int, int, int] | None]:
    """``(events, sensor_size)`` from an AEDAT 2.0, 3.1 or 4.0 file (the version is read from the
    header). With ``strict`` (the default) time stamps that go backwards are a ``DatasetError``."""
    data = read_bytes(path)
    head = data[:16]
    if head.startswith(b"#!AER-DAT2."):
        return _read_v2(path, data, strict)
    if head.startswith(b"#!AER-DAT3.1"):
        return _read_v31(path, data, strict)
    if head.startswith(b"#!AER-DAT4."):
        return read_v4(path, data, strict)
    if head.startswith(b"#!AER-DAT"):
        version = head[9:].split(b"\r")[0].split(b"\n")[0].decode("ascii", "replace")
        raise DatasetError(path, f"AEDAT version {version!r} is not supported (2.x, 3.1 and 4.0 are)")
    raise DatasetError(path, f"not an AEDAT file (starts with {head[:12]!r}, not #!AER-DAT)")


def _read_v2(path, data: bytes, strict: bool):
    _, start = split_header(path, data, b"#!AER-DAT2.")
    body = memoryview(data)[start:]
    if len(body) % 8:
        raise DatasetError(path, f"{len(body)} data bytes is not a whole number of 8-byte events (truncated)")
    rec = np.frombuffer(body, dtype=np.dtype([("a", ">u4"), ("t", ">u4")]))
    addr, t = rec["a"], rec["t"].astype(np.int64)
    high = np.flatnonzero(addr >> 16)
    if len(high):
        raise DatasetError(path, f"event {int(high[0])} has address {int(addr[high[0]]):#x} with bits above 15 "
                                 "set: not a DVS128 recording (only the DVS128 layout is read from AEDAT 2.0)")
    keep = (addr & 0x8000) == 0
    addr, t = addr[keep], t[keep]
    if strict:
        check_sorted(path, t)
    return make_events(t, (addr >> 1) & 0x7F, (addr >> 8) & 0x7F, addr & 1), (128, 128, 2)


def _camera(path, header: list[bytes]) -> dict[int, tuple[int, int] | None]:
    """Sensor (width, height) per source id, from the ``#Source <id>: <name>`` lines."""
    sources = {}
    for line in header:
        if line.startswith(b"#Source ") and b":" in line:
            ident, name = line[8:].split(b":", 1)
            try:
                sid = int(ident)
            except ValueError:
                raise DatasetError(path, f"bad header line {line[:60]!r}") from None
            name = name.strip().upper().decode("ascii", "replace")
            sources[sid] = next((wh for k, wh in CAMERAS.items() if name.startswith(k)), None)
    return sources


def _packets(path, data: bytes, start: int):
    """(source, tsOverflow, offset, number) of every polarity packet, after checking every header."""
    pos, n, found = start, len(data), []
    while pos < n:
        if n - pos < _PACKET.size:
            raise DatasetError(path, f"packet header at byte {pos} cut short ({n - pos} of 28 bytes; truncated)")
        etype, source, size, ts_off, overflow, capacity, number, valid = _PACKET.unpack_from(data, pos)
        pos += _PACKET.size
        if etype < 0 or size <= 0 or capacity < 0 or not 0 <= valid <= number <= capacity or overflow < 0:
            raise DatasetError(path, f"corrupted packet header at byte {pos - _PACKET.size} (type {etype}, "
                                     f"size {size}, capacity {capacity}, number {number}, valid {valid}, "
                                     f"overflow {overflow})")
        if capacity * size > n - pos:
            raise DatasetError(path, f"packet at byte {pos - _PACKET.size} announces {capacity * size} bytes of "
                                     f"events but {n - pos} remain (truncated or corrupted)")
        if etype == _POLARITY:
            if size != 8 or ts_off != 4:
                raise DatasetError(path, f"polarity packet at byte {pos - _PACKET.size} has event size {size} "
                                         f"and timestamp offset {ts_off} (expected 8 and 4)")
            found.append((source, overflow, pos, number))
        pos += capacity * size
    return found


def _read_v31(path, data: bytes, strict: bool):
    header, start = split_header(path, data, b"#!AER-DAT3.1", end_line=b"#!END-HEADER")
    cameras = _camera(path, header)
    packets = _packets(path, data, start)
    sources = {p[0] for p in packets}
    if len(sources) > 1:
        raise DatasetError(path, f"polarity events from {len(sources)} sources {sorted(sources)}; "
                                 "only single-camera recordings are read")
    ev = np.dtype([("d", "<u4"), ("t", "<i4")])
    parts = [(np.frombuffer(data, ev, number, off), overflow) for _, overflow, off, number in packets]
    raw = np.concatenate([p for p, _ in parts]) if parts else np.zeros(0, ev)
    over = np.repeat(np.array([o for _, o in parts], dtype=np.int64), [len(p) for p, _ in parts])
    valid = (raw["d"] & 1) == 1
    raw, over = raw[valid], over[valid]
    neg = np.flatnonzero(raw["t"] < 0)
    if len(neg):
        raise DatasetError(path, f"negative timestamp {int(raw['t'][neg[0]])} in event {int(neg[0])}")
    t = (over << 31) | raw["t"].astype(np.int64)
    if strict:
        check_sorted(path, t)
    d = raw["d"]
    x, y = (d >> 17) & 0x7FFF, (d >> 2) & 0x7FFF
    wh = cameras.get(next(iter(sources))) if sources else next(iter(cameras.values()), None)
    if wh is None:
        wh = (int(x.max()) + 1, int(y.max()) + 1) if len(x) else None
    else:
        check_inside(path, x, y, wh)
    return make_events(t, x, y, (d >> 1) & 1), (None if wh is None else (*wh, 2))
