"""Smoke tests of the issue-12 benchmark scripts: tiny runs, the outputs they report, bad arguments."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
dc = pytest.importorskip("stdp_diehl_cook")
vdsp_digits = pytest.importorskip("vdsp_digits")
rstdp_task = pytest.importorskip("rstdp_task")


def test_label_assignment_and_classification_by_hand():
    resp = torch.tensor([[5.0, 0.0, 1.0], [4.0, 1.0, 0.0], [0.0, 3.0, 2.0]])   # 3 samples, 3 neurons
    labels = torch.tensor([0, 0, 1])
    assignment = dc.assign(resp, labels, classes=2)
    assert assignment.tolist() == [0, 1, 1]
    assert dc.classify(torch.tensor([[0.0, 1.0, 3.0], [2.0, 0.0, 0.0]]), assignment, classes=2).tolist() == [1, 0]


def test_diehl_cook_tiny_run_learns_and_moves_thresholds():
    cfg = dc.Config(neurons=20, steps=30, eval_steps=30, epochs=1, train_limit=256)
    r = dc.run_one(cfg, 0)
    assert 0.3 < r["test_accuracy"] <= 1.0          # chance: 10 %; 48 % measured
    assert r["theta_mean"] > 0 and r["mean_test_spikes"] > 0


@pytest.mark.parametrize("mode", ["supervised", "unsupervised"])
def test_vdsp_script_runs_with_its_rule(mode, capsys):
    vdsp_digits.main(["--mode", mode, "--seeds", "0", "--neurons", "5", "--epochs", "1", "--train-limit", "32",
                      "--steps", "10", "--eval-steps", "10"])
    out = capsys.readouterr().out
    assert f"# {mode}," in out and "VDSP(a_plus=" in out and "mean test accuracy over 1 seed(s)" in out


def test_vdsp_supervised_tiny_run_beats_chance():
    cfg = dc.Config(epochs=3, train_limit=512, steps=30, eval_steps=30, lr=0.3)
    r = vdsp_digits.run_supervised(cfg, 0, vdsp_digits.VDSP(a_plus=1e-4, a_minus=0.0, v_rest=0.2), 0.1, 1,
                                   vdsp_digits.Bound.HARD)
    assert r["test_accuracy"] > 0.4                 # chance: 10 %; 65 % measured


def test_rstdp_agent_beats_chance_after_training(tmp_path):
    cfg = rstdp_task.Config(positions=5, episodes=30, eval_trials=5)
    r = rstdp_task.run_one(cfg, 0)
    assert r["greedy_after"] >= 0.9 > 0.5                  # chance is 50 %
    assert rstdp_task.pooled(r["curve"], 20, 30) > 0.75
    path = tmp_path / "curve.png"
    rstdp_task.plot([r], cfg, str(path), window=5)
    assert path.stat().st_size > 1000


def test_pooled_fraction():
    assert rstdp_task.pooled([(1, 1), (1, 3), (2, 4)], 1, 3) == pytest.approx(3 / 7)


@pytest.mark.parametrize("module,args,msg", [
    (dc, ["--epochs", "0"], "--epochs must be >= 1, got 0"),
    (vdsp_digits, ["--neurons", "0"], "--neurons must be >= 1, got 0"),
    (rstdp_task, ["--positions", "2"], "--positions must be >= 3, got 2"),
])
def test_bad_arguments_are_argparse_errors(module, args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        module.main(args)
    assert e.value.code == 2 and msg in capsys.readouterr().err
