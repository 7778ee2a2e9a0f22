"""A spiking agent learns 1-D target reaching with reward-modulated STDP (issue 12 e).

The task: an agent sits on one of ``positions`` cells of a line; the target is the middle
cell. Each move it goes one cell left or right; an episode starts on a random cell other
than the target and ends at the target (or after ``2 * positions`` moves). The reward of
a move is ``+1`` if it brings the agent closer to the target, ``-1`` otherwise. Chance
(random moves) is 50 % correct moves; the optimal policy is 100 %.

The agent: its cell is the input, one Poisson neuron per cell (the agent's cell fires with
probability ``p_on`` per step, the others with ``p_off``, default 0) for ``T`` steps per decision ->
``nn.Linear(positions, 2)`` -> two LIF action neurons (left, right) competing through
``sf.nn.LateralInhibition``; the move is the action neuron with more spikes (a tie is a
coin flip, so the Poisson noise explores). Learning: ``sf.learning.attach(net,
RewardSTDP(PairSTDP(...)))``: STDP during the decision fills the eligibility trace; after the
move ``learner.reward(r)`` and ``learner.apply(lr)`` (weights hard-bounded to ``[0, 1]``).
No value function, no baseline: the reward's sign alone steers the synapses that were active.

Output: the fraction of correct moves, pooled over all moves of a window of episodes (under
random moves it is 50 %; a per-episode fraction would not be, since every episode ends with a
correct move), as a learning curve ``benchmarks/rstdp_task.png`` (each seed and their mean),
and the policy's accuracy over all cells before and after training (``eval_trials`` decisions
per cell, no learning).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/rstdp_task.py              # 3 seeds, plot
    .venv/bin/python benchmarks/rstdp_task.py --seeds 0 --episodes 50 --no-plot
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from dataclasses import asdict, dataclass

import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import Bound, Bounds, PairSTDP, RewardSTDP, attach

PLOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "rstdp_task.png")


@dataclass(frozen=True)
class Config:
    positions: int = 9
    episodes: int = 100
    steps: int = 20         # T per decision
    p_on: float = 0.5
    p_off: float = 0.0
    lr: float = 0.02
    inhibition: float = 1.0
    eval_trials: int = 20   # decisions per cell in the final evaluation


def make_net(cfg: Config, g: torch.Generator) -> nn.Sequential:
    lin = nn.Linear(cfg.positions, 2, bias=False)
    with torch.no_grad():
        lin.weight.copy_(0.5 + 0.2 * torch.rand(2, cfg.positions, generator=g))
    lif = sf.nn.LIF(tau=5.0, decay_input=False, v_threshold=1.0, v_reset=0.0)
    return nn.Sequential(lin, sf.nn.LateralInhibition(lif, cfg.inhibition))


def decide(net: nn.Module, pos: int, cfg: Config, g: torch.Generator) -> int:
    """0 (left) or 1 (right): the action neuron with more spikes, a tie by coin flip."""
    p = torch.full((1, cfg.positions), cfg.p_off)
    p[0, pos] = cfg.p_on
    counts = net(torch.bernoulli(p.expand(cfg.steps, 1, cfg.positions), generator=g)).sum((0, 1))
    if counts[0] == counts[1]:
        return int(torch.randint(0, 2, (1,), generator=g))
    return int(counts.argmax())


def episode(net, learner, cfg: Config, g: torch.Generator) -> tuple[int, int]:
    """One episode with learning; returns (correct moves, moves)."""
    target = cfg.positions // 2
    pos = int(torch.randint(0, cfg.positions - 1, (1,), generator=g))
    pos += pos >= target   # any cell but the target
    correct = moves = 0
    while pos != target and moves < 2 * cfg.positions:
        action = decide(net, pos, cfg, g)
        new = min(max(pos + (1 if action else -1), 0), cfg.positions - 1)
        r = 1.0 if abs(new - target) < abs(pos - target) else -1.0
        learner.reward(r)
        learner.apply(cfg.lr)
        correct, moves, pos = correct + (r > 0), moves + 1, new
    return correct, moves


def pooled(curve: list, first: int, last: int) -> float:
    """Correct moves / moves over episodes ``first:last``."""
    part = curve[first:last]
    return sum(c for c, _ in part) / max(1, sum(m for _, m in part))


def policy_accuracy(net, cfg: Config, g: torch.Generator) -> float:
    target, hits, n = cfg.positions // 2, 0, 0
    for pos in range(cfg.positions):
        if pos != target:
            want = 1 if pos < target else 0
            hits += sum(decide(net, pos, cfg, g) == want for _ in range(cfg.eval_trials))
            n += cfg.eval_trials
    return hits / n


def run_one(cfg: Config, seed: int) -> dict:
    g = torch.Generator().manual_seed(seed)
    net = make_net(cfg, g)
    rule = RewardSTDP(PairSTDP(a_plus=1.0, a_minus=0.5, tau_pre=5.0, tau_post=5.0), tau_e=50.0)
    with torch.no_grad():
        before = policy_accuracy(net, cfg, g)
        t0 = time.perf_counter()
        with attach(net, rule, bounds=Bounds(Bound.HARD, 0.0, 1.0)) as learner:
            curve = [episode(net, learner, cfg, g) for _ in range(cfg.episodes)]
        train_s = time.perf_counter() - t0
        after = policy_accuracy(net, cfg, g)
    return {"seed": seed, "curve": curve, "greedy_before": before, "greedy_after": after, "train_s": train_s}


def plot(rows: list[dict], cfg: Config, path: str, window: int = 5) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    x = torch.arange(window, cfg.episodes + 1)
    smooth = torch.tensor([[pooled(r["curve"], e - window, e) for e in x.tolist()] for r in rows])
    fig, ax = plt.subplots(figsize=(6, 3.6))
    for r, s in zip(rows, smooth):
        ax.plot(x, 100 * s, lw=0.8, alpha=0.5, label=f"seed {r['seed']}")
    ax.plot(x, 100 * smooth.mean(0), color="k", lw=2, label="mean")
    ax.axhline(50, color="grey", ls="--", lw=1, label="chance")
    ax.set(xlabel="episode", ylabel=f"correct moves (%, last {window} episodes)", ylim=(0, 105),
           title=f"R-STDP agent, 1-D target reaching ({cfg.positions} cells)")
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--plot", default=PLOT, help="where the learning curve goes")
    ap.add_argument("--json", help="also write the results here")
    for name, default in asdict(Config()).items():
        ap.add_argument(f"--{name.replace('_', '-')}", type=type(default), default=default)
    args = ap.parse_args(argv)
    for name, low in (("positions", 3), ("episodes", 1), ("steps", 1), ("eval_trials", 1), ("threads", 1)):
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be >= {low}, got {getattr(args, name)}")
    cfg = Config(**{k: getattr(args, k) for k in asdict(Config())})
    torch.set_num_threads(args.threads)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; {platform.machine()}; Python {platform.python_version()}; "
          f"torch {torch.__version__}; {args.threads} thread(s)\n# {cfg}")
    rows = [run_one(cfg, s) for s in args.seeds]
    for r in rows:
        first, last = pooled(r["curve"], 0, 10), pooled(r["curve"], cfg.episodes - 20, cfg.episodes)
        print(f"seed {r['seed']}: correct moves {100 * first:.1f} % (first 10 episodes) -> "
              f"{100 * last:.1f} % (last 20); policy over all cells {100 * r['greedy_before']:.1f} % -> "
              f"{100 * r['greedy_after']:.1f} %  ({r['train_s']:.1f} s)")
    print(f"mean policy accuracy after training: {100 * statistics.mean(r['greedy_after'] for r in rows):.1f} % "
          f"(chance 50 %)")
    if not args.no_plot:
        plot(rows, cfg, args.plot)
        print(f"learning curve: {args.plot}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"config": asdict(cfg), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    sys.exit(main())
