"""AEDAT 4.0 (iniVation DV): the framing checked here, the packets decoded by a package.

Layout (iniVation's "AEDAT 4.0" file-format description, and the ``aedat`` package's decoder):
``#!AER-DAT4.0\\r\\n``, a little-endian uint32 header size, the header (a flatbuffer ``Ioheader``:
``compression`` (field 0, default none), ``file_data_position`` (field 1, int64, default -1: no
data table), ``description`` (field 2, the XML that names each stream, its type identifier such
as ``EVTS`` and the sensor's ``sizeX``/``sizeY``)); then packets, each a uint32 stream id, a uint32
size and that many bytes (a flatbuffer, compressed as the header says), up to the end of the file
or to ``file_data_position``, where the data table begins.

Before a decoder sees the file, the framing is walked here: a size that runs past the end of
the file (truncated, or a corrupted size that would make a decoder allocate gigabytes) is a
``DatasetError``. The packets are then decoded by the ``aedat`` package (as tonic does; the
sensor size is the event stream's ``sizeX``/``sizeY``) or by ``expelliarmus`` (no size in its
output: the largest coordinates + 1).
"""
from __future__ import annotations

import struct
from xml.etree import ElementTree

import numpy as np

from ._common import DatasetError, check_inside, check_sorted, make_events

__all__ = ["read_v4", "check_v4_framing"]

MAGIC = b"#!AER-DAT4.0\r\n"


def _field(header: bytes, root: int, vtable: int, vt_size: int, k: int) -> int:
    """Position of field ``k`` of the table at ``root`` (0: absent)."""
    if 4 + 2 * k + 2 > vt_size:
        return 0
    (offset,) = struct.unpack_from("<H", header, vtable + 4 + 2 * k)
    return root + offset if offset else 0


def _ioheader(path, header: bytes) -> int:
    """Check the flatbuffer ``Ioheader`` (every offset inside it, a known compression, a
    description that is UTF-8 XML) and return its ``file_data_position`` (-1: none). The decoder
    reads this header unverified, so a damaged one must not reach it."""
    try:
        (root,) = struct.unpack_from("<I", header, 0)
        (back,) = struct.unpack_from("<i", header, root)
        vtable = root - back
        vt_size, _ = struct.unpack_from("<HH", header, vtable)
        if vtable < 0 or vt_size < 4 or vtable + vt_size > len(header):
            raise struct.error
        fields = [_field(header, root, vtable, vt_size, k) for k in range(3)]
        compression = struct.unpack_from("<i", header, fields[0])[0] if fields[0] else 0
        position = struct.unpack_from("<q", header, fields[1])[0] if fields[1] else -1
        if not fields[2]:
            raise DatasetError(path, "AEDAT 4.0 header has no description (corrupted)")
        at = fields[2] + struct.unpack_from("<I", header, fields[2])[0]
        (n,) = struct.unpack_from("<I", header, at)
        if at + 4 + n > len(header):
            raise struct.error
        ElementTree.fromstring(header[at + 4:at + 4 + n].decode("utf-8"))
    except (struct.error, UnicodeDecodeError, ElementTree.ParseError):
        raise DatasetError(path, "AEDAT 4.0 header is not a flatbuffer Ioheader with an XML description "
                                 "(corrupted)") from None
    if compression not in range(5):
        raise DatasetError(path, f"AEDAT 4.0 header names compression {compression} (known: 0-4; corrupted)")
    return position


def check_v4_framing(path, data: bytes) -> None:
    """The header size and every packet size fit in the file (see the module docstring)."""
    pos = len(MAGIC)
    if len(data) < pos + 4:
        raise DatasetError(path, "AEDAT 4.0 file ends inside its header size (truncated)")
    (size,) = struct.unpack_from("<I", data, pos)
    pos += 4
    if size > len(data) - pos:
        raise DatasetError(path, f"AEDAT 4.0 header of {size} bytes but {len(data) - pos} remain (truncated)")
    end = _ioheader(path, data[pos:pos + size])
    end = len(data) if end < 0 else end
    if end > len(data):
        raise DatasetError(path, f"AEDAT 4.0 data table at byte {end} beyond the {len(data)}-byte file (truncated)")
    pos, k = pos + size, 0
    while pos < end:
        if end - pos < 8:
            raise DatasetError(path, f"packet {k}: header cut short after {end - pos} of 8 bytes (truncated)")
        stream, n = struct.unpack_from("<II", data, pos)
        if n > end - pos - 8:
            raise DatasetError(path, f"packet {k} (stream {stream}) announces {n} bytes but {end - pos - 8} "
                                     f"remain (truncated or corrupted)")
        pos, k = pos + 8 + n, k + 1


def _decode_aedat(aedat, path):
    """``(raw events, (width, height) or None)`` of the lowest-numbered event stream."""
    decoder = aedat.Decoder(str(path))
    streams = {sid: s for sid, s in decoder.id_to_stream().items() if s["type"] == "events"}
    if not streams:
        raise DatasetError(path, "AEDAT4 file without an event stream")
    sid = min(streams)
    found = [p["events"] for p in decoder if p["stream_id"] == sid and "events" in p]
    wh = (int(streams[sid].get("width", 0)), int(streams[sid].get("height", 0)))
    return (np.concatenate(found) if found else None), (wh if min(wh) > 0 else None)


def read_v4(path, data: bytes, strict: bool = True):
    """``(events, sensor_size)`` of an AEDAT 4.0 file whose bytes are ``data``."""
    check_v4_framing(path, data)
    try:
        import aedat
    except ImportError:
        aedat = None
    try:
        if aedat is not None:
            raw, wh = _decode_aedat(aedat, path)
        else:
            try:
                from expelliarmus import Wizard
            except ImportError:
                raise DatasetError(path, "reading AEDAT 4.0 needs the 'aedat' package (pip install aedat) "
                                         "or 'expelliarmus'") from None
            raw, wh = Wizard(encoding="aedat4").read(str(path)), None
    except DatasetError:
        raise
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as e:  # the decoders' own types, and aedat's Rust panics (a BaseException)
        first = str(e).splitlines()[0] if str(e) else ""
        raise DatasetError(path, f"AEDAT4 decoder failed: {type(e).__name__}: {first}") from None
    if raw is None or len(raw) == 0:
        return make_events([], [], [], []), None if wh is None else (*wh, 2)
    t, x, y = (raw[k].astype(np.int64) for k in "txy")
    if strict:
        check_sorted(path, t)
    if wh is None:
        wh = (int(x.max()) + 1, int(y.max()) + 1)
    check_inside(path, x, y, wh)
    return make_events(t, x, y, raw["p"].astype(np.int8)), (*wh, 2)
