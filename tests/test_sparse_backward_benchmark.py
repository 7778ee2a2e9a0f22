"""benchmarks/sparse_backward.py runs end to end on a tiny network, with either readout for the dense
network, and prints one row per (T, alpha) (its forward asserts that dense and sparse spike alike)."""
from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import sparse_backward as bench  # noqa: E402


@pytest.mark.parametrize("readout", ["linear", "spike"])
def test_speed_table_runs(readout, capsys):
    bench.main(["--T", "6", "--B", "2", "--H", "12", "--alphas", "2,4", "--reps", "1", "--warmup", "1",
                "--threads", "1", "--plot", "", "--dense-readout", readout])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("|   6 |") or ln.startswith("| 6 |")]
    assert len(rows) == 2, out
    assert ("dense spike_linear" if readout == "spike" else "dense F.linear") in out


def test_conv_speed_table_runs(capsys):
    """benchmarks/sparse_backward_conv.py on tiny layers: one row per alpha (dense and sparse spike alike)."""
    import sparse_backward_conv as conv

    conv.main(["--T", "3", "--B", "2", "--S", "8", "--C0", "4", "--C1", "6", "--C2", "8", "--density", "0.1",
               "--alphas", "2,8", "--reps", "1", "--warmup", "1", "--threads", "1"])
    out = capsys.readouterr().out
    rows = [ln for ln in out.splitlines() if ln.startswith("|     2 |") or ln.startswith("|     8 |")]
    assert len(rows) == 2, out
