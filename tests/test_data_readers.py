"""Event-file readers: files written here byte by byte from the formats' public layouts (not by
the readers), read back and compared; round trips and fuzzing with hypothesis; the data set
classes on small folders laid out as the published archives extract."""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from aedat4_files import aedat4_bytes
from spikeforge.data import (CIFAR10DVS, EVENT_DTYPE, NMNIST, SHD, SSC, DatasetError, DVSGesture, NCaltech101,
                             read_aedat, read_nmnist_bin, read_shd)

h5py = pytest.importorskip("h5py")
FUZZ = settings(max_examples=150, deadline=2000, suppress_health_check=[HealthCheck.function_scoped_fixture])


# -- writers, from the specs (see the readers' module docstrings for the sources) --------------
def nmnist_bytes(events) -> bytes:
    """5 bytes per event: x, y, p<<7 | t[22:16], t[15:8], t[7:0]; a y=240 marker per 2**23 wrap."""
    out, wraps = bytearray(), 0
    for t, x, y, p in events:
        while t >> 23 > wraps:
            out += bytes([0, 240, 0, 0, 0])
            wraps += 1
        lo = t & 0x7FFFFF
        out += bytes([x, y, (p << 7) | (lo >> 16), (lo >> 8) & 0xFF, lo & 0xFF])
    return bytes(out)


def aedat2_bytes(events, specials=()) -> bytes:
    """jAER header, then big-endian (address, timestamp); DVS128 address y<<8 | x<<1 | p."""
    out = bytearray(b"#!AER-DAT2.0\r\n# This is a raw AE data file - do not edit\r\n"
                    b"# Data format is int32 address, int32 timestamp (8 bytes total)\r\n")
    for i, (t, x, y, p) in enumerate(events):
        if i in specials:
            out += struct.pack(">II", 0x8000 | 5, t)
        out += struct.pack(">II", (y << 8) | (x << 1) | p, t)
    return bytes(out)


HEADER31 = (b"#!AER-DAT3.1\r\n#Format: RAW\r\n#Source 1: DVS128\r\n"
            b"#Start-Time: 2017-02-10 12:00:00 (TZ+0100)\r\n#!END-HEADER\r\n")


def packet(etype, size, overflow, payload: bytes, number, valid, capacity=None, source=1) -> bytes:
    capacity = number if capacity is None else capacity
    return struct.pack("<hhiiiiii", etype, source, size, 4, overflow, capacity, number, valid) + payload


