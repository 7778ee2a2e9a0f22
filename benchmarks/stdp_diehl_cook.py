"""Unsupervised STDP on the embedded 8x8 digits, Diehl & Cook (2015) style (issue 12 b).

The network: the 64 pixels become Poisson spike trains (``sf.encoding.rate``, spike
probability ``gain * pixel`` per step, ``T`` steps) -> ``nn.Linear(64, N)`` with weights in
``[0, w_max]`` -> ``N`` LIF neurons competing through ``sf.nn.LateralInhibition`` (each
spike inhibits every other neuron by ``inhibition`` one step later: Diehl & Cook's
excitatory-inhibitory pair folded into a direct inhibitory weight). Learning is
``sf.learning.attach`` with pair STDP (trace form), hard weight bounds, each neuron's
incoming weights renormalised to a fixed sum after every update (``Normalise``) and
adaptive thresholds (``AdaptiveThreshold``: every spike raises the neuron's threshold by
``theta_plus``, decaying with ``tau_theta``). No label is used for learning.

Evaluation as in the paper: after training the weights and thresholds are frozen; each
neuron is assigned the class for which its average spike count over the training set is
highest; a test digit is classified as the class whose assigned neurons have the highest
average spike count. A digit that makes fewer than ``min_spikes`` spikes is shown again
with the input rate raised (as the paper does), up to 4 times.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/stdp_diehl_cook.py            # 3 seeds
    .venv/bin/python benchmarks/stdp_diehl_cook.py --seeds 0 --epochs 1 --neurons 20
"""
from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import Tensor, nn

import _common as C
import spikeforge as sf
from spikeforge.learning import (AdaptiveThreshold, Bound, Bounds, Normalise, PairSTDP, assign_labels,
                                 assigned_scores, attach)


@dataclass(frozen=True)
class Config:
    neurons: int = 200
    steps: int = 60            # T per presentation
    gain: float = 0.5          # spike probability per step of a white pixel
    epochs: int = 5
    batch: int = 16
    lr: float = 0.1
    lr_final: float = 0.1      # lr decays linearly to lr * lr_final over training
    tau: float = 30.0          # LIF membrane time constant (steps)
    inhibition: float = 1.0
    w_max: float = 1.0
    norm_total: float = 0.3    # sum of each neuron's 64 input weights
    a_plus: float = 2e-3
    a_minus: float = 5e-4
    tau_trace: float = 10.0
    theta_plus: float = 0.04
    tau_theta: float = 4000.0  # steps (one batch advances T steps)
    eval_steps: int = 120     # T per presentation when assigning labels and testing
    min_spikes: int = 3
    train_limit: int = 0       # 0 = the whole training split


def make_net(cfg: Config, g: torch.Generator) -> nn.Sequential:
    lin = nn.Linear(64, cfg.neurons, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(cfg.neurons, 64, generator=g) * 0.3 * cfg.w_max)
    lif = sf.nn.LIF(tau=cfg.tau, v_threshold=1.0, v_reset=0.0, decay_input=False)
    return nn.Sequential(lin, sf.nn.LateralInhibition(lif, cfg.inhibition))


def present(net: nn.Module, x: Tensor, cfg: Config, g: torch.Generator, retries: int = 0) -> Tensor:
    """Spike counts ``(B, N)`` of one presentation of images ``x`` ``(B, 64)``; digits with
    fewer than ``min_spikes`` spikes are shown again at a higher rate, ``retries`` times."""
    counts = net(sf.encoding.rate(x, cfg.eval_steps, gain=cfg.gain, generator=g)).sum(0)
    for k in range(1, retries + 1):
        weak = counts.sum(1) < cfg.min_spikes
        if not weak.any():
            break
        gain = min(1.0, cfg.gain * (1 + 0.5 * k))
        counts[weak] = net(sf.encoding.rate(x[weak], cfg.eval_steps, gain=gain, generator=g)).sum(0)
    return counts


