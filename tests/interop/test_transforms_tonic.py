"""spikeforge's event transforms against tonic's own, on random streams; and ``spikeforge train
--dataset tonic:NMNIST`` on a tiny N-MNIST folder written here (tonic's layout, the N-MNIST byte format).

Where the conventions differ (docs/data.md, "## tonic") the test states the exact relation."""
from __future__ import annotations

import numpy as np
import pytest

tonic = pytest.importorskip("tonic")
import tonic.transforms as TT  # noqa: E402

from spikeforge.data import transforms as T  # noqa: E402

SIZE = (9, 7, 2)


def events(seed: int, n: int = 400, t_max: int = 50_000, dtype=None):
    """Random sorted events in tonic's NMNIST dtype (x, y, t, p as int64) by default."""
    rng = np.random.default_rng(seed)
    dtype = dtype or np.dtype([("x", int), ("y", int), ("t", int), ("p", int)])
    ev = np.zeros(n, dtype=dtype)
    ev["x"], ev["y"] = rng.integers(0, SIZE[0], n), rng.integers(0, SIZE[1], n)
    ev["t"], ev["p"] = np.sort(rng.integers(0, t_max, n)), rng.integers(0, 2, n)
    return ev


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("kw", [dict(time_window=3000), dict(time_window=3000, overlap=1000),
                                dict(time_window=3000, include_incomplete=True),
                                dict(event_count=37), dict(event_count=37, overlap=10),
                                dict(event_count=37, include_incomplete=True)])
def test_frames_by_window_and_count_equal_tonic(seed, kw):
    ev = events(seed)
    ours = T.to_frame(ev, SIZE, **kw)
    theirs = TT.ToFrame(sensor_size=SIZE, **kw)(ev.copy())
    np.testing.assert_array_equal(ours, theirs)


