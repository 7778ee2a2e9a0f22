"""Event -> tensor transforms: hand-computed cases, properties (hypothesis), bad input."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge.data import EVENT_DTYPE
from spikeforge.data import transforms as T

SIZE = (4, 3, 2)


def ev(*rows):
    return np.array(list(rows), dtype=EVENT_DTYPE) if rows else np.zeros(0, EVENT_DTYPE)


@st.composite
def streams(draw, max_n=60):
    n = draw(st.integers(0, max_n))
    out = np.zeros(n, EVENT_DTYPE)
    out["t"] = np.sort(draw(st.lists(st.integers(0, 10_000), min_size=n, max_size=n)))
    out["x"] = draw(st.lists(st.integers(0, SIZE[0] - 1), min_size=n, max_size=n))
    out["y"] = draw(st.lists(st.integers(0, SIZE[1] - 1), min_size=n, max_size=n))
    out["p"] = draw(st.lists(st.integers(0, 1), min_size=n, max_size=n))
    return out


# --- hand-computed cases ------------------------------------------------------------------------

def test_frames_by_time_window_hand_case():
    e = ev((0, 0, 0, 1), (999, 1, 0, 0), (1000, 2, 1, 1), (2500, 3, 2, 1))
    f = T.to_frame(e, SIZE, time_window=1000)           # windows [0,1000) [1000,2000); 2500 overhangs
    assert f.shape == (2, 2, 3, 4) and f.dtype == np.float32
    assert f[0, 1, 0, 0] == 1 and f[0, 0, 0, 1] == 1 and f[1, 1, 1, 2] == 1 and f.sum() == 3
    f = T.to_frame(e, SIZE, time_window=1000, include_incomplete=True)
    assert f.shape[0] == 3 and f[2, 1, 2, 3] == 1 and f.sum() == 4
    f = T.to_frame(e, SIZE, time_window=1000, overlap=500)   # [0,1000) [500,1500) [1000,2000) [1500,2500)
    assert f.reshape(4, -1).sum(1).tolist() == [2, 2, 1, 0]


def test_frames_by_count_and_bins_hand_case():
    e = ev(*[(10 * i, i % 4, 0, i % 2) for i in range(7)])
    assert T.to_frame(e, SIZE, event_count=3).reshape(2, -1).sum(1).tolist() == [3, 3]
    assert T.to_frame(e, SIZE, event_count=3, include_incomplete=True).reshape(3, -1).sum(1).tolist() == [3, 3, 1]
    assert T.to_frame(e, SIZE, event_count=3, overlap=1).reshape(3, -1).sum(1).tolist() == [3, 3, 3]
    assert T.to_frame(e, SIZE, n_event_bins=3).reshape(3, -1).sum(1).tolist() == [3, 2, 2]
    # t = 0..60 in 3 bins of 20 µs: [0,20) [20,40) [40,60]
    assert T.to_frame(e, SIZE, n_time_bins=3).reshape(3, -1).sum(1).tolist() == [2, 2, 3]


def test_binary_frames_mark_pixels_with_events():
    e = ev((0, 1, 1, 1), (5, 1, 1, 1), (6, 1, 1, 1), (7, 2, 0, 0))
    counts = T.to_frame(e, SIZE, n_time_bins=1)
    assert counts[0, 1, 1, 1] == 3 and counts.sum() == 4
    binary = T.ToFrame(SIZE, n_time_bins=1, binary=True)(e)
    assert binary.dtype == torch.float32 and torch.equal(binary, torch.from_numpy(counts).clamp(max=1))
    assert "binary=True" in repr(T.ToFrame(SIZE, n_time_bins=1, binary=True))   # a different cache key


def test_voxel_grid_hand_case():
    e = ev((0, 0, 0, 1), (50, 1, 0, 0), (100, 2, 0, 1))     # scaled times 0, 1.5, 3 on 4 bins
    g = T.to_voxel_grid(e, SIZE, 4)
    assert g.shape == (4, 1, 3, 4)
    assert g[0, 0, 0, 0] == 1 and g[1, 0, 0, 1] == -0.5 and g[2, 0, 0, 1] == -0.5 and g[3, 0, 0, 2] == 1
    assert g.sum() == pytest.approx(1.0)


def test_time_surface_hand_case():
    e = ev((0, 0, 0, 1), (1500, 1, 0, 0))
    s = T.to_time_surface(e, SIZE, dt=1000, tau=1000.0, include_incomplete=True)   # ends at 1000, 2000
    assert s.shape == (2, 2, 3, 4)
    assert s[0, 1, 0, 0] == pytest.approx(np.exp(-1.0)) and s[1, 1, 0, 0] == pytest.approx(np.exp(-2.0))
    assert s[0, 0, 0, 1] == 0 and s[1, 0, 0, 1] == pytest.approx(np.exp(-0.5))
    assert np.count_nonzero(s[0]) == 1


def test_denoise_hand_case():
    e = ev((100, 1, 1, 1), (150, 2, 1, 0), (5000, 0, 0, 1), (9000, 3, 2, 1), (9100, 3, 1, 1), (20000, 3, 0, 0))
    kept = T.denoise(e, SIZE, filter_time=1000)
    # (2,1) has (1,1) 50 µs before; (3,1) has (3,2) 100 µs before; the first of a pair has no earlier neighbour
    assert kept["t"].tolist() == [150, 9100]
    assert kept.dtype == e.dtype


def test_downsample_hand_case():
    e = ev((1999, 3, 2, 1), (3000, 1, 1, 0))
    d = T.downsample(e, SIZE, spatial_factor=0.5, time_factor=0.001)
    assert d["x"].tolist() == [1, 0] and d["y"].tolist() == [1, 0] and d["t"].tolist() == [1, 3]
    assert T.downsampled_size(SIZE, 0.5) == (2, 2, 2)
    assert T.Downsample(SIZE, target_size=(2, 1)).out_size == (2, 1, 2)


def test_audio_events_without_y_bin_over_the_channel_axis():
    """tonic's audio layout (t, x, p; SHD/SSC) with a (W, 1, P) sensor reads as y = 0."""
    audio = np.array([(0, 5, 1), (10, 699, 1), (20, 5, 1)], dtype=[("t", int), ("x", int), ("p", int)])
    full = ev((0, 5, 0, 1), (10, 699, 0, 1), (20, 5, 0, 1))
    for kw in ({"event_count": 2}, {"n_time_bins": 2}):
        f = T.to_frame(audio, (700, 1, 1), **kw)
        assert np.array_equal(f, T.to_frame(full, (700, 1, 1), **kw)) and f.shape[1:] == (1, 1, 700)
    assert f.shape[0] == 2 and f.sum() == 3 and f[:, 0, 0, 5].sum() == 2 and f[:, 0, 0, 699].sum() == 1
    assert T.downsample(audio, (700, 1, 1), spatial_factor=0.5)["x"].tolist() == [2, 349, 2]
    assert len(T.denoise(audio, (700, 1, 1), 100)) == 0          # no neighbour at x +- 1
    with pytest.raises(ValueError, match=r"missing \['y'\].*sensor_size \(4, 3, 2\)"):
        T.to_frame(audio, SIZE, n_time_bins=2)                  # a camera (H = 3) needs y
    with pytest.raises(ValueError, match=r"events\['x'\].*width W = 4"):
        T.to_frame(audio, (4, 1, 1), n_time_bins=2)             # channel 699 of a 4-channel sensor


