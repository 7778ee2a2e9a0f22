"""Smoke test of benchmarks/shd_workload.py's child code path (spikeforge only, tiny sizes)."""
from __future__ import annotations

import argparse
import os
import sys

import pytest

BENCH = os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks")
sys.path.insert(0, BENCH)
shd_workload = pytest.importorskip("shd_workload")
_common = pytest.importorskip("_common")


@pytest.mark.parametrize("framework", ["spikeforge-cpu", "spikeforge-cpu-sparse", "spikeforge-reference"])
def test_child_in_process(framework):
    a = argparse.Namespace(framework=framework, T=6, B=3, H=16, density=0.05, reps=1, threads=1)
    r = shd_workload.child(a)
    assert r["total_ms"] > 0 and r["peak_rss_mb"] > 0 and 2.5 < r["loss"] < 3.5   # ~ln 20 at the start
    assert len(r["rates"]) == 2
    if framework.endswith("sparse"):
        assert [p for p, _ in r["paths"]] == ["dense"] * 4     # tiny products: AUTO stays dense (MIN_WORK)


def test_child_process_and_table():
    env = _common.child_env(1, False)
    r = _common.run_child(shd_workload.__file__, ["spikeforge-cpu-sparse", 5, 2, 8, 0.05, 1, 1, "-"], env, 300)
    assert "error" not in r, r
    rows = shd_workload.table({"spikeforge-cpu": r, "spikeforge-cpu-sparse": r, "x": {"error": "boom"}}, 5)
    assert rows[0][-3:-1] == ["1.00", "1.00"] and rows[2][2] == "boom"


@pytest.mark.parametrize("args,msg", [(["--T", "0"], "--T: expected a positive integer"),
                                      (["--reps", "0"], "--reps: expected a positive integer"),
                                      (["--density", "1.5"], "--density: expected a number in (0, 1)"),
                                      (["--frameworks", "nope"], "--frameworks: unknown nope")])
def test_bad_arguments_are_argparse_errors(args, msg):
    import subprocess
    import sys
    from pathlib import Path
    script = Path(__file__).resolve().parents[1] / "benchmarks" / "shd_workload.py"
    r = subprocess.run([sys.executable, str(script), *args], capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and msg in r.stderr


def test_training_check_on_real_shd_files(tmp_path, capsys):
    """--train --data-root reads SHD files (here a tiny one in the published layout) instead of the stand-in."""
    import numpy as np
    from test_data_readers import write_shd

    (tmp_path / "SHD").mkdir()
    rng = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 5)):
        samples = [(np.sort(rng.uniform(0, 0.5, 8)), rng.integers(0, 700, 8)) for _ in range(n)]
        write_shd(tmp_path / "SHD" / f"shd_{split}.h5", samples, np.arange(n) % 20)
    x, y = shd_workload.real_shd(tmp_path, True, 10, 6)
    assert x.shape == (6, 10, 700) and int(x.max()) == 1 and y.tolist() == list(range(10))
    assert int(x[:, 0].sum()) == len(set(zip(*np.nonzero(x[:, 0].numpy()))))    # 0/1 frames
    shd_workload.main(["--train", "--data-root", str(tmp_path), "--train-T", "6", "--epochs", "1", "--B", "4",
                       "--H", "8", "--threads", "1"])
    out = capsys.readouterr().out
    assert "12 train / 5 test samples of the SHD files under" in out and "|     1 |" in out
    with pytest.raises(SystemExit) as e:
        shd_workload.main(["--train", "--data-root", str(tmp_path / "none")])
    assert e.value.code == 2 and "shd_train.h5 not found" in capsys.readouterr().err
