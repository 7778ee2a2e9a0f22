"""Learned synaptic delays against fixed ones on a coincidence-detection task (issue 11).

The task: ``C`` input channels each spike once per sample, plus noise spikes; the class
(one of ``K``) is which pattern of relative spike times the channels follow: class ``k`` fires
channel ``c`` at ``t0 + offset[k, c]`` (``offset`` in ``0..D`` drawn per seed, ``t0`` random,
each spike one step early or late with probability 0.1 each). Every class has the same spike
count per channel, so only timing tells them apart. The network is one layer of coincidence
detectors: ``Delay(D, C, per=SYNAPSE, out_features=K)`` (a delay per weight, weights started
in ``[0.2, 1]``) -> ``LI(tau=2)`` readout (leaks half per step), trained with the max-membrane
cross-entropy (Adam, weights lr 0.01, delays lr 0.3 steps). Readout ``k`` delaying channel
``c`` by ``D - offset[k, c]`` sees all of class ``k``'s spikes at once.

Variants (same data, same initial weights per seed):
    fixed-zero       every delay 0 (weights trained)
    fixed-random     delays drawn from 0..D (weights trained)
    learned-linear   the same random start, delays learned, linear interpolation
    learned-gaussian the same random start, delays learned, Gaussian kernel whose sigma
                     anneals linearly from D/2 to 0.5 (as DCLS)
    fixed-ideal      delays D - offset (the answer; weights trained): the ceiling
Test accuracy is measured in ``eval()``: learned delays rounded to whole steps (the integer path).

    .venv/bin/python benchmarks/learned_delays.py                  # 3 seeds, the table of RESULTS.md
    .venv/bin/python benchmarks/learned_delays.py --seeds 0 --epochs 5 --json out.json
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

import spikeforge as sf
from spikeforge.nn import DelayInterpolation, DelayPer

VARIANTS = ("fixed-zero", "fixed-random", "learned-linear", "learned-gaussian", "fixed-ideal")


@dataclass(frozen=True)
class Task:
    channels: int = 8       # C
    classes: int = 8        # K
    max_delay: int = 12     # D: offsets and delays in 0..D
    steps: int = 40         # T
    jitter: float = 0.1     # probability of each spike moving one step earlier, and the same for later
    noise: float = 0.02     # extra spikes per channel and step
    train: int = 1024
    test: int = 1024


def make_data(task: Task, n: int, offsets: Tensor, g: torch.Generator) -> tuple[Tensor, Tensor]:
    """Spikes ``(T, n, C)`` and labels ``(n,)``."""
    labels = torch.randint(0, task.classes, (n,), generator=g)
    t0 = torch.randint(1, task.steps - task.max_delay - 1, (n, 1), generator=g)
    u = torch.rand(n, task.channels, generator=g)
    shake = (u < task.jitter).long() - (u > 1 - task.jitter).long()
    times = t0 + offsets[labels] + shake
    x = (torch.rand(task.steps, n, task.channels, generator=g) < task.noise).float()
    x[times.T, torch.arange(n).view(1, n), torch.arange(task.channels).view(-1, 1)] = 1.0
    return x, labels


def make_net(task: Task, variant: str, seed: int, offsets: Tensor) -> nn.Sequential:
    g = torch.Generator().manual_seed(1000 + seed)
    shape = (task.classes, task.channels)
    start = torch.randint(0, task.max_delay + 1, shape, generator=g)
    if variant == "fixed-zero":
        start = torch.zeros_like(start)
    elif variant == "fixed-ideal":
        start = task.max_delay - offsets
    kw = {}
    if variant.startswith("learned"):
        gauss = variant == "learned-gaussian"
        kw = dict(learn_delays=True, interpolation=DelayInterpolation.GAUSSIAN if gauss else DelayInterpolation.LINEAR,
                  sigma=task.max_delay / 2 if gauss else None)
    delay = sf.nn.Delay(task.max_delay, task.channels, per=DelayPer.SYNAPSE, out_features=task.classes,
                        delays=start, **kw)
    with torch.no_grad():      # the same weights for every variant of a seed
        delay.weight.copy_(0.2 + 0.8 * torch.rand(shape, generator=g))
        delay.bias.zero_()
    return nn.Sequential(delay, sf.nn.LI(tau=2.0))


def accuracy(net: nn.Module, x: Tensor, y: Tensor) -> float:
    net.eval()
    with torch.no_grad():
        return sf.losses.accuracy(net(x).amax(0), y)


def train_one(task: Task, variant: str, seed: int, epochs: int, batch: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    offsets = torch.randint(0, task.max_delay + 1, (task.classes, task.channels), generator=g)
    x_tr, y_tr = make_data(task, task.train, offsets, g)
    x_te, y_te = make_data(task, task.test, offsets, g)
    net = make_net(task, variant, seed, offsets)
    delay = net[0]
    groups = [{"params": [p for n, p in net.named_parameters() if n != "0.learned_delays"], "lr": 0.01}]
    if delay.learned_delays is not None:
        groups.append({"params": [delay.learned_delays], "lr": 0.3})
    opt = torch.optim.Adam(groups)
    start = delay.delays.clone()
    t_start = time.perf_counter()
    for epoch in range(epochs):
        if variant == "learned-gaussian":
            delay.sigma = task.max_delay / 2 + (0.5 - task.max_delay / 2) * epoch / max(epochs - 1, 1)
        net.train()
        order = torch.randperm(task.train, generator=g)
        for i in range(0, task.train, batch):
            idx = order[i:i + batch]
            loss = sf.losses.max_membrane_ce(net(x_tr[:, idx]), y_tr[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    seconds = time.perf_counter() - t_start
    moved = float((delay.delays - start).abs().float().mean())
    interpolated = None
    if delay.learned_delays is not None:          # the training-mode read of the same delays
        with torch.no_grad():
            interpolated = sf.losses.accuracy(net.train()(x_te).amax(0), y_te)
    return {"variant": variant, "seed": seed, "test_accuracy": accuracy(net, x_te, y_te),
            "test_accuracy_interpolated": interpolated,
            "train_accuracy": accuracy(net, x_tr, y_tr), "train_s": seconds, "mean_delay_change": moved}


def _interpolated(rows: list[dict]) -> str:
    got = [r["test_accuracy_interpolated"] for r in rows if r["test_accuracy_interpolated"] is not None]
    return f"{100 * statistics.mean(got):.1f} %" if got else "-"


def table(rows: list[dict], seeds: list[int]) -> str:
    out = ["| variant | " + " | ".join(f"seed {s}" for s in seeds)
           + " | mean test | mean train | mean test, interpolated | s / run |",
           "|---|" + "---|" * (len(seeds) + 4)]
    for v in VARIANTS:
        mine = [r for r in rows if r["variant"] == v]
        if not mine:
            continue
        accs = [100 * r["test_accuracy"] for r in mine]
        out.append(f"| {v} | " + " | ".join(f"{a:.1f} %" for a in accs)
                   + f" | {statistics.mean(accs):.1f} % | {100 * statistics.mean(r['train_accuracy'] for r in mine):.1f} %"
                   + f" | {_interpolated(mine)} | {statistics.mean(r['train_s'] for r in mine):.1f} |")
    return "\n".join(out)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=15)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--json", help="also write the rows here")
    args = ap.parse_args(argv)
    for name in ("epochs", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    task = Task()
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.processor() or platform.machine()}; Python "
          f"{platform.python_version()}; torch {torch.__version__}; {args.threads} thread(s)")
    print(f"# task: {task}; batch={args.batch}, epochs={args.epochs}; chance = "
          f"{100 / task.classes:.0f} %")
    rows = []
    for seed in args.seeds:
        for v in args.variants:
            rows.append(train_one(task, v, seed, args.epochs, args.batch))
            r = rows[-1]
            print(f"seed {seed} {v:17s} test {100 * r['test_accuracy']:5.1f} %  train {100 * r['train_accuracy']:5.1f} %"
                  f"  {r['train_s']:5.1f} s  mean |delay change| {r['mean_delay_change']:.2f} steps", flush=True)
    print()
    print(table(rows, args.seeds))
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