def stdp_rule(cfg: Config) -> PairSTDP:
    return PairSTDP(a_plus=cfg.a_plus, a_minus=cfg.a_minus, tau_pre=cfg.tau_trace, tau_post=cfg.tau_trace)


def train(net: nn.Module, data: Tensor, cfg: Config, g: torch.Generator, rule, bound: Bound = Bound.HARD) -> None:
    learner = attach(net, rule, bounds=Bounds(bound, 0.0, cfg.w_max), normalise=Normalise(cfg.norm_total),
                     homeostasis=AdaptiveThreshold(cfg.theta_plus, cfg.tau_theta))
    learner.apply(0.0)   # normalise the initial weights
    n_batches = cfg.epochs * ((len(data) + cfg.batch - 1) // cfg.batch)
    done = 0
    with torch.no_grad(), learner:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(data), generator=g)
            for i in range(0, len(data), cfg.batch):
                net(sf.encoding.rate(data[order[i:i + cfg.batch]], cfg.steps, gain=cfg.gain, generator=g))
                frac = done / max(1, n_batches - 1)
                learner.apply(cfg.lr * (1 - frac * (1 - cfg.lr_final)))
                done += 1


def responses(net: nn.Module, data: Tensor, cfg: Config, g: torch.Generator, batch: int = 128) -> Tensor:
    with torch.no_grad():
        return torch.cat([present(net, data[i:i + batch], cfg, g, retries=4) for i in range(0, len(data), batch)])


def assign(resp: Tensor, labels: Tensor, classes: int = 10) -> Tensor:
    """Each neuron's class (``spikeforge.learning.assign_labels``)."""
    return assign_labels(resp, labels, classes)


def classify(resp: Tensor, assignment: Tensor, classes: int = 10) -> Tensor:
    """The class whose assigned neurons respond most on average (``spikeforge.learning.assigned_scores``)."""
    return assigned_scores(resp, assignment, classes).argmax(1)


def run_one(cfg: Config, seed: int, rule=None, bound: Bound = Bound.HARD) -> dict:
    """Train (``rule``: pair STDP from ``cfg`` unless given; weights bounded by ``bound``), assign
    labels, test."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xtr, ytr, te = C.digits_train_test(cfg.train_limit)
    net = make_net(cfg, g)
    t0 = time.perf_counter()
    train(net, xtr, cfg, g, stdp_rule(cfg) if rule is None else rule, bound)
    train_s = time.perf_counter() - t0
    assignment = assign(responses(net, xtr, cfg, g), ytr)
    resp_te = responses(net, te.data, cfg, g)
    acc = (classify(resp_te, assignment) == te.targets).float().mean().item()
    thr = net[1].neuron.v_threshold
    return {"seed": seed, "test_accuracy": acc, "train_s": train_s, "classes_covered": int(assignment.unique().numel()),
            "mean_test_spikes": resp_te.sum(1).mean().item(), "theta_mean": (thr - 1.0).mean().item()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    for name, default in asdict(Config()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args(argv)
    cfg = Config(**{k: getattr(args, k) for k in asdict(Config())})
    for name in ("neurons", "steps", "eval_steps", "epochs", "batch", "threads"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}; Python {platform.python_version()}; "
          f"torch {torch.__version__}; {args.threads} thread(s)\n# {cfg}")
    rows = []
    for seed in args.seeds:
        rows.append(run_one(cfg, seed))
        r = rows[-1]
        print(f"seed {seed}: test {100 * r['test_accuracy']:.2f} %  ({r['classes_covered']} classes assigned, "
              f"{r['mean_test_spikes']:.1f} spikes/test digit, mean theta {r['theta_mean']:.3f}, "
              f"train {r['train_s']:.0f} s)", flush=True)
    accs = [100 * r["test_accuracy"] for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"mean test accuracy over {len(accs)} seed(s): {statistics.mean(accs):.2f} % (sd {sd:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": asdict(cfg), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
