"""Smoke tests of benchmarks/hil_yinyang.py and benchmarks/nonideal_yinyang.py (tiny sizes) and
their argument errors."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
hil_yinyang = pytest.importorskip("hil_yinyang")
nonideal_yinyang = pytest.importorskip("nonideal_yinyang")


def test_hil_benchmark_one_tiny_seed(tmp_path, capsys):
    png = tmp_path / "hil.png"
    hil_yinyang.main(["--seeds", "0", "--epochs", "1", "--hidden", "8", "--ft-epochs", "1", "--train-samples", "300",
                      "--plot", str(png)])
    out = capsys.readouterr().out
    assert "seed 0: software" in out and "in the loop" in out and "| mean |" in out
    assert png.stat().st_size > 1000


def test_nonideal_benchmark_one_tiny_sweep(capsys):
    nonideal_yinyang.main(["--epochs", "1", "--hidden", "8", "--ft-epochs", "1", "--chips", "2", "--only", "IRDrop",
                           "--train-samples", "300"])
    out = capsys.readouterr().out
    assert out.count("| IRDrop | alpha") == 4 and "noise-aware" in out


@pytest.mark.parametrize("module, args, msg", [
    ("hil_yinyang", ["--ft-epochs", "0"], "--ft-epochs must be positive"),
    ("hil_yinyang", ["--mismatch", "-1"], "--mismatch must be >= 0"),
    ("nonideal_yinyang", ["--chips", "0"], "--chips must be positive"),
    ("nonideal_yinyang", ["--only", "Gravity"], "unknown non-idealities ['Gravity']"),
])
def test_bad_arguments_are_argparse_errors(module, args, msg, capsys):
    with pytest.raises(SystemExit):
        {"hil_yinyang": hil_yinyang, "nonideal_yinyang": nonideal_yinyang}[module].main(args)
    assert msg in capsys.readouterr().err