def test_pad_collate_names_an_event_array_left_unframed():
    frames = torch.zeros(2, 2, 3, 4)
    with pytest.raises(ValueError, match=r"sample 1 is still an event array \(0 events\).*tonic's Compose"):
        T.pad_collate([(frames, 0), (ev(), 1)])


def test_dataclasses_return_tensors_and_collate_pads():
    e = ev((0, 0, 0, 1), (100, 1, 0, 0))
    a, b = T.ToFrame(SIZE, event_count=1)(e), T.ToFrame(SIZE, time_window=1000)(e)
    assert isinstance(a, torch.Tensor) and a.shape == (2, 2, 3, 4) and b.shape == (1, 2, 3, 4)
    x, y = T.pad_collate([(a, 3), (b, 5)])
    assert x.shape == (2, 2, 2, 3, 4) and y.tolist() == [3, 5]
    assert torch.equal(x[:, 0], a) and torch.equal(x[0, 1], b[0]) and x[1, 1].sum() == 0
    assert T.ToVoxelGrid(SIZE, 3)(e).shape == (3, 1, 3, 4)
    assert T.ToTimeSurface(SIZE, 50, 10.0)(e).shape[1:] == (2, 3, 4)
    assert len(T.Denoise(SIZE, 1000)(e)) == 1


