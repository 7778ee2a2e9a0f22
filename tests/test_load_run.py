"""``spikeforge.load_run``: a run folder's model, ready for inference, reproduces the run's
reported test accuracy; ``spikeforge eval --which``; ``metrics.json`` names how best.pt is chosen."""
from __future__ import annotations

import json

import pytest
import torch

import spikeforge as sf
from spikeforge.train import CheckpointError, Classifier, Encoding, Loss, RunError, make_config, train
from spikeforge.train.cli import main
from spikeforge.train.tasks import batch_input, load_task


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("load_run") / "run"
    train(make_config(epochs=1, hidden=16, steps=6, batch_size=250), out, quiet=True, plots=False)
    return out


def _accuracy(model, cfg, split="test") -> float:
    x, y = load_task(cfg).split(split)
    pred = torch.cat([model.predict(batch_input(x[i:i + 1000])) for i in range(0, len(y), 1000)])
    return (pred == y).float().mean().item()


def test_load_run_reproduces_the_reported_test_accuracy(run):
    model, cfg = sf.load_run(run)
    assert isinstance(model, Classifier) and not model.training
    assert cfg.hidden == 16 and cfg.epochs == 1 and cfg.to_dict() == json.loads((run / "config.json").read_text())
    metrics = json.loads((run / "metrics.json").read_text())
    assert _accuracy(model, cfg) == metrics["test_accuracy"]
    assert not any(p.requires_grad and p.grad is not None for p in model.parameters())


def test_best_and_last(run):
    best, _ = sf.load_run(run, which="best")
    last, _ = sf.load_run(run, "last")
    for k, v in best.state_dict().items():          # one epoch: best.pt and last.pt hold the same weights
        assert torch.equal(v, last.state_dict()[k])
    with pytest.raises(ValueError, match="which must be 'best' .* or 'last' .*, got 'middle'"):
        sf.load_run(run, which="middle")
    with pytest.raises(RunError, match="not a run folder"):
        sf.load_run(run / "nothing")


def test_load_run_errors(tmp_path, run):
    copy = tmp_path / "copy"
    copy.mkdir()
    (copy / "config.json").write_bytes((run / "config.json").read_bytes())
    with pytest.raises(CheckpointError, match="no checkpoint at"):
        sf.load_run(copy)
    (copy / "best.pt").write_bytes((run / "best.pt").read_bytes()[:100])
    with pytest.raises(CheckpointError, match="not a readable spikeforge checkpoint"):
        sf.load_run(copy)
    cfg = json.loads((run / "config.json").read_text())
    (copy / "best.pt").write_bytes((run / "best.pt").read_bytes())
    (copy / "config.json").write_text(json.dumps({**cfg, "hidden": 17}))
    with pytest.raises(CheckpointError, match="does not fit the model"):
        sf.load_run(copy)
    with pytest.raises(Exception, match="device must be cpu, cuda or cuda:N"):
        sf.load_run(run, device="tpu")


def test_metrics_name_how_best_is_chosen(run):
    metrics = json.loads((run / "metrics.json").read_text())
    best = metrics["best"]
    assert best["chosen_by"] == "lowest validation loss" and best["epoch"] == 1
    assert best["val_loss"] == metrics["history"][0]["val_loss"]
    assert best["val_accuracy"] == metrics["history"][0]["val_accuracy"]
    assert "best_val_accuracy" not in metrics


def test_eval_which_and_split(run, capsys):
    metrics = json.loads((run / "metrics.json").read_text())
    for which in ("best", "last"):
        assert main(["eval", str(run), "--which", which]) == 0
        out = capsys.readouterr().out
        assert f"test accuracy {100 * metrics['test_accuracy']:.2f}%" in out and f"({which}.pt, epoch 1)" in out
    assert main(["eval", str(run), "--split", "val"]) == 0
    assert f"val accuracy {100 * metrics['best']['val_accuracy']:.2f}%" in capsys.readouterr().out


@pytest.mark.parametrize("encoding,loss", [(Encoding.LATENCY, Loss.FIRST_SPIKE), (Encoding.CURRENT, Loss.FIRST_SPIKE)])
def test_load_run_other_encodings_and_losses(tmp_path, encoding, loss):
    out = tmp_path / "run"
    train(make_config(dataset="digits", encoding=encoding, loss=loss, epochs=1, hidden=8, steps=8, batch_size=500),
          out, quiet=True, plots=False)
    model, cfg = sf.load_run(out, device="cpu")
    assert cfg.encoding is encoding and cfg.loss is loss
    assert _accuracy(model, cfg) == json.loads((out / "metrics.json").read_text())["test_accuracy"]
