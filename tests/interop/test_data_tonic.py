"""spikeforge's event-file readers against tonic's on the same files (written here from the specs).

Where the two differ on purpose the test pins the difference (docs/data.md):
- N-MNIST overflow markers: spikeforge adds 2**23 us per marker, tonic 2**13;
- AEDAT 2.0 DVS128 addresses: tonic reads bits 1..7 as y and 8..14 as x, spikeforge the reverse
  (jAER's DVS128 masks);
- AEDAT 3.1: tonic reads every packet as polarity events and ignores the valid mark and the
  packet's timestamp overflow, so the files here hold only valid polarity events.
tonic 1.7.0's ``read_dvs_ibm`` and ``read_dvs_128`` fail on every file (they unpack two values
from ``read_aedat_header_from_file``, which returns three), so the AEDAT tests take tonic's
parsing (``read_aedat_header_from_file`` + ``get_aer_events_from_file``: header, byte order,
packet walk) and apply the bit masks those two functions use.
"""
from __future__ import annotations

import struct

import numpy as np
import pytest

tonic = pytest.importorskip("tonic")
h5py = pytest.importorskip("h5py")

from spikeforge.data import read_aedat, read_nmnist_bin, read_shd  # noqa: E402

rng = np.random.default_rng(7)
N = 500
T = np.sort(rng.integers(0, 300_000, N))
X, Y, P = rng.integers(0, 34, N), rng.integers(0, 34, N), rng.integers(0, 2, N)


def fields(ev, names="txyp"):
    return [np.asarray(ev[k]).astype(np.int64).tolist() for k in names]


def tonic_aer(path):
    """Addresses and timestamps as tonic parses an AEDAT 2/3.1 file."""
    version, start, _ = tonic.io.read_aedat_header_from_file(str(path))
    ev = tonic.io.get_aer_events_from_file(str(path), version, start)
    return ev["address"].astype(np.int64), ev["timeStamp"].astype(np.int64)


def test_nmnist_bin(tmp_path):
    path = tmp_path / "00001.bin"
    path.write_bytes(b"".join(bytes([x, y, (p << 7) | (t >> 16), (t >> 8) & 255, t & 255])
                              for t, x, y, p in zip(T, X, Y, P)))
    ours, _ = read_nmnist_bin(path, (34, 34, 2))
    theirs = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    assert fields(ours) == fields(theirs)


def test_nmnist_overflow_marker_differs_by_design(tmp_path):
    path = tmp_path / "o.bin"
    path.write_bytes(bytes([1, 1, 0, 0, 5]) + bytes([0, 240, 0, 0, 0]) + bytes([2, 2, 0, 0, 7]))
    ours, _ = read_nmnist_bin(path)
    theirs = tonic.io.read_mnist_file(str(path), dtype=tonic.datasets.NMNIST.dtype)
    assert ours["t"].tolist() == [5, 7 + 2**23] and theirs["t"].tolist() == [5, 7 + 2**13]


def test_aedat31_dvs_gesture(tmp_path):
    x, y = rng.integers(0, 128, N), rng.integers(0, 128, N)
    out = bytearray(b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n#!END-HEADER\r\n")
    for k in range(0, N, 64):
        sl = slice(k, k + 64)
        n = len(T[sl])
        out += struct.pack("<hhiiiiii", 1, 1, 8, 4, 0, n, n, n)
        out += b"".join(struct.pack("<Ii", (a << 17) | (b << 2) | (c << 1) | 1, t)
                        for a, b, c, t in zip(x[sl], y[sl], P[sl], T[sl]))
    path = tmp_path / "user01_led.aedat"
    path.write_bytes(bytes(out))
    ours, size = read_aedat(path)
    a, t = tonic_aer(path)  # read_dvs_ibm's masks:
    theirs = [t.tolist(), ((a >> 17) & 0x1FFF).tolist(), ((a >> 2) & 0x1FFF).tolist(), ((a >> 1) & 1).tolist()]
    assert size == (128, 128, 2) and fields(ours) == theirs


def test_aedat2_dvs128_axes_swapped_by_design(tmp_path):
    x, y = rng.integers(0, 128, N), rng.integers(0, 128, N)
    path = tmp_path / "cifar.aedat"
    path.write_bytes(b"#!AER-DAT2.0\r\n# comment\r\n" + b"".join(
        struct.pack(">II", (b << 8) | (a << 1) | c, t) for a, b, c, t in zip(x, y, P, T)))
    ours, _ = read_aedat(path)
    a, t = tonic_aer(path)  # read_dvs_128's masks: x = bits 8..14, y = bits 1..7
    theirs = [t.tolist(), ((a >> 8) & 0x7F).tolist(), ((a >> 1) & 0x7F).tolist(), (a & 1).tolist()]
    assert fields(ours, "tyxp") == theirs


def test_shd_dataset(tmp_path):
    folder = tmp_path / "SHD"
    folder.mkdir()
    samples = [(np.sort(rng.random(n)).astype(np.float16), rng.integers(0, 700, n)) for n in (5, 0, 40)]
    with h5py.File(folder / "shd_test.h5", "w") as f:
        times = f.create_dataset("spikes/times", (3,), dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (3,), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = t, u.astype(np.uint16)
        f["labels"] = np.array([4, 0, 19], np.uint16)
        f["extra/keys"] = np.array([f"k{i}" for i in range(20)], dtype=h5py.string_dtype())
        f["extra/speaker"] = np.zeros(3, np.uint16)
    (folder / "shd_test.h5.zip").write_bytes(b"")  # tonic looks for the archive before using the .h5
    ours, labels, _ = read_shd(folder / "shd_test.h5")
    theirs = tonic.datasets.SHD(str(tmp_path), train=False)
    for i in range(3):
        ev, label = theirs[i]
        assert int(label) == labels[i]
        assert fields(ours[i], "txp") == fields(ev, "txp")
