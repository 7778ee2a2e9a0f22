"""ANN -> SNN conversion (sf.convert): BN folding, balancing, accuracy vs T, errors."""
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.convert import ConversionError

DOC = Path(__file__).resolve().parents[1] / "docs" / "conversion.md"


def _train(model, x, y, steps):
    torch.manual_seed(1)
    opt = torch.optim.Adam(model.parameters(), 1e-2)
    for i in range(steps):
        b = slice((i * 256) % len(x), (i * 256) % len(x) + 256)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
    return model.eval()


@pytest.fixture(scope="module")
def digits():
    return sf.data.Digits("train"), sf.data.Digits("test")


@pytest.fixture(scope="module")
def mlp(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(64, 64), nn.BatchNorm1d(64), nn.ReLU(), nn.Dropout(0.1), nn.Linear(64, 10))
    return _train(net, digits[0].data, digits[0].targets, 200)


@pytest.fixture(scope="module")
def cnn(digits):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(128, 10))
    return _train(net, digits[0].images[:, None], digits[0].targets, 150)


def _accuracy(out, y):
    return (out.argmax(-1) == y).float().mean().item()


@pytest.mark.parametrize("which", ["mlp", "cnn"])
@pytest.mark.parametrize("percentile,per_channel", [(100, False), (99.9, False), (99.9, True)])
def test_converted_accuracy_approaches_ann(request, digits, which, percentile, per_channel):
    ann = request.getfixturevalue(which)
    train, test = digits
    shape = (-1, 64) if which == "mlp" else (-1, 1, 8, 8)
    x, xt = train.data.reshape(shape), test.data.reshape(shape)
    with torch.no_grad():
        ann_out = ann(xt)
        snn = sf.convert.ann_to_snn(ann, x, percentile=percentile, per_channel=per_channel)
        rates = snn(sf.encoding.direct(xt, 128)).cumsum(0) / torch.arange(1, 129).view(-1, 1, 1)
    acc_ann = _accuracy(ann_out, test.targets)
    assert acc_ann > 0.9
    assert _accuracy(rates[63], test.targets) >= acc_ann - 0.03
    assert _accuracy(rates[127], test.targets) >= acc_ann - 0.03
    err = [(rates[t - 1] - ann_out).abs().mean().item() for t in (16, 128)]
    assert err[1] < err[0]


def test_batchnorm_folding_is_exact(mlp, cnn, digits):
    for ann, x in ((mlp, digits[1].data), (cnn, digits[1].images[:, None])):
        with torch.no_grad():
            torch.testing.assert_close(sf.convert.fold_batchnorm(ann)(x), ann(x), atol=1e-5, rtol=1e-5)
        folded = sf.convert.fold_batchnorm(ann)
        assert not any(isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d, nn.Dropout)) for m in folded)


def test_structure_and_steps(cnn, digits):
    x = digits[0].images[:200, None]
    snn = sf.convert.ann_to_snn(cnn, x, steps=8)
    assert isinstance(snn[0], sf.convert.DirectInput)
    ifs = [m for m in snn if isinstance(m, sf.nn.IF)]
    assert len(ifs) == 1 and ifs[0].spec.reset is sf.Reset.SOFT and float(ifs[0].v_threshold) == 1.0
    with torch.no_grad():
        assert snn(x[:5]).shape == (8, 5, 10)
    # the original model is untouched
    assert isinstance(cnn[1], nn.BatchNorm2d)


def test_calibration_from_loader(mlp, digits):
    ds = torch.utils.data.TensorDataset(digits[0].data, digits[0].targets)
    loader = torch.utils.data.DataLoader(ds, batch_size=100)
    a = sf.convert.ann_to_snn(mlp, loader, per_channel=True)
    b = sf.convert.ann_to_snn(mlp, digits[0].data, per_channel=True)
    torch.testing.assert_close(a[0].weight, b[0].weight)