def aedat31_bytes(events, per_packet=3, invalid_every=0) -> bytes:
    """Polarity packets (data = x<<17 | y<<2 | p<<1 | valid, int32 ts; overflow = t >> 31), with
    a special-event packet and invalid events mixed in, which the reader must skip."""
    out = bytearray(HEADER31)
    out += packet(0, 8, 0, struct.pack("<Ii", 0x7 << 1 | 1, 0), 1, 1)  # a special event (type 0)
    i = 0
    while i < len(events):
        over = events[i][0] >> 31
        chunk = [e for e in events[i:i + per_packet] if e[0] >> 31 == over]
        payload, n_valid = bytearray(), 0
        for k, (t, x, y, p) in enumerate(chunk):
            if invalid_every and k % invalid_every == 0:
                payload += struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1), t & 0x7FFFFFFF)
            payload += struct.pack("<Ii", (x << 17) | (y << 2) | (p << 1) | 1, t & 0x7FFFFFFF)
            n_valid += 1
        out += packet(1, 8, over, bytes(payload), len(payload) // 8, n_valid)
        i += len(chunk)
    return bytes(out)


def as_array(events) -> np.ndarray:
    ev = np.zeros(len(events), EVENT_DTYPE)
    for i, (t, x, y, p) in enumerate(events):
        ev[i] = (t, x, y, p)
    return ev


def write(tmp_path, name, data: bytes):
    path = tmp_path / name
    path.write_bytes(data)
    return path


EV = [(0, 3, 4, 1), (10, 33, 0, 0), (10, 0, 33, 1), (2_000, 17, 9, 0)]


# -- reading what the specs say ----------------------------------------------------------------
def test_nmnist_hand_written_bytes(tmp_path):
    # x=3, y=4, ON at t=0x012345 us: byte 2 = 0x80 | 0x01
    path = write(tmp_path, "a.bin", bytes([3, 4, 0x81, 0x23, 0x45]) + bytes([1, 2, 0x7F, 0xFF, 0xFF]))
    ev, size = read_nmnist_bin(path)
    assert ev.dtype == EVENT_DTYPE and size == (4, 5, 2)
    assert ev.tolist() == [(0x012345, 3, 4, 1), (0x7FFFFF, 1, 2, 0)]


def test_nmnist_overflow_marker(tmp_path):
    path = write(tmp_path, "a.bin", nmnist_bytes([(5, 1, 1, 1), ((1 << 23) + 7, 2, 2, 0), ((2 << 23) + 1, 3, 3, 1)]))
    ev, _ = read_nmnist_bin(path, (34, 34, 2))
    assert ev["t"].tolist() == [5, (1 << 23) + 7, (2 << 23) + 1] and ev["x"].tolist() == [1, 2, 3]


def test_aedat2_dvs128(tmp_path):
    ev, size = read_aedat(write(tmp_path, "a.aedat", aedat2_bytes(EV, specials={2})))
    assert size == (128, 128, 2) and ev.tolist() == as_array(EV).tolist()


def test_aedat31_packets_invalid_and_overflow(tmp_path):
    evs = EV + [((1 << 31) + 3, 127, 127, 1), ((3 << 31) + 9, 64, 1, 0)]
    ev, size = read_aedat(write(tmp_path, "a.aedat", aedat31_bytes(evs, per_packet=2, invalid_every=2)))
    assert size == (128, 128, 2) and ev.tolist() == as_array(evs).tolist()


def test_aedat31_empty_and_capacity_padding(tmp_path):
    # capacity 3, number 1: the two unused slots are padding, not events
    pay = struct.pack("<Ii", (5 << 17) | (6 << 2) | 3, 42) + bytes(16)
    ev, _ = read_aedat(write(tmp_path, "a.aedat", HEADER31 + packet(1, 8, 0, pay, 1, 1, capacity=3)))
    assert ev.tolist() == [(42, 5, 6, 1)]
    ev, _ = read_aedat(write(tmp_path, "b.aedat", HEADER31))
    assert len(ev) == 0 and ev.dtype == EVENT_DTYPE


def write_shd(path, samples, labels, time_dtype=np.float16, keys=None):
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (len(samples),), dtype=h5py.vlen_dtype(time_dtype))
        units = f.create_dataset("spikes/units", (len(samples),), dtype=h5py.vlen_dtype(np.uint16))
        for i, (t, u) in enumerate(samples):
            times[i], units[i] = np.asarray(t, time_dtype), np.asarray(u, np.uint16)
        f["labels"] = np.asarray(labels, np.uint16)
        if keys is not None:
            f["extra/keys"] = np.array(keys, dtype=h5py.string_dtype())
    return path


def test_shd_reads_seconds_as_microseconds(tmp_path):
    samples = [([0.0, 0.1, 0.5], [0, 699, 3]), ([], []), ([0.25], [12])]
    evs, labels, size = read_shd(write_shd(tmp_path / "shd_train.h5", samples, [3, 0, 19]))
    assert size == (700, 1, 1) and labels.tolist() == [3, 0, 19]
    expect = np.floor(np.float16([0.0, 0.1, 0.5]).astype(np.float64) * 1e6).astype(np.int64)
    assert evs[0]["t"].tolist() == expect.tolist() and evs[0]["x"].tolist() == [0, 699, 3]
    assert (evs[0]["y"] == 0).all() and (evs[0]["p"] == 1).all() and len(evs[1]) == 0


# -- round trips ---------------------------------------------------------------------------------
def sorted_events(max_t, max_xy, n=60):
    ev = st.tuples(st.integers(0, max_t), st.integers(0, max_xy), st.integers(0, max_xy), st.integers(0, 1))
    return st.lists(ev, max_size=n).map(lambda e: sorted(e, key=lambda v: v[0]))


