"""Sparse spiking backward through convolutions (issue 15 §1, the conv synapse) against the dense
fused backward, on two spiking conv layers:

    x (T, B, C0, S, S) 0/1 spikes -> Conv2d(C0, C1, 3, padding 1) + LIF -> Conv2d(C1, C2, 3, padding 1) + LIF

dense: ``F.conv2d`` on the (T*B)-sample batch + ``sf.nn.LIF(backend="cpu")`` (the fused kernels;
torch's convolution backward); sparse: ``sparse_spiking_conv2d`` for both layers (weight gradient by
scattering the input's events, the first layer's output gradient only at its active entries).
Same weights and input; LIF tau 2, surrogate ``Triangle(alpha)`` (active set ``|v - v_th| <
1/alpha``: the sweep over alpha sweeps the activity). The backward is ``(z2 * g).sum().backward()``
for a fixed random ``g``; interleaved repetitions, dense then sparse, medians and the min / median /
max of the per-repetition ratio dense / sparse.

    .venv/bin/python benchmarks/sparse_backward_conv.py --threads 1 --clock cpu
"""
from __future__ import annotations

import argparse
import statistics
import sys

import _common as C
from sparse_backward import CLOCKS, CLOCK_NOTE, _env


def network(a, alpha: float, sparse: bool):
    """``run(x) -> (z1, z2)`` and the weights (leaves)."""
    import torch
    import torch.nn.functional as F
    import spikeforge as sf
    from spikeforge.neurons import LIF
    from spikeforge.nn.sparse_backward import sparse_spiking_conv2d
    from spikeforge.surrogate import Triangle

    g = torch.Generator().manual_seed(0)
    w = [(torch.randn(co, ci, 3, 3, generator=g) * gain / (9 * ci * d) ** 0.5).requires_grad_()
         for co, ci, gain, d in ((a.C1, a.C0, a.gain, a.density), (a.C2, a.C1, a.gain, 0.1))]
    sur = Triangle(alpha)
    lifs = [sf.nn.LIF(tau=2.0, surrogate=sur, backend="cpu", detach_reset=True) for _ in w]

    def layer(k, x):
        if sparse:
            return sparse_spiking_conv2d(x, w[k], None, LIF(), {"tau": 2.0}, surrogate=sur, padding=1)
        y = F.conv2d(x.flatten(0, 1), w[k], padding=1)
        return lifs[k](y.view(*x.shape[:2], *y.shape[1:]))

    def run(x):
        z1 = layer(0, x)
        return z1, layer(1, z1)
    return run, w


def measure(a, alpha: float, clock) -> dict:
    import torch
    from spikeforge.nn.sparse_backward import active_fraction

    g = torch.Generator().manual_seed(1)
    x = (torch.rand(a.T, a.B, a.C0, a.S, a.S, generator=g) < a.density).float()
    nets = {k: network(a, alpha, k == "sparse") for k in ("dense", "sparse")}
    t = {f"{k}_{m}": [] for k in nets for m in ("fwd", "bwd")}
    info = {}
    for rep in range(a.warmup + a.reps):
        for k, (run, w) in nets.items():
            t0 = clock()
            z1, z2 = run(x)
            t1 = clock()
            if "g" not in info:
                info["g"] = torch.randn(z2.shape, generator=g)
            (z2 * info["g"]).sum().backward()
            t2 = clock()
            info[k] = (float(z1.detach().mean()), float(z2.detach().mean()))
            if k == "sparse":
                info["act"] = (active_fraction(z1), active_fraction(z2))
            if rep >= a.warmup:
                t[f"{k}_fwd"].append(t1 - t0)
                t[f"{k}_bwd"].append(t2 - t1)
            for p in w:
                p.grad = None
    assert info["dense"] == info["sparse"], "dense and sparse forwards differ"
    res = {"alpha": alpha, "act": info["act"], "rates": info["dense"]}
    for m in ("fwd", "bwd"):
        res[m] = {k: statistics.median(t[f"{k}_{m}"]) * 1e3 for k in nets}
        res[m]["ratio"] = tuple(f(d / s for d, s in zip(t[f"dense_{m}"], t[f"sparse_{m}"]))
                                for f in (min, statistics.median, max))
    return res


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", type=C.positive_int, default=8)
    ap.add_argument("--B", type=C.positive_int, default=4)
    ap.add_argument("--S", type=C.positive_int, default=32, help="input height and width")
    ap.add_argument("--C0", type=C.positive_int, default=32)
    ap.add_argument("--C1", type=C.positive_int, default=64)
    ap.add_argument("--C2", type=C.positive_int, default=128)
    ap.add_argument("--density", type=C.open_unit, default=0.05, help="input spike density")
    ap.add_argument("--gain", type=float, default=1.5, help="weight scale (sets the firing rates)")
    ap.add_argument("--alphas", type=C.comma_list(float, "alphas"), default=[2.0, 4.0, 8.0, 16.0])
    ap.add_argument("--reps", type=C.positive_int, default=7)
    ap.add_argument("--warmup", type=C.positive_int, default=2)
    ap.add_argument("--threads", type=C.positive_int, default=2)
    ap.add_argument("--clock", choices=sorted(CLOCKS), default="wall")
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    rows = []
    for alpha in a.alphas:
        r = measure(a, alpha, CLOCKS[a.clock])
        f, b = r["fwd"], r["bwd"]
        rows.append([C.fmt(alpha, "g"), C.fmt(100 * r["rates"][0], ".1f"), C.fmt(100 * r["rates"][1], ".1f"),
                     C.fmt(100 * r["act"][0], ".1f"), C.fmt(100 * r["act"][1], ".1f"),
                     C.fmt(b["dense"], ".1f"), C.fmt(b["sparse"], ".1f"), "%.2f / %.2f / %.2f" % b["ratio"],
                     C.fmt(f["dense"], ".1f"), C.fmt(f["sparse"], ".1f")])
        print(f"  alpha={alpha}: backward x{b['ratio'][1]:.2f}", file=sys.stderr, flush=True)
    print(f"# sparse conv backward: x ({a.T}, {a.B}, {a.C0}, {a.S}, {a.S}) at {a.density:g} density -> "
          f"Conv2d({a.C0},{a.C1},3,p1)+LIF -> Conv2d({a.C1},{a.C2},3,p1)+LIF, LIF tau 2 (reset detached in both), "
          f"Triangle(alpha); {a.reps} interleaved reps after {a.warmup} warm-ups; {a.clock} time "
          f"({CLOCK_NOTE[a.clock]}); ms are medians; ratio = dense / sparse per rep (min / median / max)")
    print(f"# {_env(a.threads)}")
    print(C.markdown_table(["alpha", "rate L1 %", "rate L2 %", "active L1 %", "active L2 %", "bwd dense ms",
                            "bwd sparse ms", "bwd speed-up", "fwd dense ms", "fwd sparse ms"], rows))


if __name__ == "__main__":
    main()