@pytest.mark.parametrize("seed", range(5))
def test_frames_by_n_time_bins_relation(seed):
    """tonic's n_time_bins uses bins of floor(D / n) µs, half-open, so it drops the events from
    t0 + n floor(D / n) on (always the last one); they are spikeforge's time_window = floor(D / n) frames."""
    ev, n = events(seed), 7
    span = int(ev["t"][-1] - ev["t"][0])
    theirs = TT.ToFrame(sensor_size=SIZE, n_time_bins=n)(ev.copy())
    np.testing.assert_array_equal(T.to_frame(ev, SIZE, time_window=span // n)[:n], theirs)
    ours = T.to_frame(ev, SIZE, n_time_bins=n)
    assert ours.sum() == len(ev) and theirs.sum() < len(ev)


@pytest.mark.parametrize("seed", range(5))
def test_voxel_grid_relation(seed):
    """tonic scales time to [0, n] (the last event at n falls outside, the last bin's right
    weights are lost); Zhu et al. (and spikeforge) to [0, n - 1]: tonic(n) == spikeforge(n + 1)[:n]."""
    ev, n = events(seed), 6
    theirs = TT.ToVoxelGrid(sensor_size=SIZE, n_time_bins=n)(ev.copy())
    np.testing.assert_allclose(T.to_voxel_grid(ev, SIZE, n + 1)[:n], theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("seed", range(5))
def test_time_surface_equal_tonic(seed):
    ev = events(seed)
    theirs = TT.ToTimesurface(sensor_size=SIZE, dt=4000, tau=5000)(ev.copy())
    np.testing.assert_allclose(T.to_time_surface(ev, SIZE, 4000, 5000), theirs, rtol=1e-5, atol=1e-30)


@pytest.mark.parametrize("seed", range(5))
def test_denoise_equal_tonic_after_filter_time(seed):
    """tonic's memory starts at filter_time (as if every pixel fired at t = 0): events before
    filter_time pass when a neighbour pixel exists at all. spikeforge starts from 'never fired';
    on streams that start at t >= filter_time the two agree."""
    ev, ft = events(seed, n=600), 2000
    ev["t"] += ft
    np.testing.assert_array_equal(T.denoise(ev, SIZE, ft), TT.Denoise(filter_time=ft)(ev.copy()))


@pytest.mark.parametrize("kw", [dict(spatial_factor=0.5), dict(spatial_factor=(0.25, 0.5), time_factor=0.001),
                                dict(target_size=(4, 3))])
def test_downsample_equal_tonic(kw):
    ev = events(1)
    ours = T.downsample(ev, SIZE, **kw)
    theirs = TT.Downsample(sensor_size=SIZE if "target_size" in kw else None, **kw)(ev.copy())
    for f in "txyp":
        np.testing.assert_array_equal(ours[f], theirs[f])
    size = T.downsampled_size(SIZE, kw.get("spatial_factor", 1.0), kw.get("target_size"))
    assert ours["x"].max() < size[0] and ours["y"].max() < size[1]


def test_tonic_dtypes_and_bool_polarity():
    """tonic's arrays (other field order and types, bool polarity) give what EVENT_DTYPE gives."""
    from spikeforge.data import EVENT_DTYPE

    ev = events(3)
    ours = np.zeros(len(ev), EVENT_DTYPE)
    for f in "txyp":
        ours[f] = ev[f]
    other = events(3, dtype=np.dtype([("x", "<u2"), ("y", "<u2"), ("p", "?"), ("t", "<f8")]))
    want = T.to_frame(ours, SIZE, n_time_bins=5)
    np.testing.assert_array_equal(T.to_frame(ev, SIZE, n_time_bins=5), want)
    np.testing.assert_array_equal(T.to_frame(other, SIZE, n_time_bins=5), want)


# --- spikeforge train --dataset tonic:NMNIST -----------------------------------------------------

def _nmnist_bin(path, ev) -> None:
    """N-MNIST's 40-bit events: x (8 bits), y (8), polarity (1), time stamp (23, µs), big-endian."""
    raw = np.zeros((len(ev), 5), dtype=np.uint8)
    t = ev["t"].astype(np.int64)
    raw[:, 0], raw[:, 1] = ev["x"], ev["y"]
    raw[:, 2] = (ev["p"].astype(np.int64) << 7) | (t >> 16)
    raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(raw.tobytes())


def _fake_nmnist(root, per_class: int = 2):
    """root/NMNIST/{Train,Test}/<digit>/<n>.bin, as tonic extracts the archives; digit d's
    events sit in column 3 d (so the classes are separable)."""
    rng = np.random.default_rng(0)
    for split in ("Train", "Test"):
        for d in range(3):
            for k in range(per_class):
                n = 60
                ev = np.zeros(n, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
                ev["x"], ev["y"] = 3 * d + rng.integers(0, 2, n), rng.integers(0, 34, n)
                ev["t"], ev["p"] = np.sort(rng.integers(0, 300_000, n)), rng.integers(0, 2, n)
                _nmnist_bin(root / "NMNIST" / split / str(d) / f"{k:05d}.bin", ev)
    return ev


def test_fake_nmnist_reads_back_through_tonic(tmp_path):
    from spikeforge.data.tonic_interop import open_tonic

    last = _fake_nmnist(tmp_path)
    ds = open_tonic("NMNIST", tmp_path, train=False)
    assert len(ds) == 6 and ds.sensor_size == (34, 34, 2)
    ev, label = ds[5]
    assert label == 2
    for f in "xytp":
        np.testing.assert_array_equal(ev[f], last[f])
    frames = T.ToFrame(ds.sensor_size, n_time_bins=10)(ev)
    assert frames.shape == (10, 2, 34, 34) and frames.sum() == len(ev)


def test_train_cli_on_tonic_nmnist(tmp_path, capsys):
    from spikeforge.train.cli import main

    _fake_nmnist(tmp_path, per_class=4)
    rc = main(["train", "--dataset", "tonic:NMNIST", "--data-root", str(tmp_path), "--epochs", "2",
               "--steps", "5", "--hidden", "16", "--batch-size", "4", "--no-plots", "--quiet",
               "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "test accuracy" in out
    import json
    cfg = json.loads((tmp_path / "run" / "config.json").read_text())
    assert cfg["dataset"] == "tonic" and cfg["tonic_dataset"] == "NMNIST"


def test_missing_files_give_one_line_and_no_download(tmp_path, capsys, monkeypatch):
    import tonic.download_utils as du
    from spikeforge.train.cli import main

    monkeypatch.setattr(du, "download_url", lambda *a, **k: pytest.fail("tried to download"))
    rc = main(["train", "--dataset", "tonic:NMNIST", "--data-root", str(tmp_path), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "NMNIST/Train" in err and "never downloads" in err and "train.zip" in err


def test_unknown_tonic_dataset_and_missing_root(tmp_path, capsys):
    from spikeforge.train.cli import main

    assert main(["train", "--dataset", "tonic:NoSuchSet", "--data-root", str(tmp_path)]) == 2
    assert "tonic has no dataset 'NoSuchSet'" in capsys.readouterr().err
    assert main(["train", "--dataset", "tonic:NMNIST"]) == 2
    assert "needs --data-root" in capsys.readouterr().err
