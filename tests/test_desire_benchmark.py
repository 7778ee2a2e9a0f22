"""Smoke test of benchmarks/desire_digits.py: a tiny run learns, bad arguments."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
desire_digits = pytest.importorskip("desire_digits")


def test_tiny_run_beats_chance():
    cfg = desire_digits.Config(hidden=32, epochs=2, train_limit=256)
    r = desire_digits.run_one(cfg, 0)
    assert r["test_accuracy"] > 0.5 and r["train_accuracy"] > 0.5     # chance: 10 %


def test_bad_arguments_are_argparse_errors(capsys):
    with pytest.raises(SystemExit) as e:
        desire_digits.main(["--hidden", "0"])
    assert e.value.code == 2 and "--hidden must be >= 1, got 0" in capsys.readouterr().err