def test_legacy_to_frames_is_to_frame():
    from spikeforge.data import to_frames

    e = ev((0, 0, 0, 1), (300, 1, 0, 0), (299, 1, 1, 0))[[0, 2, 1]]
    np.testing.assert_array_equal(to_frames(e, (4, 3), 3, 300),
                                  T.to_frame(e, SIZE, n_time_bins=3, start_time=0, end_time=300))


# --- properties ---------------------------------------------------------------------------------

@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 9))
def test_time_and_event_bins_count_every_event_once(e, n):
    for kw in (dict(n_time_bins=n), dict(n_event_bins=n)):
        f = T.to_frame(e, SIZE, **kw)
        assert f.shape == (n, *SIZE[::-1]) and f.sum() == len(e)
        assert f[:, 1].sum() == (e["p"] == 1).sum()


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 9))
def test_time_bin_boundaries(e, n):
    f = T.to_frame(e, SIZE, n_time_bins=n, start_time=0, end_time=10_000)
    b = np.minimum(e["t"] * n // 10_000, n - 1)            # bin i = [i D / n, (i + 1) D / n), the end in the last
    per_bin = np.bincount(b, minlength=n) if len(e) else np.zeros(n)
    np.testing.assert_array_equal(f.reshape(n, -1).sum(1), per_bin)


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 3000), st.booleans())
def test_time_windows_partition_when_not_overlapping(e, w, incomplete):
    f = T.to_frame(e, SIZE, time_window=w, include_incomplete=incomplete)
    if len(e) == 0:
        assert f.shape[0] == 1 and f.sum() == 0
        return
    inside = e["t"] < e["t"][0] + f.shape[0] * w
    assert f.sum() == inside.sum()     # windows are half-open, as tonic's: with include_incomplete only
    assert f.sum() >= (e["t"] < e["t"][-1]).sum() if incomplete else True   # t_last may fall on an end


@settings(max_examples=60, deadline=None)
@given(streams(), st.integers(1, 9))
def test_voxel_grid_mass_and_shape(e, n):
    g = T.to_voxel_grid(e, SIZE, n)
    assert g.shape == (n, 1, 3, 4)
    assert g.sum() == pytest.approx(float((2 * e["p"].astype(int) - 1).sum()), abs=1e-3)


@settings(max_examples=40, deadline=None)
@given(streams())
def test_time_surface_in_unit_interval_and_denoise_subset(e):
    s = T.to_time_surface(e, SIZE, 700, 300.0)
    assert np.all((s >= 0) & (s <= 1))
    kept = T.denoise(e, SIZE, 500)
    assert len(kept) <= len(e) and np.all(np.isin(kept["t"], e["t"]))


