"""``spikeforge train --method stdp|desire``: local learning rules in the trainer's run folder."""
import json

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import AdaptiveThreshold, PairSTDP, attach
from spikeforge.train import load_run
from spikeforge.train.cli import main
from spikeforge.train.config import ConfigError, Schedule, make_config
from spikeforge.train.local_model import LocalNet
from spikeforge.train.trainer import Trainer

TINY = ["--dataset", "digits", "--quiet"]


def test_desire_trains_evaluates_and_plots(tmp_path, capsys):
    out = tmp_path / "desire"
    argv = ["train", "--method", "desire", "--hidden", "32", "--epochs", "1", "--steps", "10", "--out", str(out)]
    assert main([*argv, *TINY]) == 0
    config = json.loads((out / "config.json").read_text())
    assert config["method"] == "desire" and config["schedule"] == "linear" and config["batch_size"] == 16
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "done" and metrics["method"] == "desire"
    assert metrics["test_accuracy"] > 0.5                                   # one epoch; chance 0.1
    assert metrics["history"][0]["val_loss"] == pytest.approx(1 - metrics["history"][0]["val_accuracy"])
    assert {"config.json", "best.pt", "last.pt", "metrics.json", "curves.png", "confusion.png"} <= \
        {p.name for p in out.iterdir()}
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0           # the evaluation's Poisson input is seeded: same figure
    assert f"{100 * metrics['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_stdp_learns_without_labels_and_resumes_exactly(tmp_path):
    (tmp_path / "c.json").write_text('{"schedule": "constant"}')   # (a linear decay would depend on --epochs)
    argv = ["train", "--method", "stdp", "--hidden", "20", "--steps", "30", "--no-plots", "--config",
            str(tmp_path / "c.json"), *TINY]                               # 30 steps: enough for them to fire
    assert main([*argv, "--epochs", "2", "--out", str(tmp_path / "a")]) == 0
    assert main([*argv, "--epochs", "1", "--out", str(tmp_path / "b")]) == 0
    assert main(["train", "--resume", str(tmp_path / "b"), "--epochs", "2", "--quiet", "--no-plots"]) == 0
    a, b = (torch.load(tmp_path / n / "last.pt", weights_only=False)["model"] for n in ("a", "b"))
    assert set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)     # weights, thresholds, assignment
    assert (a["net.1.neuron.v_threshold"] > 1.0).any()                       # the adaptive thresholds moved
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert metrics["test_accuracy"] > 0.2 and len(metrics["history"]) == 2  # 20 neurons, 2 short epochs
    model, cfg = load_run(tmp_path / "a")
    assert isinstance(model, LocalNet) and cfg.method.value == "stdp"
    x = sf.data.Digits("test").data[:8]
    assert model.predict(x).shape == (8,) and len(model.assignment.unique()) > 1
    assert main(["export", str(tmp_path / "a"), str(tmp_path / "a.nir")]) == 2      # refused in one line


@pytest.mark.parametrize("method", ["stdp", "desire"])
@pytest.mark.parametrize("bad, match", [
    ({"dataset": "yinyang"}, "digits"), ({"encoding": "latency"}, "encoding"), ({"recurrent": True}, "recurrent"),
    ({"neuron": "LIF"}, "neuron"), ({"precision": "bf16"}, "float32"), ({"loss": "first-spike"}, "loss"),
    ({"input_tau": 5.0}, "input_tau")])
def test_local_methods_refuse_what_they_cannot_run(method, bad, match):
    with pytest.raises(ConfigError, match=match):
        make_config(method=method, **{"dataset": "digits", **bad})


def test_defaults_and_cli_error(capsys):
    cfg = make_config(dataset="digits", method="stdp")
    assert (cfg.hidden, cfg.steps, cfg.epochs, cfg.lr, cfg.schedule) == (200, 60, 5, 0.1, Schedule.LINEAR)
    assert main(["train", "--method", "stdp"]) == 2                          # Yin-Yang: refused in one line
    assert "use --dataset digits" in capsys.readouterr().err
    assert main(["train", "--dataset", "digits", "--method", "desire", "--nproc", "2"]) == 2
    assert "runs in one process; drop --nproc" in capsys.readouterr().err


def test_linear_schedule_decays_to_a_tenth():
    t = Trainer.__new__(Trainer)
    t.cfg = make_config(dataset="digits", method="desire", lr=0.5)
    assert t._lr(0, 11) == pytest.approx(0.5) and t._lr(10, 11) == pytest.approx(0.05)
    assert t._lr(5, 11) == pytest.approx(0.5 * (1 - 0.45))


def test_paused_learner_sees_nothing_and_thresholds_round_trip():
    lin = nn.Linear(4, 3, bias=False)
    net = nn.Sequential(lin, sf.nn.LIF(tau=2.0, v_threshold=torch.ones(3), v_reset=0.0))
    nn.init.constant_(lin.weight, 2.0)
    learner = attach(net, PairSTDP(a_plus=1.0, a_minus=0.5), homeostasis=AdaptiveThreshold(0.5, 1e9))
    x = torch.ones(5, 2, 4)
    with learner.pause():
        assert net(x).sum() > 0
    assert all(float(d.abs().sum()) == 0 for d in learner.pending.values())
    learner.apply(1.0)
    assert torch.equal(learner.thresholds["0"], torch.zeros(3))               # no spikes were counted
    net(x)
    assert float(learner.pending["0"].abs().sum()) > 0                       # live again after the block
    learner.set_thresholds({"0": torch.tensor([0.1, 0.2, 0.3])})
    assert torch.allclose(net[1].v_threshold, torch.tensor([1.1, 1.2, 1.3]))
    with pytest.raises(ValueError, match="set_thresholds"):
        learner.set_thresholds({"0": torch.zeros(4)})
