"""``spikeforge train --quantize xylo``: the integer model's accuracy in metrics.json, the model
and its tables in the run folder, and Xylo's design rules checked before any training."""
from __future__ import annotations

import json
import math

import pytest
import torch

from spikeforge.quant import quantize
from spikeforge.train import ConfigError, load_run, make_config, train
from spikeforge.train.cli import main
from spikeforge.train.model import class_scores, spike_input

XYLO_TOML = 'input_tau = 3.476059496782207\nneuron = "LIF"\ntau_out = 128.0\n[neuron_params]\ntau = 4.0\n'
TINY = ["--epochs", "1", "--hidden", "8", "--steps", "16", "--batch-size", "500", "--quiet", "--no-plots"]


def _xylo_config(**kw):
    return make_config(encoding="latency", neuron="LIF", neuron_params={"tau": 4.0}, tau_out=128.0,
                       input_tau=-1.0 / math.log(0.75), quantize="xylo", **kw)


def test_quantize_run_reports_integer_accuracy_and_saves_the_integer_model(tmp_path):
    cfg = _xylo_config(epochs=1, hidden=8, steps=16, batch_size=500, qat_epochs=1)
    train(cfg, tmp_path / "run", quiet=True, plots=False)
    q = json.loads((tmp_path / "run" / "metrics.json").read_text())["quantize"]
    assert q["target"] == "xylo" and q["qat_epochs"] == 1
    for key in ("integer_val_accuracy", "integer_test_accuracy", "qat_val_accuracy", "qat_test_accuracy"):
        assert 0.0 <= q[key] <= 1.0
    assert sorted(q["files"]) == ["xylo/model.c", "xylo/model.h", "xylo/model.json", "xylo/model.pt"]
    assert (tmp_path / "run" / "xylo" / "model.pt").stat().st_size < 100_000   # the network, not its last recordings
    net = torch.load(tmp_path / "run" / "xylo" / "model.pt", weights_only=False)
    # the saved (fine-tuned, frozen) integer model's test accuracy is the one reported
    from spikeforge.data import YinYang

    test = YinYang("test")
    with torch.no_grad():
        pred = class_scores(net.scores(spike_input(test.data, 16).double()), cfg.loss).argmax(1)
    assert (pred == test.targets).double().mean().item() == pytest.approx(q["qat_test_accuracy"])
    tables = json.loads((tmp_path / "run" / "xylo" / "model.json").read_text())
    assert [layer["out"] for layer in tables["layers"]] == [8, 3]


def test_post_training_accuracy_is_that_of_quantize_on_best_pt(tmp_path):
    train(_xylo_config(epochs=1, hidden=8, steps=16, batch_size=500), tmp_path / "run", quiet=True, plots=False)
    q = json.loads((tmp_path / "run" / "metrics.json").read_text())["quantize"]
    assert "qat_test_accuracy" not in q
    model, cfg = load_run(tmp_path / "run")
    from spikeforge.data import YinYang

    calib = spike_input(YinYang("train").data[:256], 16)
    net = quantize(model, calibration=calib)
    test = YinYang("test")
    with torch.no_grad():
        pred = class_scores(net.scores(spike_input(test.data, 16).double()), cfg.loss).argmax(1)
    assert (pred == test.targets).double().mean().item() == pytest.approx(q["integer_test_accuracy"])
    saved = torch.load(tmp_path / "run" / "xylo" / "model.pt", weights_only=False)
    assert all(torch.equal(a.weight, b.weight) for a, b in zip(saved, net))


@pytest.mark.parametrize("argv, match", [
    (["--dataset", "digits"], "65 inputs; Xylo has 16 input channels"),       # 64 + the bias channel
    (["--neuron", "ALIF"], "ALIF"),                                           # no Xylo form
    (["--hidden", "1001"], "1001 hidden neurons; Xylo has 1000"),
])
def test_design_rule_violations_stop_the_run_before_training(tmp_path, capsys, argv, match):
    cfg_file = tmp_path / "c.toml"
    cfg_file.write_text(XYLO_TOML)          # the flags override the file's neuron
    out = tmp_path / "run"
    rc = main(["train", "--encoding", "latency", "--config", str(cfg_file), "--quantize", "xylo", *TINY, *argv,
               "--out", str(out)])
    err = capsys.readouterr().err
    assert rc == 2 and match in err and "--quantize xylo" in err, err
    assert len(err.splitlines()) == 1
    assert "epoch" not in capsys.readouterr().out
    assert not out.exists()            # nothing trained, no folder left behind


@pytest.mark.parametrize("kw, match", [
    ({"quantize": "xylo"}, "--encoding latency"),                                   # float current input
    ({"quantize": "xylo", "encoding": "latency"}, "input_tau"),                     # synapses without decay
    ({"qat_epochs": 2}, "add --quantize xylo"),
    ({"quantize": "xylo", "encoding": "latency", "input_tau": 3.0, "qat_epochs": -1}, "qat_epochs must be"),
    ({"quantize": "loihi"}, "quantize must be one of xylo"),
])
def test_configurations_that_cannot_be_quantised_are_refused(kw, match):
    with pytest.raises(ConfigError, match=match):
        make_config(**kw)


def test_quantize_options_round_trip_through_the_run_configuration():
    cfg = _xylo_config(qat_epochs=3)
    again = type(cfg).from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and again.to_dict()["quantize"] == "xylo" and again.qat_epochs == 3
    assert make_config().quantize is None and make_config().qat_epochs == 0
