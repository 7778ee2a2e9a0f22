"""One EventProp training step of the trainer's Yin-Yang network, with the input drive summed
directly (``spikeforge.learning._modal.FACTORED = False``) and by factored decays (``True``, the default),
interleaved batch by batch in one process (RESULTS.md 12c, session 6).

For each of ``--batches`` training batches (batch 32, in order): forward (``Classifier`` under
``--method eventprop``, train mode, with ``silent_penalty``), ``ttfs_ce`` + penalty, backward;
once per variant, alternating. Prints ms per step (min / median / max per variant), the
per-batch ratio direct / factored, and how far the two variants' hidden spike times, output
first-spike times and gradients differ. ``--run DIR``: the weights of a trained run folder
(``best.pt``; a trained network fires about twice as often as a fresh one); default: the
trainer's initialisation at ``--seed``.

    OMP_NUM_THREADS=1 PYTHONPATH=src python benchmarks/eventprop_step.py [--run RUN_DIR]
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", default=None, help="a trained run folder (spikeforge train --method eventprop)")
    ap.add_argument("--batches", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(1)
    from spikeforge.learning import _modal
    from spikeforge.train.config import make_config
    from spikeforge.train.model import Classifier, loss_and_logits
    from spikeforge.train.runs import load_run
    from spikeforge.train.tasks import load_task

    if args.run:
        net, cfg = load_run(args.run)
    else:
        cfg = make_config(method="eventprop", seed=args.seed)
        torch.manual_seed(args.seed)
    data = load_task(cfg).split("train")
    if not args.run:
        net = Classifier(data.x.shape[1], int(data.y.max()) + 1, cfg)
    net.train()
    print(f"env: {platform.machine()} Python {platform.python_version()} torch {torch.__version__}, 1 thread; "
          f"{'weights of ' + args.run if args.run else 'initial weights, seed %d' % args.seed}")

    def step(i: int, factored: bool):
        _modal.FACTORED = factored
        x, y = data.x[32 * i:32 * i + 32], data.y[32 * i:32 * i + 32]
        net.zero_grad()
        t0 = time.perf_counter()
        out = net(x)
        loss, _ = loss_and_logits(out, y, cfg.loss)
        loss.backward()
        ms = 1000 * (time.perf_counter() - t0)
        grad = torch.cat([p.grad.flatten() for p in net.parameters() if p.grad is not None])
        return ms, out.run.spikes[0].times.detach(), out.run.first.detach(), grad

    times = {False: [], True: []}
    dt_max, grad_rel, count_diff = 0.0, 0.0, 0
    for i in range(args.batches):
        direct, factored = step(i, False), step(i, True)
        times[False].append(direct[0])
        times[True].append(factored[0])
        a, b = direct[1], factored[1]
        if a.shape != b.shape or not torch.equal(torch.isfinite(a), torch.isfinite(b)):
            count_diff += 1
        else:
            fin = torch.isfinite(a)
            if bool(fin.any()):
                dt_max = max(dt_max, float((a[fin] - b[fin]).abs().max()))
        dt_max = max(dt_max, float((direct[2] - factored[2]).abs().max()))
        grad_rel = max(grad_rel, float((direct[3] - factored[3]).abs().max() / direct[3].abs().max()))
    _modal.FACTORED = True
    for k, name in ((False, "direct  "), (True, "factored")):
        t = times[k]
        print(f"{name} ms per step (fwd+bwd, batch 32): min {min(t):.0f}  median {statistics.median(t):.0f}  "
              f"max {max(t):.0f}")
    r = [a / b for a, b in zip(times[False], times[True])]
    print(f"ratio direct / factored per batch: min {min(r):.2f}  median {statistics.median(r):.2f}  max {max(r):.2f}")
    print(f"largest spike-time difference {dt_max:.1e} steps; batches whose spike counts differ: {count_diff}; "
          f"largest gradient difference {grad_rel:.1e} of the largest gradient")


if __name__ == "__main__":
    main()