class _Residual(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.relu(self.fc(x)) + x


class _Concat(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return torch.cat([torch.relu(self.fc(x)), x], 1)


class _AddConstant(nn.Module):
    def forward(self, x):
        return x + 1.0


class _Sigmoid(nn.Module):
    def forward(self, x):
        return torch.sigmoid(x)


@pytest.mark.parametrize("model,match", [
    (nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.AdaptiveMaxPool2d(2)), r"node '_2'.*AdaptiveMaxPool2d"),
    (_Concat(), r"node 'cat'.*joins branches by cat"),
    (_AddConstant(), r"node 'add'.*exactly two tensors"),
    (nn.Sequential(nn.Linear(4, 4), nn.Sigmoid()), r"node '_1'.*Sigmoid"),
    (_Sigmoid(), r"node 'sigmoid'.*function"),
    (nn.Sequential(nn.ReLU(), nn.BatchNorm1d(4)), r"node '_1'.*BatchNorm must directly follow"),
    (nn.Sequential(nn.ReLU(), nn.Linear(4, 2)), r"node '_0'.*must be fed by a Linear/Conv1d/Conv2d"),
    (nn.Sequential(nn.Linear(4, 4), nn.BatchNorm2d(4)), r"node '_1'.*BatchNorm2d cannot be folded into the Linear.*BatchNorm1d"),
])
def test_unsupported_layers_name_the_node(model, match):
    x = torch.rand(6, 1, 8, 8) if isinstance(model[0] if isinstance(model, nn.Sequential) else None, nn.Conv2d) \
        else torch.rand(6, 4)
    with pytest.raises(ConversionError, match=match):
        sf.convert.ann_to_snn(model, x)


@pytest.mark.parametrize("kwargs,error", [
    ({"percentile": 0}, ValueError), ({"percentile": 101}, ValueError), ({"steps": 0}, ValueError),
    ({"per_channel": 1}, TypeError),
])
def test_bad_arguments(kwargs, error):
    with pytest.raises(error, match="ann_to_snn"):
        sf.convert.ann_to_snn(nn.Sequential(nn.Linear(4, 2), nn.ReLU()), torch.rand(3, 4), **kwargs)


def test_bad_calibration_data_is_refused():
    """A sample without its batch dim was taken as 4 one-value 'samples'; a NaN silently gave the level 1."""
    ann = nn.Sequential(nn.Linear(4, 2), nn.ReLU(), nn.Linear(2, 2))
    with pytest.raises(ValueError, match=r"batch dimension first, got a batch of shape \(4,\)"):
        sf.convert.ann_to_snn(ann, torch.rand(4))
    bad = torch.rand(3, 4)
    bad[1, 2] = float("nan")
    for calibration in (bad, [(bad, torch.zeros(3))]):
        with pytest.raises(ValueError, match="calibration holds NaN or inf"):
            sf.convert.ann_to_snn(ann, calibration)


def test_docs_example_runs():
    """Every ```python block of docs/conversion.md, in order, in one namespace."""
    code = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(code) >= 3, "docs/conversion.md lost its python examples"
    namespace = {}
    for block in code:
        exec(compile(block, str(DOC), "exec"), namespace)


class _Functional(nn.Module):
    """F.relu and torch.flatten in forward; ends in a ReLU (the converted model ends in a Scale)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 3, 3, padding=1)
        self.pool = nn.AvgPool2d(2)
        self.fc = nn.Linear(12, 5)

    def forward(self, x):
        x = self.pool(nn.functional.relu(self.conv(x)))
        return torch.relu(self.fc(torch.flatten(x, 1)))


@pytest.mark.parametrize("per_channel", [False, True])
def test_max_balancing_converges_to_the_ann(per_channel):
    """Calibrated on its own inputs with the maximum, no IF saturates: the readout rate
    converges to the ANN's output (error ~ 1/T)."""
    torch.manual_seed(3)
    ann, x = _Functional().eval(), torch.rand(16, 1, 4, 4)
    snn = sf.convert.ann_to_snn(ann, x, percentile=100, per_channel=per_channel)
    assert isinstance(snn[-1], sf.nn.Scale)
    with torch.no_grad():
        want, out = ann(x), snn(sf.encoding.direct(x, 2000)).mean(0)
    torch.testing.assert_close(out, want, atol=0.02 * want.abs().max().item(), rtol=0)


def test_calibrate_levels_by_hand():
    torch.manual_seed(4)
    folded = sf.convert.fold_batchnorm(nn.Sequential(nn.Linear(3, 4), nn.ReLU()))
    x = torch.randn(1000, 3)
    acts = torch.relu(folded[0](x)).detach()
    levels, shapes = sf.convert.calibrate(folded, x, percentile=100, per_channel=True)
    torch.testing.assert_close(levels["_1"], acts.amax(0))
    levels, _ = sf.convert.calibrate(folded, x, percentile=50)
    assert float(levels["_1"]) == pytest.approx(float(acts.flatten().kthvalue(2000).values))
    assert shapes == {"_0": (3,), "_1": (4,)}


def test_converted_model_is_an_ordinary_spikeforge_model(tmp_path):
    """Streams step by step like any spikeforge model and pickles."""
    torch.manual_seed(5)
    ann = nn.Sequential(nn.Conv2d(1, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(), nn.AvgPool2d(2),
                        nn.Flatten(), nn.Linear(64, 10)).eval()
    x = torch.rand(20, 1, 8, 8)
    snn = sf.convert.ann_to_snn(ann, x)
    xs = sf.encoding.direct(x, 12)
    with torch.no_grad():
        y = snn(xs)
        sf.reset(snn)
        torch.testing.assert_close(torch.stack([sf.step(snn, xs[t]) for t in range(12)]), y)
    torch.save(snn, tmp_path / "snn.pt")
    with torch.no_grad():
        torch.testing.assert_close(torch.load(tmp_path / "snn.pt", weights_only=False)(xs), y)


@pytest.mark.parametrize("per_channel", [False, True])
def test_conv1d_bn_avgpool1d_converges(per_channel):
    torch.manual_seed(6)
    ann = nn.Sequential(nn.Conv1d(2, 4, 3, padding=1), nn.BatchNorm1d(4), nn.ReLU(), nn.AvgPool1d(2),
                        nn.Flatten(), nn.Linear(16, 3))
    ann.train()(torch.randn(32, 2, 8))  # non-trivial running statistics
    ann.eval()
    x = torch.randn(32, 2, 8)
    with torch.no_grad():
        torch.testing.assert_close(sf.convert.fold_batchnorm(ann)(x), ann(x), atol=1e-5, rtol=1e-5)
        snn = sf.convert.ann_to_snn(ann, x, percentile=100, per_channel=per_channel)
        want, out = ann(x), snn(sf.encoding.direct(x, 2000)).mean(0)
    torch.testing.assert_close(out, want, atol=0.02 * want.abs().max().item(), rtol=0)
