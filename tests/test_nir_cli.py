"""``spikeforge export RUN_DIR OUT.nir`` and ``Classifier.network()``: a trained run as a NIR graph."""
from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge.train import make_config, train
from spikeforge.train.cli import main
from spikeforge.train.model import spike_input
from spikeforge.train.tasks import batch_input, load_task

pytest.importorskip("nir")


def _run(tmp_path, **kw):
    out = tmp_path / "run"
    train(make_config(epochs=1, hidden=16, steps=8, batch_size=250, **kw), out, quiet=True, plots=False)
    return out


@pytest.mark.parametrize("encoding", ["current", "latency"])
def test_exported_run_runs_like_the_model(tmp_path, capsys, encoding):
    kw = {"input_tau": 5.0} if encoding == "latency" else {}
    run = _run(tmp_path, reset="hard", neuron="LIF", encoding=encoding, **kw)
    assert main(["export", str(run), str(tmp_path / "m.nir")]) == 0
    assert "wrote" in capsys.readouterr().out
    model, cfg = sf.load_run(run)
    loaded = sf.nir.load(tmp_path / "m.nir")
    x = load_task(cfg).split("test")[0][:50]
    seq = batch_input(x)
    seq = spike_input(seq, cfg.steps) if encoding == "latency" else seq.expand(cfg.steps, *seq.shape)
    with torch.no_grad():
        torch.testing.assert_close(loaded(seq), model(batch_input(x)), rtol=1e-6, atol=1e-6)


def test_export_of_a_soft_reset_run_is_one_line(tmp_path, capsys):
    run = _run(tmp_path)                       # the default: IF with soft reset
    assert main(["export", str(run), str(tmp_path / "m.nir")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "model[1] (IF): IF: reset: Reset.SOFT has no NIR equivalent" in err
    assert not (tmp_path / "m.nir").exists()
