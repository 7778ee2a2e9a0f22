"""Yin-Yang accuracy against the strength of each device non-ideality (``spikeforge.quant.nonideal``),
with and without noise-aware training (issue 10 section 3).

One model is trained in software (``spikeforge.train.train``: current input, IF hidden layer,
LI readout, max-membrane loss). For every non-ideality and strength, the transform is put on
both weight matrices (``nonideal.apply``) and the test accuracy measured on ``--chips`` device
seeds (1000, 1001, ...: each a different draw of the fixed quantities; read noise fresh per
pass), mean and spread. Noise-aware training: from the software weights, ``--ft-epochs`` of
Adam with the same transform active, a fresh device seed at every batch (so the network
learns the distribution, not one chip; seeds 0.. never overlap the evaluation's 1000..), then
the same evaluation. A control row fine-tunes for as long without any transform.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/nonideal_yinyang.py      # ~15 min on 1 thread
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

import spikeforge as sf
from spikeforge.losses import max_membrane_ce
from spikeforge.quant import nonideal as ni
from spikeforge.train import load_run, make_config, train

HERE = Path(__file__).resolve().parent


class Subset(NamedTuple):
    """The first samples of a split (what ``fine_tune`` reads: ``data``, ``targets``, ``len``)."""

    data: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)

# (name, strength label, [(strength, transform)]), weakest first
SWEEPS = [
    ("Quantize", "levels", [(v, ni.Quantize(v)) for v in (32, 8, 4, 3)]),
    ("Variation", "sigma", [(v, ni.Variation(v)) for v in (0.1, 0.2, 0.4, 0.6)]),
    ("ReadNoise", "sigma", [(v, ni.ReadNoise(v)) for v in (0.02, 0.05, 0.1, 0.2)]),
    ("Drift", "t / t0 (nu 0.05, nu_std 0.02)", [(v, ni.Drift(t=v, nu=0.05, nu_std=0.02)) for v in (1e2, 1e4, 1e6, 1e8)]),
    ("StuckAt", "p_zero = p_max", [(v, ni.StuckAt(p_zero=v, p_max=v)) for v in (0.01, 0.03, 0.1, 0.2)]),
    ("IRDrop", "alpha", [(v, ni.IRDrop(v)) for v in (0.1, 0.3, 0.5, 0.8)]),
]


def sequence(x: torch.Tensor, steps: int) -> torch.Tensor:
    return x.unsqueeze(0).expand(steps, -1, -1)


@torch.no_grad()
def accuracy(net, x, y, transform=None, seed: int = 1000) -> float:
    if transform is None:
        return (net(x).amax(0).argmax(1) == y).double().mean().item()
    with ni.apply(net, transform, seed=seed):
        return (net(x).amax(0).argmax(1) == y).double().mean().item()


def on_chips(net, x, y, transform, chips: int) -> tuple[float, float]:
    accs = [accuracy(net, x, y, transform, 1000 + c) for c in range(chips)]
    return statistics.mean(accs), (statistics.stdev(accs) if len(accs) > 1 else 0.0)


def fine_tune(net, data, steps: int, epochs: int, lr: float, batch: int, transform=None):
    """``epochs`` of Adam (cosine to 0) with ``transform`` active, a new device seed per batch."""
    net = copy.deepcopy(net)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs * math.ceil(len(data) / batch))
    g, k = torch.Generator().manual_seed(0), 0
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(batch):
            x, y = sequence(data.data[idx], steps), data.targets[idx]
            if transform is None:
                loss = max_membrane_ce(net(x), y)
            else:
                with ni.apply(net, transform, seed=k):
                    loss = max_membrane_ce(net(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            k += 1
    return net


def plot(results: dict, baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(11, 6.5))
    for ax, (name, label, _) in zip(axes.flat, SWEEPS):
        rows = results[name]
        xs = list(range(len(rows)))
        for key, style, text in (("plain", "o-", "trained in software"), ("aware", "s-", "noise-aware training")):
            ax.errorbar(xs, [100 * r[key][0] for r in rows], yerr=[100 * r[key][1] for r in rows], fmt=style,
                        capsize=3, label=text)
        ax.axhline(100 * baseline, color="gray", ls="--", lw=1, label="no non-ideality")
        ax.set_xticks(xs, [f"{r['strength']:g}" for r in rows])
        ax.set_title(name, fontsize=10)
        ax.set_xlabel(label, fontsize=8)
        ax.set_ylim(30, 100)
    axes[0, 0].set_ylabel("test accuracy (%)")
    axes[1, 0].set_ylabel("test accuracy (%)")
    axes[0, 0].legend(fontsize=7, loc="lower left")
    fig.suptitle("Yin-Yang under device non-idealities (spikeforge.quant.nonideal)", fontsize=11)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=20, help="software training epochs (default 20)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden IF neurons (default 64)")
    ap.add_argument("--ft-epochs", type=int, default=10, help="noise-aware fine-tuning epochs (default 10)")
    ap.add_argument("--ft-lr", type=float, default=0.01, help="its Adam learning rate, cosine to 0 (default 0.01)")
    ap.add_argument("--chips", type=int, default=5, help="device seeds per evaluation (default 5)")
    ap.add_argument("--only", nargs="+", help="names of the non-idealities to run (default all)")
    ap.add_argument("--train-samples", type=int, default=None, metavar="N",
                    help="fine-tune on the first N training samples (default all 5000; for smoke tests)")
    ap.add_argument("--plot", default=str(HERE / "nonideal_yinyang.png"))
    args = ap.parse_args(argv)
    if args.train_samples is not None and args.train_samples < 1:
        ap.error(f"--train-samples must be positive, got {args.train_samples}")
    for name in ("epochs", "hidden", "ft_epochs", "chips"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    if not args.ft_lr > 0:
        ap.error(f"--ft-lr must be positive, got {args.ft_lr}")
    unknown = sorted(set(args.only or []) - {name for name, _, _ in SWEEPS})
    if unknown:
        ap.error(f"--only: unknown non-idealities {unknown}; choose from {[name for name, _, _ in SWEEPS]}")
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; Python {sys.version.split()[0]}; torch {torch.__version__}; 1 thread")
    print(f"# yinyang, current input, {args.hidden} IF hidden, {args.epochs} epochs, seed {args.seed}; noise-aware: "
          f"{args.ft_epochs} epochs, lr {args.ft_lr}; {args.chips} device seeds per evaluation")
    cfg = make_config(dataset="yinyang", epochs=args.epochs, hidden=args.hidden, seed=args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        train(cfg, out=Path(tmp) / "run", quiet=True, plots=False)
        model, cfg = load_run(Path(tmp) / "run")
    net = model.network()
    train_data, test = sf.data.YinYang("train"), sf.data.YinYang("test")
    if args.train_samples is not None:
        train_data = Subset(train_data.data[:args.train_samples], train_data.targets[:args.train_samples])
    x, y = sequence(test.data, cfg.steps), test.targets
    baseline = accuracy(net, x, y)
    control = accuracy(fine_tune(net, train_data, cfg.steps, args.ft_epochs, args.ft_lr, cfg.batch_size), x, y)
    print(f"software: {100 * baseline:.1f} %; fine-tuned {args.ft_epochs} more epochs without a transform "
          f"{100 * control:.1f} %", flush=True)
    results = {}
    for name, label, sweep in SWEEPS:
        if args.only and name not in args.only:
            continue
        results[name] = []
        for strength, t in sweep:
            t0 = time.perf_counter()
            aware = fine_tune(net, train_data, cfg.steps, args.ft_epochs, args.ft_lr, cfg.batch_size, t)
            row = {"strength": strength, "plain": on_chips(net, x, y, t, args.chips),
                   "aware": on_chips(aware, x, y, t, args.chips), "seconds": time.perf_counter() - t0}
            results[name].append(row)
            print(f"{name} {label} {strength:g}: trained in software {100 * row['plain'][0]:.1f} ± "
                  f"{100 * row['plain'][1]:.1f} %, noise-aware {100 * row['aware'][0]:.1f} ± "
                  f"{100 * row['aware'][1]:.1f} %  ({row['seconds']:.0f} s)", flush=True)
    print("\n| non-ideality | strength | trained in software | noise-aware training |")
    print("|---|---|---|---|")
    for name, label, _ in SWEEPS:
        for r in results.get(name, []):
            print(f"| {name} | {label} {r['strength']:g} | {100 * r['plain'][0]:.1f} ± {100 * r['plain'][1]:.1f} % "
                  f"| {100 * r['aware'][0]:.1f} ± {100 * r['aware'][1]:.1f} % |")
    if not args.only:
        plot(results, baseline, Path(args.plot))
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
