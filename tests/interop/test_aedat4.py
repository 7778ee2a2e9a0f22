"""AEDAT 4.0 through the ``aedat`` package: files written from the format's description
(tests/aedat4_files.py) read back exactly, the sensor size from the stream's sizeX/sizeY, time
order checked, and truncated or corrupted files only ever a one-line ``DatasetError``."""
from __future__ import annotations

import struct
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

aedat = pytest.importorskip("aedat")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from aedat4_files import aedat4_bytes  # noqa: E402
from spikeforge.data import CIFAR10DVS, EVENT_DTYPE, DatasetError, read_aedat  # noqa: E402

rng = np.random.default_rng(4)
N = 200
EVENTS = list(zip(np.sort(rng.integers(0, 10**6, N)).tolist(), rng.integers(0, 346, N).tolist(),
                  rng.integers(0, 260, N).tolist(), rng.integers(0, 2, N).tolist()))
FUZZ = settings(max_examples=100, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


def _write(tmp_path, data: bytes, name: str = "r.aedat4") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_events_and_sensor_size_read_back(tmp_path):
    ev, size = read_aedat(_write(tmp_path, aedat4_bytes(EVENTS, per_packet=64)))
    assert ev.dtype == EVENT_DTYPE and size == (346, 260, 2)
    assert [tuple(int(v) for v in e) for e in ev] == EVENTS
    ev, size = read_aedat(_write(tmp_path, aedat4_bytes([(5, 1, 2, 1)], width=640, height=480)))
    assert size == (640, 480, 2) and ev.tolist() == [(5, 1, 2, 1)]     # the header's size, not max + 1
    ev, size = read_aedat(_write(tmp_path, aedat4_bytes([])))
    assert len(ev) == 0 and size == (346, 260, 2)


def test_time_order_and_pixels_are_checked(tmp_path):
    backwards = _write(tmp_path, aedat4_bytes([(9, 1, 1, 0), (3, 1, 1, 1)]))
    with pytest.raises(DatasetError, match="go backwards at event 1"):
        read_aedat(backwards)
    assert read_aedat(backwards, strict=False)[0]["t"].tolist() == [9, 3]
    with pytest.raises(DatasetError, match=r"pixel \(400, 1\) lies outside the 346x260 sensor"):
        read_aedat(_write(tmp_path, aedat4_bytes([(1, 400, 1, 0)])))


def test_cifar10dvs_reads_aedat4_files(tmp_path):
    for c in CIFAR10DVS.classes:
        _write((tmp_path / "CIFAR10DVS" / c).mkdir(parents=True) or tmp_path / "CIFAR10DVS" / c,
               aedat4_bytes([(1, 3, 4, 1), (2, 127, 0, 0)], width=128, height=128), "s.aedat4")
    ds = CIFAR10DVS(tmp_path)
    assert len(ds) == 10 and ds[3][1] == 3 and ds[3][0].tolist() == [(1, 3, 4, 1), (2, 127, 0, 0)]


def _clean(path) -> None:
    """A valid result or a one-line DatasetError naming the file, within a second."""
    t0 = time.perf_counter()
    try:
        ev, _ = read_aedat(path)
        assert ev.dtype == EVENT_DTYPE
    except DatasetError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    assert time.perf_counter() - t0 < 1.0


VALID = aedat4_bytes(EVENTS[:20], per_packet=6)


@FUZZ
@given(st.integers(0, len(VALID) - 1))
def test_fuzz_truncated(tmp_path, n):
    _clean(_write(tmp_path, VALID[:n]))


@FUZZ
@given(st.lists(st.tuples(st.integers(0, len(VALID) - 1), st.integers(0, 255)), min_size=1, max_size=8))
def test_fuzz_corrupted(tmp_path, flips):
    buf = bytearray(VALID)
    for pos, val in flips:
        buf[pos] = val
    _clean(_write(tmp_path, bytes(buf)))


@FUZZ
@given(st.binary(max_size=300))
def test_fuzz_random_body(tmp_path, body):
    _clean(_write(tmp_path, b"#!AER-DAT4.0\r\n" + struct.pack("<I", len(body)) + body))


def test_a_decoder_panic_is_a_dataset_error(tmp_path, monkeypatch):
    """aedat's Rust panics arrive as pyo3's PanicException, a BaseException: caught and named too."""
    panic = type("PanicException", (BaseException,), {})

    def decoder(path):
        raise panic("index out of bounds")

    monkeypatch.setattr(aedat, "Decoder", decoder)
    with pytest.raises(DatasetError, match="AEDAT4 decoder failed: PanicException: index out of bounds"):
        read_aedat(_write(tmp_path, VALID))
