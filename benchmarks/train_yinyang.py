"""End-to-end training benchmark: the ``spikeforge train`` command, three seeds, wall time.

Each run is a fresh process (``python -m spikeforge.train.cli train ...``), so the time includes
start-up, data generation, training, the test evaluation and the plots. Prints each seed's test
accuracy and wall / CPU time, then the mean, then the result as a row of the README's table.

    .venv/bin/python benchmarks/train_yinyang.py                      # the default run (targets: >= 99 %, <= 30 s)
    .venv/bin/python benchmarks/train_yinyang.py --encoding latency   # spike-time input (target >= 98 %)
    .venv/bin/python benchmarks/train_yinyang.py --dataset digits     # (target >= 97 %)
    .venv/bin/python benchmarks/train_yinyang.py --dataset event-digits
    .venv/bin/python benchmarks/train_yinyang.py --readme             # all four: the README's whole table
Other arguments are passed on to ``spikeforge train`` (e.g. ``--epochs 40``).
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(seed: int, extra: list[str], out: Path) -> dict:
    cmd = [sys.executable, "-m", "spikeforge.train.cli", "train", "--seed", str(seed), "--out", str(out), "--quiet",
           *extra]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if proc.returncode != 0:
        sys.exit(f"seed {seed} failed ({proc.returncode}):\n{proc.stderr}")
    metrics = json.loads((out / "metrics.json").read_text())
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return {"seed": seed, "test_accuracy": metrics["test_accuracy"], "wall_s": wall, "cpu_s": cpu,
            "train_s": metrics["train_seconds"], "epochs": metrics["epochs_done"]}


# The rows of the README's table ("The main job"): label, arguments of ``spikeforge train``.
README_RUNS = [("`spikeforge train` (Yin-Yang)", []),
               ("`--encoding latency`", ["--encoding", "latency"]),
               ("`--dataset digits`", ["--dataset", "digits"]),
               ("`--dataset event-digits`", ["--dataset", "event-digits"])]


def run_seeds(seeds: list[int], extra: list[str], root: Path) -> list[dict]:
    """One fresh training process per seed; prints each result and the mean."""
    rows = []
    for seed in seeds:
        out = root / f"seed{seed}"
        if out.exists():
            sys.exit(f"{out} exists; remove it or choose another --keep")
        r = run_once(seed, extra, out)
        rows.append(r)
        print(f"seed {seed}: test accuracy {100 * r['test_accuracy']:.2f}%  wall {r['wall_s']:.1f} s  "
              f"(training {r['train_s']:.1f} s, process CPU {r['cpu_s']:.1f} s, {r['epochs']} epochs)", flush=True)
    accs = [r["test_accuracy"] for r in rows]
    walls = [r["wall_s"] for r in rows]
    spread = f" +- {100 * statistics.stdev(accs):.2f}" if len(accs) > 1 else ""
    print(f"mean test accuracy {100 * statistics.mean(accs):.2f}%{spread} (min {100 * min(accs):.2f}%), "
          f"mean wall {statistics.mean(walls):.1f} s (max {max(walls):.1f} s), "
          f"load average now {os.getloadavg()[0]:.2f}", flush=True)
    return rows


def table(results: list[tuple[str, list[dict]]]) -> str:
    """The README's table: mean and per-seed test accuracy, mean wall and CPU time of one run
    (on a shared machine the wall time grows with the load; the CPU time much less)."""
    seeds = " / ".join(str(r["seed"]) for r in results[0][1])
    lines = [f"| run | mean test accuracy | per seed ({seeds}) | wall time per run | CPU time per run |",
             "|---|---|---|---|---|"]
    for label, rows in results:
        accs = [100 * r["test_accuracy"] for r in rows]
        lines.append(f"| {label} | {statistics.mean(accs):.2f} % | {' / '.join(f'{a:.2f}' for a in accs)} | "
                     f"{statistics.mean(r['wall_s'] for r in rows):.1f} s | "
                     f"{statistics.mean(r['cpu_s'] for r in rows):.1f} s |")
    return "\n".join(lines)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--readme", action="store_true", help="run every row of the README's table and print the table")
    p.add_argument("--keep", metavar="DIR", help="keep the run folders here")
    p.add_argument("--json", metavar="FILE", help="also write the results as JSON")
    a, extra = p.parse_known_args()
    if a.readme and extra:
        p.error(f"--readme runs the README's own configurations; drop {extra}")
    runs = README_RUNS if a.readme else [(f"`spikeforge train {' '.join(extra)}`".replace(" `", "`"), extra)]
    root = Path(a.keep) if a.keep else Path(tempfile.mkdtemp(prefix="sf-bench-"))
    results = []
    for i, (label, args) in enumerate(runs):
        print(f"spikeforge train {' '.join(args) or '(defaults)'}; {os.cpu_count()} CPUs, "
              f"load average {os.getloadavg()[0]:.2f}; run folders under {root}", flush=True)
        results.append((label, run_seeds(a.seeds, args, root / f"run{i}" if a.readme else root)))
    print("\n" + table(results))
    if a.json:
        Path(a.json).write_text(json.dumps([{"run": label, "args": args, "runs": rows}
                                            for (label, rows), (_, args) in zip(results, runs)], indent=2) + "\n")


if __name__ == "__main__":
    main()