@FUZZ
@given(sorted_events(3 << 23, 33))
def test_nmnist_round_trip(tmp_path, events):
    ev, _ = read_nmnist_bin(write(tmp_path, "r.bin", nmnist_bytes(events)), (34, 34, 2))
    assert ev.tolist() == as_array(events).tolist()


@FUZZ
@given(sorted_events((1 << 32) - 1, 127))
def test_aedat2_round_trip(tmp_path, events):
    ev, _ = read_aedat(write(tmp_path, "r.aedat", aedat2_bytes(events, specials={0, 3})))
    assert ev.tolist() == as_array(events).tolist()


@FUZZ
@given(sorted_events(1 << 34, 127), st.integers(1, 5), st.integers(0, 3))
def test_aedat31_round_trip(tmp_path, events, per_packet, invalid_every):
    ev, _ = read_aedat(write(tmp_path, "r.aedat", aedat31_bytes(events, per_packet, invalid_every)))
    assert ev.tolist() == as_array(events).tolist()


# -- bad files: one-line DatasetError, never another exception, never slow -----------------------
def read_any(path):
    return read_nmnist_bin(path) if path.suffix == ".bin" else read_aedat(path)


def assert_clean(path):
    """A valid result or a one-line DatasetError, within a second."""
    t0 = time.perf_counter()
    try:
        ev, _ = read_any(path)
        assert ev.dtype == EVENT_DTYPE
    except DatasetError as e:
        assert "\n" not in str(e) and str(path) in str(e)
    assert time.perf_counter() - t0 < 1.0


VALID = {"n.bin": nmnist_bytes(EV * 3), "v2.aedat": aedat2_bytes(EV * 3, specials={1}),
         "v31.aedat": aedat31_bytes(sorted(EV * 3), per_packet=4, invalid_every=3),
         "v4.aedat4": aedat4_bytes(sorted(EV * 3))}   # framing only here; decoded in tests/interop/test_aedat4.py


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.data())
def test_fuzz_truncated(tmp_path, name, data):
    full = VALID[name]
    assert_clean(write(tmp_path, name, full[:data.draw(st.integers(0, len(full) - 1))]))


@FUZZ
@given(st.sampled_from(sorted(VALID)), st.lists(st.tuples(st.integers(0, 10**6), st.integers(0, 255)), min_size=1,
                                                max_size=8))
def test_fuzz_corrupted(tmp_path, name, flips):
    buf = bytearray(VALID[name])
    for pos, val in flips:
        buf[pos % len(buf)] = val
    assert_clean(write(tmp_path, name, bytes(buf)))


@FUZZ
@given(st.sampled_from([b"", b"#!AER-DAT2.0\r\n", HEADER31, b"#!AER-DAT3.1\r\n"]), st.binary(max_size=300),
       st.sampled_from(["x.bin", "x.aedat"]))
def test_fuzz_random_bytes(tmp_path, head, body, name):
    assert_clean(write(tmp_path, name, head + body))


@pytest.mark.parametrize("data, match", [
    (bytes(7), "not a whole number of 5-byte"),
    (nmnist_bytes([(9, 1, 1, 0), (3, 1, 1, 0)]), "go backwards"),
    (nmnist_bytes([(1, 40, 1, 0)]), "outside the 34x34 sensor"),
])
def test_nmnist_errors(tmp_path, data, match):
    with pytest.raises(DatasetError, match=match):
        read_nmnist_bin(write(tmp_path, "e.bin", data), (34, 34, 2))


def test_nmnist_strict_false_reads_unsorted(tmp_path):
    ev, _ = read_nmnist_bin(write(tmp_path, "e.bin", nmnist_bytes([(9, 1, 1, 0), (3, 1, 1, 0)])), strict=False)
    assert ev["t"].tolist() == [9, 3]


HUGE = packet(1, 8, 0, b"", 2**31 - 1, 0)
NEG_TS = packet(1, 8, 0, struct.pack("<Ii", 1, -5), 1, 1)


