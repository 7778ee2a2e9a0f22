"""The SHD stand-in ``spikeforge.data.shd_like``: layout, determinism, density, classes."""
from __future__ import annotations

import pytest
import torch

from spikeforge.data import shd_like
from spikeforge.data.synthetic import SHD_CHANNELS, SHD_CLASSES


def test_layout_is_the_real_readers_frames():
    x, y = shd_like(40, 30, seed=3)
    assert x.shape == (30, 40, SHD_CHANNELS) and x.dtype == torch.float32   # (T, B, 700) like ToFrame+pad_collate
    assert y.shape == (40,) and y.dtype == torch.int64
    assert set(x.unique().tolist()) <= {0.0, 1.0}
    assert torch.bincount(y, minlength=SHD_CLASSES).tolist() == [2] * SHD_CLASSES   # balanced


def test_deterministic_per_seed():
    a, b = shd_like(8, 20, seed=5), shd_like(8, 20, seed=5)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])
    c = shd_like(8, 20, seed=6)
    assert not torch.equal(a[0], c[0])
    u8 = shd_like(8, 20, seed=5, dtype=torch.uint8)[0]
    assert u8.dtype == torch.uint8 and torch.equal(u8.float(), a[0])


@pytest.mark.parametrize("density", [0.01, 0.03, 0.05])
def test_density(density):
    x, _ = shd_like(20, 100, seed=0, density=density)
    assert abs(float(x.mean()) - density) < 0.1 * density


def test_classes_differ_and_pairs_need_time():
    """Class means differ (learnable); classes 2k and 2k+1 use the same channels in reverse order."""
    x, y = shd_like(200, 60, seed=1, n_classes=4)
    prof = torch.stack([x[:, y == c].mean(1) for c in range(4)])          # (class, T, channels)
    chan = prof.mean(1)
    assert torch.corrcoef(chan[[0, 2]])[0, 1] < 0.5                          # other pattern
    assert torch.corrcoef(chan[[0, 1]])[0, 1] > 0.8                          # same channels...
    early, late = prof[:, :30].mean(1), prof[:, 30:].mean(1)
    assert torch.corrcoef(torch.stack([early[0], late[1]]))[0, 1] > torch.corrcoef(early[[0, 1]])[0, 1]


def test_bad_arguments():
    with pytest.raises(ValueError, match="density"):
        shd_like(2, 5, density=0.0)
    with pytest.raises(ValueError, match=">= 1"):
        shd_like(0, 5)