def test_single_event_and_edges():
    one = ev((7, 3, 2, 1))
    for kw in (dict(n_time_bins=4), dict(n_event_bins=4), dict(time_window=10), dict(event_count=5)):
        assert T.to_frame(one, SIZE, **kw)[0, 1, 2, 3] == 1
    assert T.to_voxel_grid(one, SIZE, 3)[0, 0, 2, 3] == 1 and T.to_voxel_grid(one, SIZE, 3).sum() == 1
    edge = ev((0, 0, 0, 0), (1000, 3, 2, 1))                 # at both ends of the window
    assert T.to_frame(edge, SIZE, n_time_bins=2)[1, 1, 2, 3] == 1
    assert T.to_frame(edge, SIZE, time_window=1000).sum() == 1     # [0, 1000): the end is the next window
    for f in (T.to_frame(ev(), SIZE, n_time_bins=3), T.to_voxel_grid(ev(), SIZE, 3),
              T.to_time_surface(ev(), SIZE, 10, 1.0)):
        assert f.sum() == 0 and f.shape[0] >= 1
    assert len(T.denoise(ev(), SIZE, 10)) == 0


# --- bad input ----------------------------------------------------------------------------------

@pytest.mark.parametrize("bad, match", [
    (np.zeros((3, 4)), "events must be a numpy structured array"),
    ([(0, 0, 0, 1)], "events must be a numpy structured array"),
    (np.zeros(2, dtype=[("t", int), ("x", int), ("y", int)]), r"missing \['p'\]"),
    (ev((5, 0, 0, 1), (4, 0, 0, 1)), "sorted by t"),
    (ev((-1, 0, 0, 1)), r"events\['t'\] has negative"),
    (ev((0, 4, 0, 1)), r"events\['x'\].*sensor_size .* width W = 4"),
    (ev((0, 0, 3, 1)), r"events\['y'\].*height H = 3"),
    (ev((0, 0, 0, 2)), r"events\['p'\].*P = 2"),
    (np.array([(0.5, 0, 0, 0)], dtype=[("t", float), ("x", int), ("y", int), ("p", int)]),
     r"events\['t'\] must hold integers"),
])
def test_bad_events(bad, match):
    with pytest.raises((TypeError, ValueError), match=match):
        T.to_frame(bad, SIZE, n_time_bins=2)


@pytest.mark.parametrize("size", [(4, 3), (4, 3, 0), (4.0, 3, 2), None])
def test_bad_sensor_size(size):
    with pytest.raises(ValueError, match="sensor_size must be"):
        T.to_voxel_grid(ev(), size, 2)


def test_bad_options():
    e = ev((0, 0, 0, 1))
    with pytest.raises(ValueError, match="exactly one of"):
        T.to_frame(e, SIZE, n_time_bins=2, event_count=3)
    with pytest.raises(ValueError, match="time_window must be"):
        T.to_frame(e, SIZE, time_window=0)
    with pytest.raises(ValueError, match="overlap must be in"):
        T.to_frame(e, SIZE, time_window=10, overlap=10)
    with pytest.raises(ValueError, match="overlap must be a fraction"):
        T.to_frame(e, SIZE, n_time_bins=2, overlap=1.0)
    with pytest.raises(ValueError, match="binary must be True or False"):
        T.to_frame(e, SIZE, n_time_bins=2, binary="yes")
    with pytest.raises(ValueError, match="tau must be"):
        T.to_time_surface(e, SIZE, 10, 0)
    with pytest.raises(ValueError, match="spatial_factor"):
        T.downsample(e, SIZE, spatial_factor=2)
    with pytest.raises(ValueError, match="samples differ"):
        T.pad_collate([torch.zeros(2, 3), torch.zeros(2, 4)])


def test_tonic_dataset_without_tonic_is_one_line(tmp_path, capsys):
    pytest.importorskip("spikeforge")
    try:
        import tonic  # noqa: F401
        pytest.skip("tonic is installed here (tests/interop covers the tonic path)")
    except ImportError:
        pass
    from spikeforge.train.cli import main

    assert main(["train", "--dataset", "tonic:NMNIST", "--data-root", str(tmp_path), "--no-plots"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "pip install tonic" in err
