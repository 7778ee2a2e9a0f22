"""AEDAT 4.0 files written from the format's description (iniVation's "AEDAT 4.0" file format;
the flatbuffer schemas ``Ioheader`` and ``EventPacket`` of iniVation DV), for the reader tests.

``#!AER-DAT4.0\\r\\n``, uint32 header size, a flatbuffer ``Ioheader`` (only ``description`` set:
compression none, no data table), then packets ``(uint32 stream id, uint32 size, size-prefixed
flatbuffer EventPacket {elements: [Event {t: int64, x: int16, y: int16, on: bool}]} with the
file identifier "EVTS")``. The flatbuffers are laid out by hand: root offset, identifier, vtable,
table, then the string or the vector of 16-byte (8-aligned) structs.
"""
from __future__ import annotations

import struct


def _pad(buf: bytearray, align: int) -> None:
    buf += bytes((-len(buf)) % align)


def ioheader(description: str) -> bytes:
    buf = bytearray(struct.pack("<I", 0) + b"IOHE")       # root offset (set below), identifier
    vtable = len(buf)
    buf += struct.pack("<HHHHH", 10, 8, 0, 0, 4)          # 3 fields; only field 2 (description) at +4
    _pad(buf, 4)
    table = len(buf)
    buf += struct.pack("<iI", table - vtable, 0)
    text, string = description.encode(), len(buf)
    buf += struct.pack("<I", len(text)) + text + b"\0"
    _pad(buf, 4)
    struct.pack_into("<I", buf, 0, table)
    struct.pack_into("<I", buf, table + 4, string - (table + 4))
    return bytes(buf)


def event_packet(events) -> bytes:
    buf = bytearray(struct.pack("<II", 0, 0) + b"EVTS")  # size prefix, root offset, identifier
    vtable = len(buf)
    buf += struct.pack("<HHH", 6, 8, 4)                   # 1 field (elements) at +4
    _pad(buf, 4)
    table = len(buf)
    buf += struct.pack("<iI", table - vtable, 0)
    while (len(buf) + 4) % 8:                             # the structs 8-aligned
        buf += b"\0"
    vector = len(buf)
    buf += struct.pack("<I", len(events))
    for t, x, y, p in events:
        buf += struct.pack("<qhh?3x", t, x, y, bool(p))
    struct.pack_into("<I", buf, 4, table - 4)
    struct.pack_into("<I", buf, table + 4, vector - (table + 4))
    struct.pack_into("<I", buf, 0, len(buf) - 4)
    return bytes(buf)


def description(width: int, height: int) -> str:
    return ('<dv version="2.0"><node name="outInfo" path="/mainloop/Recorder/outInfo/">'
            '<node name="0" path="/mainloop/Recorder/outInfo/0/">'
            '<attr key="compression" type="string">NONE</attr>'
            '<attr key="typeIdentifier" type="string">EVTS</attr>'
            '<node name="info" path="/mainloop/Recorder/outInfo/0/info/">'
            f'<attr key="sizeX" type="int">{width}</attr><attr key="sizeY" type="int">{height}</attr>'
            '<attr key="source" type="string">DAVIS346</attr></node></node></node></dv>')


def aedat4_bytes(events, width: int = 346, height: int = 260, per_packet: int = 3) -> bytes:
    """A file holding ``events`` ``[(t, x, y, p), ...]`` in packets of ``per_packet`` on stream 0."""
    head = ioheader(description(width, height))
    out = bytearray(b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(head)) + head)
    for i in range(0, len(events), per_packet):
        packet = event_packet(events[i:i + per_packet])
        out += struct.pack("<II", 0, len(packet)) + packet
    return bytes(out)
