"""benchmarks/gpu_workload.py end to end on the CPU (Triton interpreter, tiny shapes): every
framework row of every size is present, spikeforge's are measured and agree with its
reference backend, the ratios are taken against spikeforge-triton, peers that are not
installed are skipped by name, and the time budget cuts repetitions and skips rows.
Its numbers mean nothing; what a GPU would measure is not checked here."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("triton")

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_workload.py"
PYPATH = os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))
DEFAULT = ["floor", "spikeforge-triton", "spikeforge-reference", "spikingjelly", "snntorch", "norse"]


def _run(tmp_path, *args) -> tuple[str, dict]:
    out = tmp_path / "out.json"
    env = {**os.environ, "TRITON_INTERPRET": "1", "PYTHONPATH": PYPATH}
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--T", "3", "--B", "2",
                        "--json", str(out), *args], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-2000:]
    return p.stdout, json.loads(out.read_text())


def test_smoke_every_framework_and_size(tmp_path):
    stdout, res = _run(tmp_path, "--sizes", "8,16", "--reps", "1", "--warmup", "1",
                       "--neurons", "LIF", "--alone-n", "16")
    assert "SMOKE TEST" in stdout and "x sf-triton" in stdout
    rows = {(r["n"], r["framework"]): r for r in res["workload"]}
    assert sorted(rows) == sorted((n, f) for n in (8, 16) for f in DEFAULT)
    for n in (8, 16):
        tri, ref = rows[n, "spikeforge-triton"], rows[n, "spikeforge-reference"]
        assert tri["ran_on"] == "spikeforge triton" and tri["x_sf"] == 1.0 and tri["reps"] == 1
        assert 0 < tri["rate"] < 1 and tri["wgrad_rel_err"] < 1e-5
        assert ref["mismatch"] == 0 and ref["mismatch_vs"] == "spikeforge-triton"
        assert rows[n, "floor"]["ms"] > 0 and "rate" not in rows[n, "floor"]
        for peer in ("spikingjelly", "snntorch", "norse"):
            r = rows[n, peer]
            if "error" in r:  # not installed in this environment
                assert r["error"].startswith("skipped: not importable")
            else:  # the CPU path, labelled as such, spiking like spikeforge (rounding aside)
                assert "CPU FALLBACK" in r["ran_on"] and r["mismatch"] < 0.05 and r["x_sf"] > 0
        # one table line per row, each naming its framework
        lines = [ln for ln in stdout.splitlines() if ln.startswith(f"| {n:>2} |")]
        assert len(lines) == len(DEFAULT)
    assert [(r["neuron"], r["backend"]) for r in res["alone"]] == [("LIF", "triton"), ("LIF", "reference")]


def test_budget_cuts_reps_then_skips(tmp_path):
    _, res = _run(tmp_path, "--sizes", "8,16", "--reps", "3", "--warmup", "1", "--budget", "0.001",
                  "--frameworks", "floor,spikeforge-reference", "--neurons", "none")
    rows = {(r["n"], r["framework"]): r for r in res["workload"]}
    assert rows[8, "floor"]["reps"] == 1 and "time budget" in rows[8, "floor"]["note"]
    for f in ("floor", "spikeforge-reference"):
        assert rows[16, f]["error"].startswith("skipped: over the time budget")
    # no spikeforge-triton row: no ratios, but the table still has its rows
    assert "x_sf" not in rows[8, "spikeforge-reference"]


def test_unknown_framework_is_refused():
    p = subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", "--frameworks", "floor,brian2"],
                       capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": PYPATH})
    assert p.returncode == 2 and "unknown framework(s) brian2" in p.stderr
