"""Desire backpropagation on the embedded 8x8 digits (issue 12 c).

The network: the 64 pixels as Poisson spike trains (``sf.encoding.rate``, spike
probability = pixel value per step, ``T`` steps) -> ``nn.Linear(64, H)`` (H = 512) -> LIF ->
``nn.Linear(H, 10)`` -> LIF; the LIF membrane decays by 0.75 per step and fires at 1
(hard reset to 0), as in Gerlinghoff et al. (2023). Training: ``sf.learning.attach(net,
DesireBackprop(...))``; per mini-batch one forward pass (no autograd), ``learner.teach(labels)``
(desire from the label, propagated backwards through the weights' signs, local
trace x error updates) and ``learner.apply(lr)``. The learning rate decays linearly to
``lr * lr_final``. The prediction is the output neuron with the most spikes (ties: the
lowest index); reported on the test split, with the model of the last epoch.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/desire_digits.py          # 3 seeds
    .venv/bin/python benchmarks/desire_digits.py --seeds 0 --epochs 2 --hidden 64
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

import _common as C
import spikeforge as sf
from spikeforge.learning import Bound, Bounds, DesireBackprop, attach


@dataclass(frozen=True)
class Config:
    hidden: int = 512
    steps: int = 20
    gain: float = 1.0
    epochs: int = 30
    batch: int = 16
    lr: float = 0.01
    lr_final: float = 0.1
    hidden_threshold: float = 0.05
    output_threshold: float = 0.30
    margin: float = 4.0
    train_limit: int = 0


def make_net(cfg: Config) -> nn.Sequential:
    lif = dict(tau=4.0, decay_input=False, v_threshold=1.0, v_reset=0.0)   # v <- 0.75 v + x
    net = nn.Sequential(nn.Linear(64, cfg.hidden, bias=False), sf.nn.LIF(**lif),
                        nn.Linear(cfg.hidden, 10, bias=False), sf.nn.LIF(**lif))
    for m in (net[0], net[2]):
        nn.init.kaiming_normal_(m.weight)
    return net


def evaluate(net: nn.Module, x: Tensor, y: Tensor, cfg: Config, g: torch.Generator) -> float:
    with torch.no_grad():
        counts = net(sf.encoding.rate(x, cfg.steps, gain=cfg.gain, generator=g)).sum(0)
    return (counts.argmax(1) == y).float().mean().item()


def run_one(cfg: Config, seed: int, log=None) -> dict:
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xtr, ytr, te = C.digits_train_test(cfg.train_limit)
    net = make_net(cfg)
    rule = DesireBackprop(hidden_threshold=cfg.hidden_threshold, output_threshold=cfg.output_threshold,
                          margin=cfg.margin)
    learner = attach(net, rule, bounds=Bounds(Bound.NONE))
    n_batches, done, curve = cfg.epochs * math.ceil(len(xtr) / cfg.batch), 0, []
    t0 = time.perf_counter()
    with torch.no_grad():
        for epoch in range(cfg.epochs):
            order = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), cfg.batch):
                idx = order[i:i + cfg.batch]
                net(sf.encoding.rate(xtr[idx], cfg.steps, gain=cfg.gain, generator=g))
                learner.teach(ytr[idx])
                learner.apply(cfg.lr * (1 - done / max(1, n_batches - 1) * (1 - cfg.lr_final)))
                done += 1
            learner.reset()
            curve.append(evaluate(net, te.data, te.targets, cfg, g) if log else None)
            if log:
                log(f"  seed {seed} epoch {epoch + 1}: test {100 * curve[-1]:.2f} %")
    train_s = time.perf_counter() - t0
    learner.remove()
    return {"seed": seed, "test_accuracy": evaluate(net, te.data, te.targets, cfg, g),
            "train_accuracy": evaluate(net, xtr, ytr, cfg, g), "train_s": train_s, "curve": curve}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verbose", action="store_true", help="test accuracy after every epoch")
    ap.add_argument("--json", help="also write the results here")
    for name, default in asdict(Config()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args(argv)
    for name in ("hidden", "steps", "epochs", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    cfg = Config(**{k: getattr(args, k) for k in asdict(Config())})
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}; Python {platform.python_version()}; "
          f"torch {torch.__version__}; {args.threads} thread(s)\n# {cfg}")
    rows = []
    for seed in args.seeds:
        rows.append(run_one(cfg, seed, log=(lambda s: print(s, flush=True)) if args.verbose else None))
        r = rows[-1]
        print(f"seed {seed}: test {100 * r['test_accuracy']:.2f} %  train {100 * r['train_accuracy']:.2f} %  "
              f"({r['train_s']:.0f} s)", flush=True)
    accs = [100 * r["test_accuracy"] for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"mean test accuracy over {len(accs)} seed(s): {statistics.mean(accs):.2f} % (sd {sd:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": asdict(cfg), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