@pytest.mark.parametrize("data, match", [
    (b"#!AER-DAT1.0\r\n" + bytes(8), "version '1.0' is not supported"),
    (b"RIFF0000", "not an AEDAT file"),
    (aedat2_bytes(EV) + bytes(3), "not a whole number of 8-byte"),
    (b"#!AER-DAT2.0\r\n" + struct.pack(">II", 1 << 20, 0), "bits above 15"),
    (aedat2_bytes([(5, 1, 1, 1), (4, 1, 1, 1)]), "go backwards"),
    (b"#!AER-DAT3.1\r\n#Format: RAW\r\n" + bytes(40), "no #!END-HEADER"),
    (HEADER31 + HUGE, "announces 17179869176 bytes"),
    (HEADER31 + packet(1, 8, 0, b"", 2, 3), "corrupted packet header"),
    (HEADER31 + packet(1, 16, 0, bytes(16), 1, 1), "event size 16"),
    (HEADER31 + packet(1, 8, 0, b"", 0, 0)[:20], "cut short"),
    (HEADER31 + NEG_TS, "negative timestamp -5"),
    (HEADER31 + packet(1, 8, 0, struct.pack("<Ii", (200 << 17) | 1, 5), 1, 1), "outside the 128x128"),
    (b"#!AER-DAT3.1\r\n#" + b"x" * (1 << 21), "header line without an end"),
])
def test_aedat_errors(tmp_path, data, match):
    t0 = time.perf_counter()
    with pytest.raises(DatasetError, match=match) as e:
        read_aedat(write(tmp_path, "e.aedat", data))
    assert "\n" not in str(e.value) and time.perf_counter() - t0 < 1.0


def test_aedat4_needs_a_package(tmp_path):
    """The message names the packages when neither is installed (tests/interop/test_aedat4.py reads
    the same files through the ``aedat`` package)."""
    try:
        import aedat  # noqa: F401
        pytest.skip("aedat installed")
    except ImportError:
        pass
    with pytest.raises(DatasetError, match="needs the 'aedat' package"):
        read_aedat(write(tmp_path, "e.aedat4", aedat4_bytes(EV)))


@pytest.mark.parametrize("cut, match", [
    (lambda b: b[:16], "ends inside its header size"),
    (lambda b: b[:30], "header of .* bytes but .* remain"),
    (lambda b: b[:-5], "packet 1 .*announces .* bytes but .* remain"),
    (lambda b: b + bytes(3), "packet 2: header cut short after 3 of 8"),
    (lambda b: b + struct.pack("<II", 0, 0xFFFFFFF0), "packet 2 .*announces 4294967280 bytes"),
    (lambda b: b[:14] + struct.pack("<II", 4, 100), "not a flatbuffer Ioheader"),      # root offset past its end
])
def test_aedat4_framing_is_checked_before_any_decoder(tmp_path, cut, match):
    """A truncated file or a bogus size is a DatasetError before a decoder allocates anything."""
    with pytest.raises(DatasetError, match=match) as e:
        read_aedat(write(tmp_path, "e.aedat4", cut(aedat4_bytes(EV))))
    assert "\n" not in str(e.value)


def test_missing_files(tmp_path):
    for fn in (read_nmnist_bin, read_aedat, read_shd):
        with pytest.raises(DatasetError, match="no such file"):
            fn(tmp_path / "nothing")
    with pytest.raises(DatasetError, match="is a directory"):
        read_aedat(tmp_path)


@pytest.mark.parametrize("mutate, match", [
    (lambda f: f.__delitem__("labels"), "no spikes/times"),
    (lambda f: f.__setitem__("labels2", [0]) or f.__delitem__("labels") or f.__setitem__("labels", [0, 1, 2]),
     "must match"),
])
def test_shd_structure_errors(tmp_path, mutate, match):
    path = write_shd(tmp_path / "s.h5", [([0.1], [1]), ([0.2], [2])], [0, 1])
    with h5py.File(path, "a") as f:
        mutate(f)
    with pytest.raises(DatasetError, match=match):
        read_shd(path)


