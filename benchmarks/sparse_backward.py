"""Sparse spiking backward (issue 15 §1, Perez-Nieves & Goodman 2021) against the dense fused
backward, on a 3-layer SNN on SHD-shaped data:

    x (T, B, 700) 0/1 spikes -> Linear(700, H) + LIF -> Linear(H, H) + LIF -> Linear(H, 20) + LI
                             -> mean over time -> cross-entropy

dense: ``F.linear`` + ``sf.nn.LIF(backend="cpu")`` (the fused kernels); sparse: the two hidden
layers are ``sparse_spiking_linear`` and the readout's Linear is ``spike_linear`` (``SpikeLinear``:
its weight gradient scatters layer 2's spikes, its input gradient is computed only at layer 2's
active entries, the only ones that layer reads); ``--dense-readout spike`` gives the dense network
the same ``spike_linear`` readout (its input gradient stays dense there). Same
weights (``shd_workload.weights``: the two LIF layers fire ~5-6 %), same batch
(``shd_like(B, T, seed=1)``), LIF tau = 2, surrogate ``Triangle(alpha)`` whose support
``|v - v_th| < 1/alpha`` is the active set: the sweep over ``alpha`` sweeps the activity.

Speed (default): per (T, alpha), interleaved repetitions of (a) the whole network's backward
(``loss.backward()``) and (b) the second hidden layer's backward alone given its output's
gradient (the paper's protocol), dense then sparse in each repetition; medians and the
min/median/max of the per-repetition ratios. Writes benchmarks/sparse_backward.png (speed-up
against the active fraction).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sparse_backward.py
    .venv/bin/python benchmarks/sparse_backward.py --threads 1 --clock cpu      # robust when the machine is loaded
    OMP_WAIT_POLICY=PASSIVE .venv/bin/python benchmarks/sparse_backward.py --train   # accuracy, dense vs sparse
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time

import _common as C
from shd_workload import CHANNELS, CLASSES, TAU, weights


CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}
CLOCK_NOTE = {"wall": "wall clock", "cpu": "CPU time of this process, all its threads: not counting the time "
              "other processes take the cores; use with --threads 1"}


def _env(threads: int) -> str:
    import torch
    return C.machine_info(threads, False, torch.__version__, os.environ.get("OMP_WAIT_POLICY", "").lower() == "passive")


def network(W: dict, alpha: float, sparse: bool, detach_reset: bool = False, weight_grad: str = "auto",
            dense_readout: str = "linear"):
    """``run(x) -> (readout (T, B, 20), z1, z2)`` and its layers' parameters (leaves); the dense
    LIF layers detach their reset if asked (the sparse ones always do); ``dense_readout``: the
    dense network's readout Linear, ``linear`` (F.linear) or ``spike`` (spike_linear, as sparse)."""
    import torch
    import torch.nn.functional as F
    import spikeforge as sf
    from spikeforge.neurons import LIF
    from spikeforge.nn.sparse import spike_linear
    from spikeforge.nn.sparse_backward import sparse_spiking_linear
    from spikeforge.surrogate import Triangle

    from spikeforge.nn.sparse_backward import WeightGrad

    sur, how = Triangle(alpha), WeightGrad(weight_grad)
    p = {k: W[k].clone().requires_grad_() for k in ("w1", "b1", "w2", "w3", "b3")}
    li = sf.nn.LI(tau=TAU, backend="cpu")
    lifs = [sf.nn.LIF(tau=TAU, surrogate=sur, backend="cpu", detach_reset=detach_reset) for _ in range(2)]

    def hidden(k, x, w, b=None):
        if sparse:
            return sparse_spiking_linear(x, w, b, LIF(), {"tau": TAU}, surrogate=sur, weight_grad=how)
        return lifs[k](F.linear(x, w, b))

    def run(x):
        z1 = hidden(0, x, p["w1"], p["b1"])
        z2 = hidden(1, z1, p["w2"])
        spike = sparse or dense_readout == "spike"
        y = spike_linear(z2, p["w3"], p["b3"])[0] if spike else F.linear(z2, p["w3"], p["b3"])
        return li(y), z1, z2
    run.hidden = hidden
    return run, p


def _stats(xs):
    return min(xs), statistics.median(xs), max(xs)


