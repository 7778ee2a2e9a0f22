"""VDSP on the embedded 8x8 digits (issue 12 d), two setups.

``--mode unsupervised``: the Diehl & Cook network of ``stdp_diehl_cook.py`` with the STDP
rule replaced by ``sf.learning.VDSP``; everything else (network, data, homeostasis,
normalisation, label assignment by each neuron's highest mean response) is the same.

``--mode post``: the published orientation (``VDSP(trigger=Trigger.POST)``, Garg et al.
2022): the update happens at a spike of a learning neuron and reads the membrane of the
*presynaptic* neurons. The pixels' Poisson spikes (weight ``--in-weight``) drive 64 input LIF
neurons (``--in-tau``, reset to ``--in-reset`` below their rest 0, threshold 1): one that fired
recently is still hyperpolarised (potentiation), one charged above rest without firing
depresses, a silent one (rest) leaves its synapse alone. Then the network of
``stdp_diehl_cook.py`` (lateral inhibition, adaptive thresholds, normalisation, label assignment).

``--mode supervised`` (default): one layer, ``nn.Linear(64, 10)`` -> a teacher -> 10 LIF
neurons under ``sf.nn.LateralInhibition``. During training the teacher adds a constant
current ``--teach`` to the label's neuron (so it charges and fires and inhibits the
others); VDSP with normalised, hard-bounded weights learns the synapses. At test time there
is no teacher: the prediction is the class whose neurons (``--per-class`` each) spike most.

The default ``a_minus = 0`` switches VDSP's depression off: summed over a batch, the
depression of every non-label neuron at every input spike outweighs the label neuron's
potentiation (9 classes to 1) and the weights stop resembling any class (RESULTS.md §14
has the numbers with ``a_minus > 0``).

VDSP here is spikeforge's pre-triggered form: at every input
spike, ``dw = a_plus * max(v - v_rest, 0) - a_minus * max(v_rest - v, 0)`` with ``v`` the
postsynaptic membrane just before that step: neurons charged towards their threshold
(the likely winners) potentiate the synapse, neurons held below ``v_rest`` by the lateral
inhibition or just reset by their own spike depress it. No trace is kept.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vdsp_digits.py                # 3 seeds
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/vdsp_digits.py --mode post --neurons 200 --epochs 3 \
        --gain 1.0 --in-weight 0.8 --norm-total 0.6 --a-plus 5e-2 --a-minus 2.5e-2   # RESULTS.md 14x
    .venv/bin/python benchmarks/vdsp_digits.py --seeds 0 --epochs 1 --neurons 20
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, fields

import torch
from torch import Tensor, nn

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import stdp_diehl_cook as dc  # noqa: E402
import _common as C  # noqa: E402
import spikeforge as sf  # noqa: E402
from spikeforge.learning import VDSP, Bound, Bounds, Normalise, Trigger, attach  # noqa: E402

VDSP_DEFAULTS = {"a_plus": 1e-4, "a_minus": 0.0, "v_rest": 0.2}
BOUNDS = {"hard": Bound.HARD, "soft": Bound.SOFT}


class Teacher(nn.Module):
    """Adds ``current`` ``(B, n)`` (or nothing when ``None``) to every step of ``(T, B, n)``."""

    def __init__(self) -> None:
        super().__init__()
        self.current: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        return x if self.current is None else x + self.current


def run_supervised(cfg: dc.Config, seed: int, rule: VDSP, teach: float, per_class: int, bound: Bound) -> dict:
    g = torch.Generator().manual_seed(seed)
    xtr, ytr, te = C.digits_train_test(cfg.train_limit)
    n = 10 * per_class          # neuron k belongs to class k // per_class
    lin = nn.Linear(64, n, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(n, 64, generator=g) * 0.3 * cfg.w_max)
    lif = sf.nn.LIF(tau=cfg.tau, v_threshold=1.0, v_reset=0.0, decay_input=False)
    net = nn.Sequential(lin, Teacher(), sf.nn.LateralInhibition(lif, cfg.inhibition))
    learner = attach(net, rule, bounds=Bounds(bound, 0.0, cfg.w_max), normalise=Normalise(cfg.norm_total))
    learner.apply(0.0)
    n_batches, done, t0 = cfg.epochs * ((len(xtr) + cfg.batch - 1) // cfg.batch), 0, time.perf_counter()
    with torch.no_grad(), learner:
        for _ in range(cfg.epochs):
            order = torch.randperm(len(xtr), generator=g)
            for i in range(0, len(xtr), cfg.batch):
                idx = order[i:i + cfg.batch]
                onehot = nn.functional.one_hot(ytr[idx], 10).float()
                net[1].current = teach * onehot.repeat_interleave(per_class, dim=1)
                net(sf.encoding.rate(xtr[idx], cfg.steps, gain=cfg.gain, generator=g))
                learner.apply(cfg.lr * (1 - done / max(1, n_batches - 1) * (1 - cfg.lr_final)))
                done += 1
    train_s = time.perf_counter() - t0
    net[1].current = None
    with torch.no_grad():
        counts = net(sf.encoding.rate(te.data, cfg.eval_steps, gain=cfg.gain, generator=g)).sum(0)
    acc = (counts.view(-1, 10, per_class).sum(2).argmax(1) == te.targets).float().mean().item()
    return {"seed": seed, "test_accuracy": acc, "train_s": train_s, "classes_covered": 10,
            "mean_test_spikes": counts.sum(1).mean().item()}


class Scale(nn.Module):
    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = factor

    def forward(self, x: Tensor) -> Tensor:
        return x * self.factor


def run_post(cfg: dc.Config, seed: int, rule: VDSP, bound: Bound, in_weight: float, in_tau: float,
             in_reset: float) -> dict:
    """Unsupervised, published orientation: input LIF neurons -> Linear -> LIF under lateral
    inhibition; training, label assignment and test as ``stdp_diehl_cook.run_one``."""
    torch.manual_seed(seed)
    g = torch.Generator().manual_seed(seed)
    xtr, ytr, te = C.digits_train_test(cfg.train_limit)
    lin = nn.Linear(64, cfg.neurons, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.rand(cfg.neurons, 64, generator=g) * 0.3 * cfg.w_max)
    inputs = sf.nn.LIF(tau=in_tau, v_threshold=1.0, v_reset=in_reset, decay_input=False)
    lif = sf.nn.LIF(tau=cfg.tau, v_threshold=1.0, v_reset=0.0, decay_input=False)
    net = nn.Sequential(Scale(in_weight), inputs, lin, sf.nn.LateralInhibition(lif, cfg.inhibition))
    t0 = time.perf_counter()
    dc.train(net, xtr, cfg, g, rule, bound)
    train_s = time.perf_counter() - t0
    assignment = dc.assign(dc.responses(net, xtr, cfg, g), ytr)
    resp_te = dc.responses(net, te.data, cfg, g)
    acc = (dc.classify(resp_te, assignment) == te.targets).float().mean().item()
    return {"seed": seed, "test_accuracy": acc, "train_s": train_s, "classes_covered": int(assignment.unique().numel()),
            "mean_test_spikes": resp_te.sum(1).mean().item(), "theta_mean": (lif.v_threshold - 1.0).mean().item()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--json", help="also write the results here")
    ap.add_argument("--mode", choices=("supervised", "unsupervised", "post"), default="supervised")
    ap.add_argument("--in-weight", type=float, default=0.6, help="post mode: weight of a pixel spike on its input LIF")
    ap.add_argument("--in-tau", type=float, default=5.0, help="post mode: input LIF membrane time constant (steps)")
    ap.add_argument("--in-reset", type=float, default=-1.0, help="post mode: input LIF reset (below its rest 0)")
    ap.add_argument("--teach", type=float, default=0.1, help="teacher current (supervised mode)")
    ap.add_argument("--per-class", type=int, default=1, help="neurons per class (supervised mode)")
    ap.add_argument("--bound", choices=tuple(BOUNDS), default="hard", help="weight bounds [0, w_max]")
    ap.add_argument("--v-rest", type=float, default=VDSP_DEFAULTS["v_rest"])
    for f in fields(dc.Config):
        if f.name in ("a_plus", "a_minus", "tau_trace"):
            continue
        ap.add_argument(f"--{f.name.replace('_', '-')}", type=type(f.default), default=f.default)
    ap.add_argument("--a-plus", type=float, default=VDSP_DEFAULTS["a_plus"])
    ap.add_argument("--a-minus", type=float, default=VDSP_DEFAULTS["a_minus"])
    args = ap.parse_args(argv)
    for name in ("neurons", "steps", "eval_steps", "epochs", "batch", "threads", "per_class"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    cfg = dc.Config(**{f.name: getattr(args, f.name) for f in fields(dc.Config)
                       if hasattr(args, f.name) and f.name not in ("a_plus", "a_minus", "tau_trace")})
    post = args.mode == "post"
    rule = VDSP(a_plus=args.a_plus, a_minus=args.a_minus, v_rest=0.0 if post else args.v_rest,
                trigger=Trigger.POST if post else Trigger.PRE)
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}; Python {platform.python_version()}; "
          f"torch {torch.__version__}; {args.threads} thread(s)\n# {args.mode}, teach={args.teach}, "
          f"per_class={args.per_class}, bound={args.bound}; {cfg} "
          f"(a_plus, a_minus, tau_trace unused)\n# {rule}")
    rows = []
    for seed in args.seeds:
        if post:
            rows.append(run_post(cfg, seed, rule, BOUNDS[args.bound], args.in_weight, args.in_tau, args.in_reset))
        else:
            rows.append(dc.run_one(cfg, seed, rule, BOUNDS[args.bound]) if args.mode == "unsupervised"
                        else run_supervised(cfg, seed, rule, args.teach, args.per_class, BOUNDS[args.bound]))
        r = rows[-1]
        print(f"seed {seed}: test {100 * r['test_accuracy']:.2f} %  ({r['classes_covered']} classes assigned, "
              f"{r['mean_test_spikes']:.1f} spikes/test digit, train {r['train_s']:.0f} s)", flush=True)
    accs = [100 * r["test_accuracy"] for r in rows]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    print(f"mean test accuracy over {len(accs)} seed(s): {statistics.mean(accs):.2f} % (sd {sd:.2f})")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"mode": args.mode, "teach": args.teach, "config": asdict(cfg), "rule": asdict(rule),
                       "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
