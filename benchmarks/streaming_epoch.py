"""Epoch time of a data set read from files: streamed (``spikeforge train --dataset nmnist``,
with 0 or more DataLoader workers, with and without the readers' cache) against the same split
held whole in memory, on a generated N-MNIST-format folder (nothing is downloaded).

    .venv/bin/python benchmarks/streaming_epoch.py --per-class 100 --events 4000

Each row: seconds per epoch (training + validation), the median of ``--epochs`` epochs after
the first (the first is reported apart: it fills the cache). Worker processes start anew for
every epoch and every evaluation. Kernels are compiled by a warm-up epoch before the rows. "in memory" does not include binning the split once (reported as
"load"). The last row bins 0/1 frames, so the input layer is a ``SpikeLinear`` (sparse path).
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from spikeforge.train import Trainer, make_config
from spikeforge.train.splits import Tensors
from spikeforge.train.trainer import run_settings


def write_nmnist(root: Path, per_class: int, events: int, seed: int = 0) -> None:
    """``root/NMNIST/{Train,Test}/<digit>/<id>.bin`` in the 40-bit format, ``events`` per sample."""
    rng = np.random.default_rng(seed)
    for split, n in (("Train", per_class), ("Test", max(per_class // 6, 1))):
        for d in range(10):
            folder = root / "NMNIST" / split / str(d)
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                t = np.sort(rng.integers(0, 300_000, events))
                raw = np.zeros((events, 5), np.uint8)
                raw[:, 0] = np.clip(3 * d + rng.integers(0, 4, events), 0, 33)
                raw[:, 1] = rng.integers(0, 34, events)
                raw[:, 2] = (rng.integers(0, 2, events) << 7) | (t >> 16)
                raw[:, 3], raw[:, 4] = (t >> 8) & 0xFF, t & 0xFF
                (folder / f"{k:05d}.bin").write_bytes(raw.tobytes())


def epoch_times(trainer: Trainer, epochs: int) -> list[float]:
    out = []
    for _ in range(epochs):
        t0 = time.perf_counter()
        trainer._one_epoch()
        out.append(time.perf_counter() - t0)
    return out


def in_memory(trainer: Trainer) -> float:
    t0 = time.perf_counter()
    t = trainer.task
    whole = [Tensors(*s.take(torch.arange(len(s.labels)))) for s in (t.train, t.val, t.test)]
    trainer.task = type(t)(t.classes, t.n_in, *whole)
    return time.perf_counter() - t0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-class", type=int, default=100, help="train files per digit (default 100)")
    ap.add_argument("--events", type=int, default=4000, help="events per file (N-MNIST: about 4000)")
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=3, help="epochs per row (the first reported apart)")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 2])
    a = ap.parse_args(argv)
    for name in ("per_class", "events", "steps", "hidden", "batch_size"):
        if getattr(a, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be a positive integer")
    if a.epochs < 2:
        ap.error("--epochs must be at least 2")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_nmnist(root, a.per_class, a.events)
        os.environ["SPIKEFORGE_CACHE"] = str(root / "cache")
        base = dict(dataset="nmnist", data_root=str(root), steps=a.steps, hidden=a.hidden, batch_size=a.batch_size,
                    epochs=a.epochs)
        rows = [("in memory", dict(), True)]
        rows += [(f"streamed, {w} workers", dict(workers=w), False) for w in a.workers]
        rows += [("streamed, cache", dict(cache=True), False),
                 ("streamed, --frames binary", dict(frames="binary"), False)]
        with run_settings(make_config(**base)):             # compile the kernels before timing
            epoch_times(Trainer(make_config(**base), root / "warm", quiet=True, plots=False), 1)
        n = None
        print(f"| split | first epoch s | epoch s (median) | load s |\n|---|---|---|---|")
        for label, kw, whole in rows:
            cfg = make_config(**base, **kw)
            trainer = Trainer(cfg, root / "run", quiet=True, plots=False)
            n = len(trainer.task.train.labels)
            load = in_memory(trainer) if whole else 0.0
            with run_settings(cfg):                      # one torch thread, as spikeforge train
                times = epoch_times(trainer, a.epochs)
            print(f"| {label} | {times[0]:.2f} | {statistics.median(times[1:]):.2f} | {load:.2f} |", flush=True)
        print(f"\n{n} training samples of {a.events} events, T={a.steps}, batch {a.batch_size}, hidden {a.hidden}, "
              f"1 torch thread, {os.cpu_count()} CPUs", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