@pytest.mark.parametrize("times, units, match", [
    ([np.nan], [1], "is not a time"), ([-1.0], [1], "is not a time"), ([1e30], [1], "is not a time"),
    ([0.1], [700], "channel 700 outside"), ([0.1, 0.2], [1], "2 times but 1 units"),
])
def test_shd_value_errors(tmp_path, times, units, match):
    path = tmp_path / "s.h5"
    with h5py.File(path, "w") as f:
        f.create_dataset("spikes/times", (1,), dtype=h5py.vlen_dtype(np.float64))[0] = np.asarray(times)
        f.create_dataset("spikes/units", (1,), dtype=h5py.vlen_dtype(np.uint16))[0] = np.asarray(units, np.uint16)
        f["labels"] = [0]
    with pytest.raises(DatasetError, match=match):
        read_shd(path)


@settings(max_examples=60, deadline=3000, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_shd_truncated_and_corrupted(tmp_path, data):
    full = write_shd(tmp_path / "ok.h5", [([0.1, 0.2], [1, 2]), ([0.3], [3])], [0, 1]).read_bytes()
    buf = bytearray(full[:data.draw(st.integers(0, len(full)))])
    for _ in range(data.draw(st.integers(0, 4))):
        if buf:
            buf[data.draw(st.integers(0, len(buf) - 1))] = data.draw(st.integers(0, 255))
    path = write(tmp_path, "bad.h5", bytes(buf))
    try:
        evs, labels, _ = read_shd(path)
        assert all(e.dtype == EVENT_DTYPE for e in evs)
    except DatasetError as e:
        assert "\n" not in str(e)


# -- data set folders ----------------------------------------------------------------------------
def test_nmnist_dataset(tmp_path):
    for split, n in (("Train", 2), ("Test", 1)):
        for d in range(10):
            (tmp_path / "NMNIST" / split / str(d)).mkdir(parents=True)
            for k in range(n):
                write(tmp_path / "NMNIST" / split / str(d), f"{k:05d}.bin", nmnist_bytes([(k, d, d, 1)]))
    train, test = NMNIST(tmp_path), NMNIST(tmp_path / "NMNIST", train=False)
    assert (len(train), len(test), train.sensor_size) == (20, 10, (34, 34, 2))
    ev, label = train[7]
    assert label == 3 and ev.tolist() == [(1, 3, 3, 1)]
    with pytest.raises(IndexError):
        train[20]


def test_a_zero_byte_sample_is_an_error_in_a_data_set_only(tmp_path):
    """The reader reads 0 bytes as the empty recording it encodes (the round trip of no events);
    a data set refuses it, since no released sample is empty (a copy cut short)."""
    for d in range(10):
        write((tmp_path / "NMNIST" / "Train" / str(d)).mkdir(parents=True) or tmp_path / "NMNIST" / "Train" / str(d),
              "00000.bin", b"" if d == 4 else nmnist_bytes([(1, d, d, 1)]))
    empty = tmp_path / "NMNIST" / "Train" / "4" / "00000.bin"
    assert len(read_nmnist_bin(empty)[0]) == 0
    with pytest.raises(DatasetError, match="empty file \\(0 bytes\\)") as e:
        NMNIST(tmp_path)[4]
    assert str(empty) in str(e.value) and "\n" not in str(e.value)
    assert len(NMNIST(tmp_path, strict=False)[4][0]) == 0
    assert NMNIST(tmp_path)[5][0].tolist() == [(1, 5, 5, 1)]


def test_missing_root_is_one_line_with_source(tmp_path):
    cases = [(lambda: NMNIST(tmp_path), "garrickorchard.com/datasets/n-mnist"),
             (lambda: NCaltech101(tmp_path), "n-caltech101"), (lambda: CIFAR10DVS(tmp_path), "figshare"),
             (lambda: DVSGesture(tmp_path), "research.ibm.com"), (lambda: SHD(tmp_path), "zenkelab.org"),
             (lambda: SSC(tmp_path, "valid"), "ssc_valid.h5")]
    for make, text in cases:
        with pytest.raises(DatasetError, match=text) as e:
            make()
        assert "\n" not in str(e.value) and "ROOT/" in str(e.value)


def test_dvsgesture_dataset_cuts_by_labels(tmp_path):
    top = tmp_path / "DVSGesture" / "DvsGesture"
    top.mkdir(parents=True)
    (top / "trials_to_train.txt").write_text("user01_led.aedat\n")
    evs = [(t, t % 128, 5, t % 2) for t in range(0, 100, 7)]
    write(top, "user01_led.aedat", aedat31_bytes(evs))
    (top / "user01_led_labels.csv").write_text("class,startTime_usec,endTime_usec\n3,10,50\n11,50,90\n")
    ds = DVSGesture(tmp_path)
    assert len(ds) == 2 and ds.targets == [2, 10]
    ev, label = ds[0]
    assert label == 2 and ev["t"].tolist() == [t - 10 for t, *_ in evs if 10 <= t < 50]


def test_cifar10dvs_and_ncaltech(tmp_path):
    for c in CIFAR10DVS.classes:
        write((tmp_path / "CIFAR10DVS" / c).mkdir(parents=True) or tmp_path / "CIFAR10DVS" / c,
              "cifar10_0.aedat", aedat2_bytes(EV))
    ds = CIFAR10DVS(tmp_path)
    assert len(ds) == 10 and ds[9][1] == 9 and ds[9][0].tolist() == as_array(EV).tolist()
    for c in ("accordion", "airplanes"):
        (tmp_path / "NCALTECH101" / "Caltech101" / c).mkdir(parents=True)
        write(tmp_path / "NCALTECH101" / "Caltech101" / c, "image_0001.bin", nmnist_bytes([(1, 200, 150, 1)]))
    nc = NCaltech101(tmp_path)
    assert nc.classes == ["accordion", "airplanes"] and nc[1][0].tolist() == [(1, 200, 150, 1)]


@dataclass(frozen=True)
class Count:
    """A transform with a describing repr: events -> per-channel counts."""

    n: int

    def __call__(self, ev):
        Count.calls += 1
        return torch.bincount(torch.from_numpy(ev["x"].astype(np.int64)), minlength=self.n)


def test_shd_dataset_and_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SPIKEFORGE_CACHE", str(tmp_path / "cache"))
    (tmp_path / "SHD").mkdir()
    write_shd(tmp_path / "SHD" / "shd_test.h5", [([0.1], [4]), ([0.2, 0.3], [5, 5])], [1, 0], keys=["null", "eins"])
    Count.calls = 0
    ds = SHD(tmp_path, train=False, transform=Count(700), cache=True)
    assert ds.classes == ["null", "eins"] and len(ds) == 2
    first = [ds[i][0] for i in range(2)]
    again = [SHD(tmp_path, train=False, transform=Count(700), cache=True)[i][0] for i in range(2)]
    assert Count.calls == 2 and all(torch.equal(a, b) for a, b in zip(first, again))
    assert int(first[1][5]) == 2 and len(list((tmp_path / "cache" / "data").glob("*.pt"))) == 2
    SHD(tmp_path, train=False, transform=Count(701), cache=True)[0]  # another transform: a miss
    assert Count.calls == 3
    with pytest.raises(ValueError, match="repr describes it"):
        SHD(tmp_path, train=False, transform=lambda e: e, cache=True)
    loader = torch.utils.data.DataLoader(SHD(tmp_path, train=False, transform=Count(700)), batch_size=2)
    assert next(iter(loader))[0].shape == (2, 700)


def test_cifar10dvs_with_a_missing_class_folder_is_an_error(tmp_path):
    """Nothing is dropped silently: a class folder that is not there is named."""
    from spikeforge.data import CIFAR10DVS, DatasetError
    (tmp_path / "CIFAR10DVS" / "airplane").mkdir(parents=True)
    with pytest.raises(DatasetError, match="class folders .*automobile.* are missing"):
        CIFAR10DVS(tmp_path)