def measure(T: int, B: int, H: int, alpha: float, reps: int, warmup: int, clock, weight_grad: str,
            dense_readout: str = "linear") -> dict:
    """Interleaved timings of the dense and sparse backward at one (T, alpha), by ``clock``."""
    import torch
    import torch.nn.functional as F
    from spikeforge.data.synthetic import shd_like
    from spikeforge.nn.sparse_backward import active_fraction

    x, y = shd_like(B, T, seed=1)
    W = weights(H)
    nets = {k: network(W, alpha, k == "sparse", weight_grad=weight_grad, dense_readout=dense_readout)
            for k in ("dense", "sparse")}
    t = {f"{k}_{m}": [] for k in nets for m in ("net", "layer", "fwd")}
    info = {}
    for rep in range(warmup + reps):
        for k, (run, p) in nets.items():
            t0 = clock()
            out, z1, z2 = run(x)
            loss = F.cross_entropy(out.mean(0), y)
            t1 = clock()
            loss.backward()
            t2 = clock()
            if rep == 0:   # the second hidden layer's output gradient, for (b)
                o, _, zz = run(x)
                g2 = torch.autograd.grad(F.cross_entropy(o.mean(0), y), zz)[0]
                info[k + "_g2"] = g2.to_dense() if g2.is_sparse else g2   # (b) gives every layer a dense one
            g2 = info[k + "_g2"]
            z1d = z1.detach().requires_grad_()
            if k == "sparse":
                z1d._sf_active_set = z1._sf_active_set
                info.update(act1=active_fraction(z1), act2=active_fraction(z2))
            info[k + "_rates"] = (float(z1.detach().mean()), float(z2.detach().mean()))
            z2b = run.hidden(1, z1d, p["w2"])
            t3 = clock()
            z2b.backward(g2)
            t4 = clock()
            if rep >= warmup:
                t[f"{k}_net"].append(t2 - t1)
                t[f"{k}_layer"].append(t4 - t3)
                t[f"{k}_fwd"].append(t1 - t0)
            for v in p.values():
                v.grad = None
    assert info["dense_rates"] == info["sparse_rates"], "dense and sparse forwards differ"
    res = {"T": T, "alpha": alpha, "act1": info["act1"], "act2": info["act2"], "rates": info["dense_rates"]}
    for m in ("net", "layer", "fwd"):
        res[m] = {k: statistics.median(t[f"{k}_{m}"]) * 1e3 for k in nets}
        res[m]["ratio"] = _stats([d / s for d, s in zip(t[f"dense_{m}"], t[f"sparse_{m}"])])
    return res


def speed(a) -> None:
    rows, results = [], []
    for T in a.T:
        for alpha in a.alphas:
            r = measure(T, a.B, a.H, alpha, a.reps, a.warmup, CLOCKS[a.clock], a.weight_grad, a.dense_readout)
            results.append(r)
            n, ly, fw = r["net"], r["layer"], r["fwd"]
            rows.append([str(T), C.fmt(alpha, "g"), C.fmt(100 * r["act1"], ".1f"), C.fmt(100 * r["act2"], ".1f"),
                         C.fmt(n["dense"], ".1f"), C.fmt(n["sparse"], ".1f"),
                         "%.2f / %.2f / %.2f" % n["ratio"], C.fmt(ly["dense"], ".1f"), C.fmt(ly["sparse"], ".1f"),
                         "%.2f / %.2f / %.2f" % ly["ratio"], C.fmt(fw["dense"], ".0f"), C.fmt(fw["sparse"], ".0f")])
            print(f"  T={T} alpha={alpha}: net x{n['ratio'][1]:.2f}, layer x{ly['ratio'][1]:.2f}, "
                  f"active {100 * r['act2']:.1f} %", file=sys.stderr, flush=True)
    print(f"# sparse backward: Linear(700,{a.H})+LIF, Linear({a.H},{a.H})+LIF, Linear({a.H},20)+LI, B={a.B}, "
          f"shd_like input (3 % density), LIF tau={TAU}, Triangle(alpha); readout Linear: sparse spike_linear, "
          f"dense {'spike_linear' if a.dense_readout == 'spike' else 'F.linear'}; {a.reps} interleaved reps after "
          f"{a.warmup} warm-ups; weight_grad={a.weight_grad}; {a.clock} time ({CLOCK_NOTE[a.clock]}); ms are medians; ratio = dense / sparse per "
          f"rep (min / median / max); active = |v - v_th| < 1/alpha")
    print(f"# {_env(a.threads)}")
    print(C.markdown_table(["T", "alpha", "active L1 %", "active L2 %", "net bwd dense ms", "net bwd sparse ms",
                            "net speed-up", "L2 bwd dense ms", "L2 bwd sparse ms", "L2 speed-up",
                            "fwd dense ms", "fwd sparse ms"], rows))
    if a.plot:
        plot(results, a.plot)


def plot(results, path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for T in sorted({r["T"] for r in results}):
        rs = sorted((r for r in results if r["T"] == T), key=lambda r: r["act2"])
        xs = [100 * r["act2"] for r in rs]
        for m, style in (("net", "o-"), ("layer", "s--")):
            ys = [r[m]["ratio"][1] for r in rs]
            lo = [y - r[m]["ratio"][0] for y, r in zip(ys, rs)]
            hi = [r[m]["ratio"][2] - y for y, r in zip(ys, rs)]
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt=style, capsize=3,
                        label=f"T={T}, {'whole network' if m == 'net' else 'hidden layer 2 alone'}")
    ax.axhline(1, color="gray", lw=0.8)
    ax.axhline(5, color="gray", lw=0.8, ls=":")
    ax.set_xscale("log")
    ax.set_xlabel("active entries of hidden layer 2 (% of T x B x H)")
    ax.set_ylabel("backward speed-up (dense / sparse)")
    ax.set_title("Sparse spiking backward vs dense fused backward (CPU)")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


