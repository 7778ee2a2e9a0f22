"""Smoke test of benchmarks/xylo_quant.py (tiny sizes) and its argument errors."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
xylo_quant = pytest.importorskip("xylo_quant")


def test_one_tiny_seed_prints_the_table(capsys):
    xylo_quant.main(["--seeds", "0", "--epochs", "1", "--hidden", "8", "--qat-epochs", "1"])
    out = capsys.readouterr().out
    assert "seed 0: float" in out and "float readout on integer hidden spikes" in out
    assert "| 0 |" in out and "| mean |" in out


@pytest.mark.parametrize("args,msg", [(["--epochs", "0"], "--epochs must be positive"),
                                      (["--qat-epochs", "-1"], "--qat-epochs must be >= 0"),
                                      (["--threshold-max", "0"], "--threshold-max must be positive")])
def test_bad_arguments_are_argparse_errors(args, msg, capsys):
    with pytest.raises(SystemExit):
        xylo_quant.main(args)
    assert msg in capsys.readouterr().err
