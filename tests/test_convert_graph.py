"""sf.convert beyond a chain: residual additions, the spiking max-pool, QCFS and ANN-proxy training."""
import math

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.convert import Graph, QCFS, SpikingMaxPool


class _Block(nn.Module):
    """A small residual CNN: conv-BN-ReLU, then relu(conv(relu(conv(x))) + x), max-pool, readout."""

    def __init__(self, act=nn.ReLU):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), act())
        self.c1, self.a1 = nn.Conv2d(4, 4, 3, padding=1), act()
        self.c2, self.bn2, self.a2 = nn.Conv2d(4, 4, 3, padding=1), nn.BatchNorm2d(4), act()
        self.pool, self.fc = nn.MaxPool2d(2), nn.Linear(4 * 4 * 4, 3)

    def forward(self, x):
        h = self.stem(x)
        h = self.a2(self.bn2(self.c2(self.a1(self.c1(h)))) + h)
        return self.fc(torch.flatten(self.pool(h), 1))


class _Shortcut(nn.Module):
    """The output is a sum of spikes and the raw input: both get a Scale to the output's scale 1."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) + x


def _converges(ann, x, T=1000, tol=0.03, **kw):
    with torch.no_grad():
        snn = sf.convert.ann_to_snn(ann, x, percentile=100, **kw)
        want = ann(x)
        out = snn(sf.encoding.direct(x, T)).cumsum(0) / torch.arange(1, T + 1).view(-1, *[1] * want.dim())
    err = [(out[t - 1] - want).abs().max().item() for t in (T // 20, T)]
    assert err[1] < tol * want.abs().max().item(), err
    assert err[1] < err[0]
    return snn


@pytest.mark.parametrize("per_channel", [False, True])
def test_residual_cnn_with_maxpool_converges(per_channel):
    torch.manual_seed(0)
    ann = _Block()
    ann.train()(torch.rand(32, 1, 8, 8))          # non-trivial BatchNorm statistics
    ann.eval()
    x = torch.rand(24, 1, 8, 8)
    folded = sf.convert.fold_batchnorm(ann)                 # a Graph of the ANN's layers, BN folded
    assert isinstance(folded, Graph) and not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    with torch.no_grad():
        torch.testing.assert_close(folded(x), ann(x), atol=1e-5, rtol=1e-5)
    levels, shapes = sf.convert.calibrate(folded, x, per_channel=per_channel)
    assert set(levels) == {"stem_2", "a1", "a2"} and shapes["pool"] == (4, 8, 8)
    snn = _converges(ann, x, per_channel=per_channel)
    assert isinstance(snn, Graph)
    kinds = [type(m) for m in snn.modules()]
    assert SpikingMaxPool in kinds and sf.nn.Scale in kinds   # the spiking shortcut is rescaled
    assert sum(k is sf.nn.IF for k in kinds) == 3


def test_shortcut_of_spikes_and_input_converges():
    torch.manual_seed(1)
    snn = _converges(_Shortcut().eval(), torch.randn(16, 4))
    names = [n for n, _ in snn.wiring]
    assert names[-1] == "add" and sum("scale" in n for n in names) == 1


def test_residual_graph_streams_and_pickles(tmp_path):
    torch.manual_seed(2)
    ann, x = _Block().eval(), torch.rand(5, 1, 8, 8)
    snn = sf.convert.ann_to_snn(ann, x, steps=10)
    with torch.no_grad():
        y = snn(x)
        sf.reset(snn)
        xs = sf.encoding.direct(x, 10)
        torch.testing.assert_close(torch.stack([sf.step(snn[1], xs[t]) for t in range(10)]), y)
        sf.reset(snn)                                        # DirectInput passes a step through
        torch.testing.assert_close(torch.stack([sf.step(snn, x) for _ in range(10)]), y)
    torch.save(snn, tmp_path / "snn.pt")
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "snn.pt", weights_only=False)(x), y)


def test_spiking_maxpool_passes_the_increment_of_the_largest_count():
    pool = SpikingMaxPool(nn.MaxPool2d(2))
    # window of 4 positions: position 1 fires at steps 0 and 1, position 2 at steps 1, 2, 3
    x = torch.zeros(4, 1, 1, 2, 2)
    x[[0, 1], 0, 0, 0, 1] = 1
    x[[1, 2, 3], 0, 0, 1, 0] = 1
    out = pool(x).flatten()
    # the largest count: 1, 2, 2, 3 -> increments 1, 1, 0, 1 (the step-3 spike of pos 2 passes as it takes the lead)
    assert out.tolist() == [1.0, 1.0, 0.0, 1.0]
    sf.reset(pool)
    torch.testing.assert_close(torch.stack([pool.step(x[t]) for t in range(4)]), pool(x))


def test_spiking_maxpool_1d_and_constant_input_is_exact():
    x = torch.rand(3, 2, 5, 8)
    want = nn.functional.max_pool1d(x[0], 2)
    out = SpikingMaxPool(nn.MaxPool1d(2))(x[:1].expand(6, -1, -1, -1))
    torch.testing.assert_close(out, want.expand(6, -1, -1, -1))
    with pytest.raises(ValueError, match=r"SpikingMaxPool1d: x must be \(T, B, C, L\)"):
        SpikingMaxPool(nn.MaxPool1d(2))(x[0])
    with pytest.raises(TypeError, match="pool must be an nn.MaxPool1d/2d"):
        SpikingMaxPool(nn.AvgPool2d(2))


def test_qcfs_values_and_gradient():
    q = QCFS(levels=4, threshold=2.0)
    x = torch.tensor([-1.0, 0.2, 0.3, 1.0, 1.3, 3.0], requires_grad=True)
    y = q(x)
    # lambda * clamp(floor(x * 4 / 2 + 0.5) / 4, 0, 1)
    torch.testing.assert_close(y, torch.tensor([0.0, 0.0, 0.5, 1.0, 1.5, 2.0]))
    y.sum().backward()
    assert x.grad.tolist() == [0.0, 1.0, 1.0, 1.0, 1.0, 0.0]   # straight through inside the clip
    assert q.threshold.grad.item() > 0.9                          # the clipped input pulls lambda up
    with pytest.raises(ValueError, match="QCFS: levels"):
        QCFS(levels=0)
    for bad in (-1.0, math.inf, math.nan):
        with pytest.raises(ValueError, match="QCFS: threshold"):
            QCFS(threshold=bad)


def test_qcfs_converts_exactly_at_t_equal_levels():
    """One QCFS layer on a constant input: T = L steps of an IF starting at lambda/2 give
    exactly the QCFS output (Bu et al. 2022, Theorem 2)."""
    torch.manual_seed(3)
    L = 4
    ann = nn.Sequential(nn.Linear(6, 8), QCFS(levels=L, threshold=1.5), nn.Linear(8, 3)).eval()
    x = torch.randn(50, 6)
    snn = sf.convert.ann_to_snn(ann, x[:5])     # the calibration data do not matter for QCFS
    ifs = [m for m in snn if isinstance(m, sf.nn.IF)]
    assert float(ifs[0].v_reset) == 0.5
    with torch.no_grad():
        torch.testing.assert_close(snn(sf.encoding.direct(x, L)).mean(0), ann(x), atol=1e-5, rtol=1e-5)


def test_proxy_value_is_the_snn_gradient_is_the_ann():
    torch.manual_seed(4)
    ann = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3))
    proxy = sf.convert.ProxyModel(ann, steps=4)
    x = torch.randn(32, 6)
    out = proxy(x)
    with torch.no_grad():
        want = sf.convert.ann_to_snn(ann, x)(sf.encoding.direct(x, 4)).mean(0)
    torch.testing.assert_close(out, want)
    assert not torch.allclose(out, ann(x), atol=1e-3)      # T=4: the SNN differs from the ANN
    out.sum().backward()
    g = ann[0].weight.grad.clone()
    ann.zero_grad()
    ann(x).sum().backward()
    torch.testing.assert_close(g, ann[0].weight.grad)
    assert ann.training                                    # the conversion left the mode alone
    with pytest.raises(ValueError, match="ProxyModel: steps"):
        sf.convert.ProxyModel(ann, steps=0)
    with pytest.raises(ValueError, match="percentile must be a number in"):     # at construction
        sf.convert.ProxyModel(ann, steps=4, percentile=0)
    with pytest.raises(ValueError, match="v_init must be None or a number in"):
        sf.convert.ProxyModel(ann, steps=4, v_init=1.5)


def test_hard_reset_conversion_exports_to_nir_and_soft_refuses(tmp_path):
    """reset="hard": NIR's IF (reset to 0), so a converted chain round-trips through NIR."""
    torch.manual_seed(6)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(16, 1, 8, 8)
    snn = sf.convert.ann_to_snn(ann, x, reset="hard")
    assert all(m.spec.reset is sf.Reset.HARD for m in snn.modules() if isinstance(m, sf.nn.IF))
    sf.nir.save(snn, tmp_path / "snn.nir", dt=1.0, input_shape=(1, 8, 8))
    xs = sf.encoding.direct(x, 20)
    with torch.no_grad():
        torch.testing.assert_close(sf.nir.load(tmp_path / "snn.nir")(xs), snn(xs), atol=1e-5, rtol=1e-5)
    with pytest.raises(Exception, match="SOFT has no NIR equivalent"):
        sf.nir.export(sf.convert.ann_to_snn(ann, x), dt=1.0, input_shape=(1, 8, 8))
    with pytest.raises(ValueError, match="ann_to_snn: reset must be 'soft'.*or 'hard'"):
        sf.convert.ann_to_snn(ann, x, reset="none")