KINDS = ("dense", "dense-detached", "sparse")


def train(a) -> None:
    import torch
    import torch.nn.functional as F
    from spikeforge.data.synthetic import shd_like
    from spikeforge.nn.sparse_backward import active_fraction

    T = a.T[0]
    xtr, ytr = shd_like(a.train_n, T, seed=1, dtype=torch.uint8)
    xte, yte = shd_like(a.train_n // 2, T, seed=2, dtype=torch.uint8)
    print(f"# training: {len(ytr)} train / {len(yte)} test samples of shd_like(T={T}), B={a.B}, H={a.H}, "
          f"Adam lr={a.lr}, {a.epochs} epochs, Triangle({a.train_alpha}); dense = F.linear + sf.nn.LIF (reset not "
          f"detached; 'dense, reset detached': the gradient the sparse backward computes), sparse = "
          f"sparse_spiking_linear; same init and batch order per seed")
    print(f"# {_env(a.threads)}")
    rows = []
    for seed in a.seeds:
        acc, acts, wall = {}, [], {}
        for kind in KINDS:
            run, p = network(weights(a.H, seed), a.train_alpha, kind == "sparse", kind == "dense-detached")
            opt = torch.optim.Adam(p.values(), lr=a.lr)
            g = torch.Generator().manual_seed(seed)
            t0 = time.perf_counter()
            for _ in range(a.epochs):
                for idx in torch.randperm(len(ytr), generator=g).split(a.B):
                    opt.zero_grad(set_to_none=True)
                    out, z1, z2 = run(xtr[:, idx].float())
                    F.cross_entropy(out.mean(0), ytr[idx]).backward()
                    opt.step()
                    if kind == "sparse":
                        acts.append((active_fraction(z1), active_fraction(z2)))
            wall[kind] = time.perf_counter() - t0
            with torch.no_grad():
                acc[kind] = 100 * sum(int((run(xte[:, i:i + 256].float())[0].mean(0).argmax(1)
                                           == yte[i:i + 256]).sum()) for i in range(0, len(yte), 256)) / len(yte)
            print(f"  seed {seed} {kind}: {acc[kind]:.1f} % ({wall[kind]:.0f} s)", file=sys.stderr, flush=True)
        last = acts[-len(acts) // 5:]   # the last fifth of training
        rows.append([str(seed), C.fmt(acc["dense"], ".1f"), C.fmt(acc["dense-detached"], ".1f"),
                     C.fmt(acc["sparse"], ".1f"), C.fmt(acc["sparse"] - acc["dense"], "+.1f"),
                     C.fmt(acc["sparse"] - acc["dense-detached"], "+.1f"),
                     C.fmt(100 * statistics.mean(u for u, _ in last), ".1f"),
                     C.fmt(100 * statistics.mean(v for _, v in last), ".1f"),
                     *(C.fmt(wall[k], ".0f") for k in KINDS)])
    print(C.markdown_table(["seed", "dense test %", "dense, reset detached, test %", "sparse test %",
                            "sparse - dense", "sparse - dense detached", "active L1 % (last 20 %)",
                            "active L2 % (last 20 %)"] + [f"{k} train s" for k in KINDS], rows))


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=C.positive_ints, default=[100, 250], help="time steps (comma list)")
    ap.add_argument("--B", type=C.positive_int, default=32)
    ap.add_argument("--H", type=C.positive_int, default=256)
    ap.add_argument("--alphas", type=C.comma_list(float, "alphas"), default=[1.0, 2.0, 4.0, 8.0, 16.0, 32.0],
                    help="Triangle sharpness values to sweep (support 1/alpha)")
    ap.add_argument("--reps", type=C.positive_int, default=9)
    ap.add_argument("--warmup", type=C.positive_int, default=2)
    ap.add_argument("--threads", type=C.positive_int, default=2)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                    help="wall: elapsed time; cpu: this process's CPU time (robust on a loaded machine, 1 thread)")
    ap.add_argument("--plot", default=os.path.join(os.path.dirname(__file__), "sparse_backward.png"))
    ap.add_argument("--weight-grad", choices=["auto", "trace", "scatter", "dense"], default="auto",
                    help="the sparse layers' WeightGrad (speed runs)")
    ap.add_argument("--dense-readout", choices=["linear", "spike"], default="linear",
                    help="the dense network's readout Linear: F.linear, or spike_linear as in the sparse one")
    ap.add_argument("--train", action="store_true", help="compare trained accuracy instead")
    ap.add_argument("--train-n", type=C.positive_int, default=2000)
    ap.add_argument("--epochs", type=C.positive_int, default=5)
    ap.add_argument("--lr", type=float, default=0.002)
    ap.add_argument("--train-alpha", type=float, default=4.0)
    ap.add_argument("--seeds", type=C.positive_ints, default=[1, 2, 3])
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    (train if a.train else speed)(a)


if __name__ == "__main__":
    main()
