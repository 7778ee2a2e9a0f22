"""Embedded data sets: the published Yin-Yang definition, the digits file, simulated events."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from spikeforge.data import EVENT_DTYPE, Digits, EventDigits, Saccades, ToFrame, YinYang, saccade_events, to_frames
from spikeforge.data.yinyang import generate, yinyang_class


@pytest.fixture(scope="module")
def yy():
    return {s: YinYang(s) for s in ("train", "val", "test")}


def test_yinyang_sizes_and_items(yy):
    assert [len(yy[s]) for s in ("train", "val", "test")] == [5000, 1000, 1000]
    x, y = yy["train"][0]
    assert x.shape == (4,) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert torch.utils.data.DataLoader(yy["test"], batch_size=100).__iter__().__next__()[0].shape == (100, 4)


def test_yinyang_size_extends_the_published_split(yy):
    big = YinYang("train", size=6000)
    assert len(big) == 6000 and torch.equal(big.data[:5000], yy["train"].data)
    assert torch.equal(big.targets[:5000], yy["train"].targets)
    assert torch.equal(YinYang("test", size=10).data, yy["test"].data[:10])
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ValueError, match="YinYang size must be a positive int"):
            YinYang("train", size=bad)


def test_yinyang_class_balance(yy):
    # drawing the class first keeps the classes near a third each; the counts pin the generator
    assert torch.bincount(yy["train"].targets).tolist() == [1681, 1702, 1617]
    for s in ("val", "test"):
        frac = torch.bincount(yy[s].targets, minlength=3).float() / len(yy[s])
        assert ((frac > 0.28) & (frac < 0.39)).all()


def test_yinyang_follows_the_published_procedure():
    # the first sample of each split: its class is the seed's first randint(3), its point the
    # first draw of rand(2) that lands in the circle and in that class
    for split, seed in (("train", 42), ("val", 41), ("test", 40)):
        rng = np.random.RandomState(seed)
        goal = rng.randint(3)
        while True:
            x, y = rng.rand(2)
            if (x - 0.5) ** 2 + (y - 0.5) ** 2 <= 0.25 and yinyang_class(x, y) == goal:
                break
        feats, labels = generate(1, seed)
        assert labels[0] == goal and feats[0].tolist() == [x, y, 1 - x, 1 - y]


def test_yinyang_geometry(yy):
    for d in yy.values():
        x, y = d.data[:, 0].double(), d.data[:, 1].double()
        assert torch.allclose(d.data[:, :2] + d.data[:, 2:], torch.ones(len(d), 2))
        assert (((x - 0.5) ** 2 + (y - 0.5) ** 2) <= 0.25 + 1e-6).all()
        # the label is a function of the point; the dots are the points within 0.1 of a dot centre
        d_left = torch.hypot(x - 0.25, y - 0.5)
        d_right = torch.hypot(x - 0.75, y - 0.5)
        dot = (d_left < 0.1 - 1e-6) | (d_right < 0.1 - 1e-6)
        assert (d.targets[dot] == 2).all()
    # known points: the left dot's centre and right dot's centre, the upper/lower halves
    assert yinyang_class(0.25, 0.5) == 2 and yinyang_class(0.75, 0.5) == 2
    assert yinyang_class(0.5, 0.95) == 1 and yinyang_class(0.5, 0.05) == 0
    assert yinyang_class(0.25, 0.62) == 1 and yinyang_class(0.75, 0.38) == 0


def test_yinyang_is_deterministic_and_splits_differ(yy):
    again = YinYang("val")
    assert torch.equal(again.data, yy["val"].data) and torch.equal(again.targets, yy["val"].targets)
    assert not torch.equal(yy["val"].data, yy["test"].data)
    with pytest.raises(ValueError, match="split"):
        YinYang("validation")


def test_digits_split():
    parts = {s: Digits(s) for s in ("train", "val", "test")}
    assert [len(parts[s]) for s in ("train", "val", "test")] == [1259, 179, 359]
    for d in parts.values():
        assert d.data.shape[1] == 64 and 0.0 <= d.data.min() and d.data.max() <= 1.0
        assert torch.bincount(d.targets, minlength=10).min() > 0    # stratified
    x, y = parts["test"][3]
    assert x.shape == (64,) and 0 <= int(y) <= 9
    assert torch.equal(parts["train"].images.reshape(-1, 64), parts["train"].data)


def test_saccade_events_are_well_formed():
    d = EventDigits("test")
    assert d.sensor_size == (12, 12) and len(d) == 359
    for ev in d.events[:20]:
        assert ev.dtype == EVENT_DTYPE and len(ev) > 100
        assert (np.diff(ev["t"]) >= 0).all()
        assert ev["t"].min() > 0 and ev["t"].max() <= d.duration_us
        assert ev["x"].min() >= 0 and ev["x"].max() < 12 and ev["y"].min() >= 0 and ev["y"].max() < 12
        assert set(np.unique(ev["p"])) == {0, 1}


def test_saccade_physics():
    blank = np.zeros((1, 8, 8))
    assert len(saccade_events(blank)[0]) == 0                       # nothing moves, nothing fires
    dot = np.zeros((1, 8, 8))
    dot[0, 4, 4] = 1.0
    ev = saccade_events(dot, Saccades(amplitude=1.0))[0]
    # a single bright pixel moving along a closed path: brightening and darkening balance
    assert abs(int((ev["p"] == 1).sum()) - int((ev["p"] == 0).sum())) <= 4
    # events stay near the dot's path
    assert np.abs(ev["x"].astype(int) - 6).max() <= 2 and np.abs(ev["y"].astype(int) - 6).max() <= 2


def test_to_frame():
    d = EventDigits("val")
    ev, label = d[0]
    frames = d.frame_transform(15)(ev)
    assert frames.shape == (15, 2, 12, 12) and frames.dtype == torch.float32
    assert frames.sum().item() == len(ev)
    assert torch.equal(frames[:, 1].sum(), torch.tensor(float((ev["p"] == 1).sum())))
    one = np.array([(d.duration_us, 3, 5, 1)], dtype=EVENT_DTYPE)       # the last instant: last bin
    f = to_frames(one, (12, 12), 4, d.duration_us)
    assert f[3, 1, 5, 3] == 1 and f.sum() == 1
    item, _ = EventDigits("val", transform=ToFrame((12, 12, 2), n_time_bins=5, start_time=0, end_time=d.duration_us))[0]
    assert item.shape == (5, 2, 12, 12)
