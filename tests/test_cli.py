"""The ``spikeforge`` command's contract: every failure is one line on stderr with exit status
2 and leaves no run folder behind; every dataset x encoding x loss it accepts trains."""
from __future__ import annotations

import json
import math

import pytest
import torch

import spikeforge
from spikeforge.train import make_config, train
from spikeforge.train import trainer as trainer_module
from spikeforge.train.cli import main

TINY = ["--epochs", "1", "--hidden", "8", "--steps", "4", "--batch-size", "500", "--quiet", "--no-plots"]


def _one_line_error(capsys, argv) -> str:
    rc = main(argv)
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and "error: " in lines[0], err
    assert "Traceback" not in err
    return lines[0]


def test_version(capsys):
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"spikeforge {spikeforge.__version__}"


def _config(tmp_path, text: str) -> str:
    path = tmp_path / "c.toml"
    path.write_text(text)
    return str(path)


# (argv without --out, a part of the expected message, skip condition)
NO_GPU = not torch.cuda.is_available()
CASES = {
    "triton without a GPU": (["--backend", "triton"], "backend triton cannot run on device cpu", not NO_GPU),
    "cuda on a CPU-only torch": (["--device", "cuda"], "has no CUDA support", torch.version.cuda is not None),
    "no such device index": (["--device", "cuda:99"], "cuda:99", False),
    "tpu": (["--device", "tpu"], "device must be cpu, cuda or cuda:N, got 'tpu'", False),
    "unknown neuron": (["--neuron", "Nope"], "got 'Nope'", False),
    "unknown surrogate": (["--surrogate", "Nope"], "unknown surrogate 'Nope'", False),
    "event data as latency": (["--dataset", "event-digits", "--encoding", "latency"], "already a spike sequence",
                              False),
    "bad choice": (["--loss", "mse"], "argument --loss: invalid choice", False),
    "bad number": (["--epochs", "x"], "argument --epochs: invalid int value", False),
    "negative": (["--hidden", "0"], "hidden must be a positive integer", False),
}
CONFIGS = {
    "non-numeric parameter": ('neuron = "LIF"\n[neuron_params]\ntau = "x"\n', "neuron_params.tau (neuron LIF)"),
    "unknown parameter": ('neuron = "LIF"\n[neuron_params]\ntauu = 2.0\n',
                          "neuron_params.tauu (neuron LIF): LIF has no parameter or option 'tauu'"),
    "parameter of another neuron": ('[neuron_params]\ntau = 2.0\n', "neuron_params.tau (neuron IF)"),
    "negative time constant": ('neuron = "LIF"\n[neuron_params]\ntau = -1.0\n', "must be > 0"),
    "bad option value": ('neuron = "LIF"\n[neuron_params]\ndecay_input = 3\n', "decay_input"),
    "option the neuron lacks": ('neuron = "Izhikevich"\nreset = "hard"\n', "Izhikevich has no reset option"),
    "reset inside neuron_params": ('neuron = "LIF"\n[neuron_params]\nreset = "hard"\n', "at the top level"),
    "unknown key": ("epochz = 3\n", "unknown configuration key"),
    "bad device in the file": ('device = "tpu:0"\n', "device must be"),
}


@pytest.mark.parametrize("case", CASES)
def test_bad_command_lines_fail_in_one_line_without_a_folder(case, tmp_path, capsys):
    argv, message, skip = CASES[case]
    if skip:
        pytest.skip("this machine can run it")
    out = tmp_path / "run"
    line = _one_line_error(capsys, ["train", *TINY, *argv, "--out", str(out)])
    assert line.startswith("spikeforge train: error: ") and message in line, line
    assert not out.exists()


@pytest.mark.parametrize("case", CONFIGS)
def test_bad_configs_fail_in_one_line_without_a_folder(case, tmp_path, capsys):
    text, message = CONFIGS[case]
    out = tmp_path / "run"
    line = _one_line_error(capsys, ["train", "--config", _config(tmp_path, text), *TINY, "--out", str(out)])
    assert message in line, line
    assert not out.exists()


def test_a_failure_during_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    def broken(self):
        raise RuntimeError("something deep\nin torch\n  went wrong")

    monkeypatch.setattr(trainer_module.Trainer, "fit", broken)
    line = _one_line_error(capsys, ["train", *TINY, "--out", str(tmp_path / "run")])
    assert "unexpected RuntimeError: something deep in torch went wrong" in line
    monkeypatch.setenv("SPIKEFORGE_TRACEBACK", "1")
    with pytest.raises(RuntimeError, match="something deep"):
        main(["train", *TINY, "--out", str(tmp_path / "run2")])


def test_a_failed_start_does_not_block_the_next_run(tmp_path, capsys):
    out = tmp_path / "run"
    _one_line_error(capsys, ["train", "--device", "tpu", *TINY, "--out", str(out)])
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert json.loads((out / "metrics.json").read_text())["status"] == "done"


def test_resume_of_a_run_without_checkpoints_starts_it(tmp_path, capsys):
    out = tmp_path / "run"
    cfg = make_config(epochs=1, hidden=8, steps=4, batch_size=500)
    out.mkdir()
    (out / "config.json").write_text(json.dumps(cfg.to_dict()))      # stopped before its first epoch ended
    assert "--resume" in _one_line_error(capsys, ["train", *TINY, "--out", str(out)])
    assert main(["train", "--resume", str(out), "--no-plots"]) == 0
    assert "no checkpoint yet: starting it from epoch 1" in capsys.readouterr().err
    assert json.loads((out / "metrics.json").read_text())["epochs_done"] == 1
    straight = train(cfg, tmp_path / "straight", quiet=True, plots=False)
    assert json.loads((out / "metrics.json").read_text())["test_accuracy"] == straight.test_accuracy


def test_resume_and_eval_errors_are_one_line(tmp_path, capsys):
    _one_line_error(capsys, ["train", "--resume", str(tmp_path / "nothing")])
    _one_line_error(capsys, ["eval", str(tmp_path / "nothing")])
    _one_line_error(capsys, ["train", "--resume", str(tmp_path), "--hidden", "3"])
    _one_line_error(capsys, ["eval", str(tmp_path), "--which", "middle"])


# Every combination the command accepts trains (1 epoch, 8 hidden neurons, 4 steps).
COMBINATIONS = [(d, e, l) for d in ("yinyang", "digits", "event-digits") for e in ("current", "latency")
                for l in ("max-membrane", "first-spike")]


@pytest.mark.parametrize("dataset,encoding,loss", COMBINATIONS)
def test_every_dataset_encoding_and_loss(dataset, encoding, loss, tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["train", "--dataset", dataset, "--encoding", encoding, "--loss", loss, *TINY, "--out", str(out)]
    if dataset == "event-digits" and encoding == "latency":   # event data are spikes already: refused
        assert "already a spike sequence" in _one_line_error(capsys, argv)
        assert not out.exists()
        return
    assert main(argv) == 0, capsys.readouterr().err
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "done" and 0.0 <= metrics["test_accuracy"] <= 1.0
    assert math.isfinite(metrics["history"][0]["train_loss"]) and metrics["best"]["epoch"] == 1


def test_nproc_under_torchrun_is_refused(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert main(["train", "--nproc", "2", "--epochs", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "--nproc 2 under torchrun" in err
