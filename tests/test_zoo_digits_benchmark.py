"""benchmarks/zoo_digits.py: the data, a two-step spikeforge run, the table, bad arguments
(the SpikingJelly side needs .venv-peers and is not run here)."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
zoo = pytest.importorskip("zoo_digits")


def test_digits_are_upsampled_to_three_channel_32x32():
    x, y = zoo.load_digits("test")
    assert x.shape == (359, 3, 32, 32) and y.shape == (359,)
    assert float(x.min()) >= 0 and float(x.max()) <= 1 and torch.equal(x[:, 0], x[:, 2])
    assert set(y.tolist()) == set(range(10))


def test_two_steps_of_a_small_model_and_the_table(monkeypatch):
    full = zoo.load_digits
    monkeypatch.setattr(zoo, "load_digits", lambda split: tuple(t[:8] for t in full(split)))
    threads = torch.get_num_threads()
    try:
        rows = zoo.child("vgg11", ["spikeforge"], steps=2, sj_steps=2, batch=4, T=1, seed=0, threads=1)
    finally:
        torch.set_num_threads(threads)
    (row,) = rows
    assert row["framework"] == "spikeforge" and row["steps"] == 2 and row["params"] == 679_882
    assert row["ms_per_step"] > 0 and 0 <= row["test_accuracy"] <= 1
    sj = {**row, "framework": "spikingjelly", "ms_per_step_paired": 2 * row["ms_per_step_paired"]}
    text = zoo.table([row, sj])
    assert text.count("\n") == 2 and "| vgg11 | 679,882 |" in text and text.rstrip().endswith("| 2.00 |")


@pytest.mark.parametrize("args,msg", [(["--steps", "0"], "--steps: must be >= 1, got 0"),
                                      (["--models", "vgg12"], "invalid choice: 'vgg12'")])
def test_bad_arguments_are_argparse_errors(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        zoo.main(args)
    assert e.value.code == 2 and msg in capsys.readouterr().err
