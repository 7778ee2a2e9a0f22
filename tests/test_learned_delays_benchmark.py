"""benchmarks/learned_delays.py: the task's data, a short run, the table, bad arguments."""
from __future__ import annotations

import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
learned_delays = pytest.importorskip("learned_delays")
Task = learned_delays.Task


def test_data_puts_each_class_pattern_at_a_random_start():
    task = Task(jitter=0.0, noise=0.0)
    g = torch.Generator().manual_seed(0)
    offsets = torch.randint(0, task.max_delay + 1, (task.classes, task.channels), generator=g)
    x, y = learned_delays.make_data(task, 64, offsets, g)
    assert x.shape == (task.steps, 64, task.channels) and y.shape == (64,)
    assert torch.equal(x.sum(0), torch.ones(64, task.channels))          # one spike per channel, every class
    times = x.argmax(0)                                                   # (n, C)
    assert torch.equal(times - times.min(1, keepdim=True).values,
                       offsets[y] - offsets[y].min(1, keepdim=True).values)
    assert len(set(times.min(1).values.tolist())) > 3                     # the start varies


def test_short_run_the_ideal_delays_solve_it_and_learned_ones_move():
    ideal = learned_delays.train_one(Task(train=256, test=256), "fixed-ideal", 0, epochs=4, batch=64)
    assert ideal["test_accuracy"] > 0.9 and ideal["mean_delay_change"] == 0
    learned = learned_delays.train_one(Task(train=256, test=256), "learned-linear", 0, epochs=2, batch=64)
    assert learned["mean_delay_change"] > 0 and learned["test_accuracy_interpolated"] is not None
    text = learned_delays.table([ideal, learned], [0])
    assert "| fixed-ideal | " in text and "| learned-linear | " in text and text.count("\n") == 3


@pytest.mark.parametrize("args,msg", [(["--epochs", "0"], "--epochs must be >= 1, got 0"),
                                      (["--variants", "nope"], "invalid choice: 'nope'")])
def test_bad_arguments_are_argparse_errors(args, msg, capsys):
    with pytest.raises(SystemExit) as e:
        learned_delays.main(args)
    assert e.value.code == 2 and msg in capsys.readouterr().err
