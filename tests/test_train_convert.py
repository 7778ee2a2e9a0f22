"""``spikeforge train --method convert|proxy``: an ANN (QCFS activations) evaluated as its converted SNN."""
import json

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.train.cli import main
from spikeforge.train.config import ConfigError, make_config
from spikeforge.train.model import Classifier


def test_convert_method_trains_evaluates_and_plots(tmp_path, capsys):
    out = tmp_path / "conv"
    argv = ["train", "--dataset", "digits", "--method", "convert", "--epochs", "2", "--out", str(out), "--quiet"]
    assert main(argv) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "convert" and config["steps"] == 32 and config["neuron"] == "IF"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.8                        # two epochs of an MLP on digits, as an SNN
    assert {"curves.png", "activity.png", "confusion.png"} <= {p.name for p in out.iterdir()}
    assert main(["eval", str(out)]) == 0
    assert f"{100 * metrics['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_proxy_method_trains_and_resumes(tmp_path):
    out = tmp_path / "proxy"
    argv = ["train", "--method", "proxy", "--epochs", "1", "--hidden", "32", "--out", str(out), "--quiet",
            "--no-plots"]
    assert main(argv) == 0
    assert json.loads((out / "config.json").read_text())["steps"] == 8
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] > 0.4    # Yin-Yang, chance 1/3
    assert main(["train", "--resume", str(out), "--epochs", "2", "--quiet", "--no-plots"]) == 0
    assert len(json.loads((out / "metrics.json").read_text())["history"]) == 2


@pytest.mark.parametrize("method", ["convert", "proxy"])
def test_the_evaluated_model_is_the_library_conversion(method):
    """Eval mode: the SNN's mean readout equals sf.convert.ann_to_snn of the same ANN; training
    mode: the ANN's output (convert) or the SNN's value with the ANN's gradient (proxy)."""
    torch.manual_seed(0)
    cfg = make_config(dataset="digits", method=method, hidden=16)
    model = Classifier(64, 10, cfg)
    x = torch.rand(20, 64)
    ann = nn.Sequential(model.fc_in, model.act, model.fc_out)
    with torch.no_grad():
        want = sf.convert.ann_to_snn(ann, x)(sf.encoding.direct(x, cfg.steps)).mean(0)
        torch.testing.assert_close(model.eval()(x)[0], want, atol=1e-5, rtol=1e-5)
    out = model.train()(x)[0]
    torch.testing.assert_close(out, want if method == "proxy" else ann(x), atol=1e-5, rtol=1e-5)
    if method == "proxy":          # 64 levels in the ANN, 8 steps in the SNN: the values differ
        assert not torch.allclose(out, ann(x), atol=1e-3)
    out.sum().backward()
    g = model.fc_in.weight.grad.clone()
    model.zero_grad()
    ann(x).sum().backward()
    torch.testing.assert_close(g, model.fc_in.weight.grad)
    v, z = model.eval()(x, return_spikes=True)
    assert v.shape == (cfg.steps, 20, 10) and z.shape == (cfg.steps, 20, 16)
    torch.testing.assert_close(v[-1], want, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("bad, match", [
    (dict(encoding="latency"), "encoding current"),
    (dict(dataset="event-digits"), "encoding current"),
    (dict(loss="first-spike"), "max-membrane"),
    (dict(neuron="LIF"), "IF neurons with reset by subtraction"),
    (dict(recurrent=True), "recurrent is not supported"),
    (dict(quantize="xylo"), "quantize is not supported"),
])
@pytest.mark.parametrize("method", ["convert", "proxy"])
def test_convert_methods_refuse_what_they_cannot_run(method, bad, match):
    with pytest.raises(ConfigError, match=match):
        make_config(method=method, **bad)
