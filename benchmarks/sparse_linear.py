"""Spike-sparse ``SpikeLinear`` against dense ``F.linear``: where does sparse win?

For each size (rows = T*B, in -> out) and input density (fraction of ones in a random
binary input), times, in the same run and interleaved (each repetition runs every variant
once, so load from other processes hits them alike), median over ``--reps``:

* ``fwd``: forward only, under ``torch.no_grad`` (inference);
* ``train``: forward + backward of ``(y * g).sum()`` with gradients for the weight, the bias
  and the input (the input's gradient is what the neuron layer before needs), and the same
  without the input's gradient (a first layer fed by an encoder);

for ``F.linear`` (dense) and ``spike_linear(mode=SPARSE)`` (count pass, transpose of W and the
sparse kernel included). The crossover is the density at which the dense/sparse ratio crosses
1 (log-linear interpolation between measured densities). It also times the density check
alone (the count pass, and ``torch.count_nonzero`` for comparison) and, with ``--formulations``,
the pure-torch sparse formulations (``embedding_bag`` over a CSR index, ``torch.sparse.mm``)
for the forward of the first size.

    .venv/bin/python benchmarks/sparse_linear.py --formulations        # full table (~14 min here)
    .venv/bin/python benchmarks/sparse_linear.py --sizes 1600x512x512 --reps 3 --formulations
"""
from __future__ import annotations

import argparse
import math
import os
import statistics
import time
import warnings

# Idle OpenMP threads sleep instead of spinning: on a shared 2-core machine spinning threads
# make every parallel region wait for a scheduler time slice (~12 ms measured here for a
# 0.1 ms count_nonzero), which swamps the small sizes. Applies to dense and sparse alike.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402
from spikeforge.nn.sparse import SparseMode, count_active, spike_linear

DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5)
SIZES = ("8000x2048x2048", "8000x512x512", "1600x1024x1024", "1600x2048x256", "800x256x256")


def interleaved(fns: dict, reps: int, min_ms: float = 20.0) -> dict:
    """Median ms per call of each callable: one warm-up round (which also picks how many
    calls make one sample of at least ``min_ms``), then ``reps`` rounds of all of them."""
    times, number = {k: [] for k in fns}, {}
    for k, f in fns.items():
        t0 = time.perf_counter()
        f()
        number[k] = max(1, math.ceil(min_ms / max(1e-3, 1e3 * (time.perf_counter() - t0))))
    for _ in range(reps):
        for k, f in fns.items():
            t0 = time.perf_counter()
            for _ in range(number[k]):
                f()
            times[k].append(1e3 * (time.perf_counter() - t0) / number[k])
    return {k: statistics.median(v) for k, v in times.items()}


def _setup(n, k, out, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, k, generator=g) < d).float()
    w = (torch.rand(out, k, generator=g) - 0.5).mul_(2 / math.sqrt(k)).requires_grad_()
    b = torch.rand(out, generator=g).requires_grad_()
    gy = torch.randn(n, out, generator=g)
    return x, w, b, gy


def _train(fn, x, w, b, gy, input_grad=True):
    def run():
        xg = x.detach().requires_grad_(input_grad)
        y = fn(xg, w, b)
        torch.autograd.grad((y * gy).sum(), (xg, w, b) if input_grad else (w, b))
    return run


def _dense(x, w, b):
    return F.linear(x, w, b)


def _sparse(x, w, b):
    y, path, _ = spike_linear(x, w, b, SparseMode.SPARSE)
    assert path == "sparse"
    return y


def _no_grad(fn, *args):
    def run():
        with torch.no_grad():
            fn(*args)
    return run


def measure(n, k, out, d, reps) -> dict:
    x, w, b, gy = _setup(n, k, out, d)
    with torch.no_grad():
        err = (_sparse(x, w, b) - _dense(x, w, b)).abs().max().item()
    t = interleaved({
        "dense_fwd": _no_grad(_dense, x, w, b), "sparse_fwd": _no_grad(_sparse, x, w, b),
        "dense_train": _train(_dense, x, w, b, gy), "sparse_train": _train(_sparse, x, w, b, gy),
        "dense_train_w": _train(_dense, x, w, b, gy, False),
        "sparse_train_w": _train(_sparse, x, w, b, gy, False),
        "count_pass": lambda: count_active(x, mask=True), "count_nonzero": lambda: torch.count_nonzero(x),
    }, reps)
    t["max_abs_err"] = err
    return t


def formulations(n, k, out, d, reps) -> dict:
    """Forward of the pure-torch sparse formulations, index construction included."""
    x, w, b, _ = _setup(n, k, out, d)

    def emb():
        csr = x.to_sparse_csr()
        wt = w.detach().t().contiguous()
        return F.embedding_bag(csr.col_indices(), wt, csr.crow_indices(), mode="sum",
                               include_last_offset=True) + b

    def spmm():
        return torch.addmm(b, x.to_sparse_csr(), w.detach().t())

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        for f in (emb, spmm):
            assert torch.allclose(f(), _dense(x, w, b), atol=1e-4)
        return interleaved({"dense F.linear": _no_grad(_dense, x, w, b),
                            "spikeforge kernel": _no_grad(_sparse, x, w, b),
                            "embedding_bag + to_sparse_csr": emb, "sparse.mm(csr)": spmm}, reps)


def crossover(ds, ratios):
    """Density where dense/sparse crosses 1 (log-linear interpolation), or a bound."""
    pts = list(zip(ds, ratios))
    if all(r < 1 for _, r in pts):
        return f"< {ds[0]:g}"
    for (d0, r0), (d1, r1) in zip(pts, pts[1:]):
        if r0 >= 1 > r1:
            a = (math.log(r0)) / (math.log(r0) - math.log(r1))
            return f"{math.exp(math.log(d0) + a * (math.log(d1) - math.log(d0))):.3f}"
    return f">= {ds[-1]:g}"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default=",".join(SIZES), help="comma-separated ROWSxINxOUT")
    ap.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formulations", action="store_true", help="also time pure-torch sparse formulations")
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = [float(v) for v in a.densities.split(",")]
    tuned = all(os.environ.get(k) == v for k, v in C.MALLOC_TUNED.items())
    print(C.machine_info(a.threads, tuned, torch.__version__)
          + f"; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}", flush=True)
    summary = []
    for size in a.sizes.split(","):
        n, k, out = map(int, size.split("x"))
        rows, fr, tr, wr = [], [], [], []
        for d in ds:
            t = measure(n, k, out, d, a.reps)
            fr.append(t["dense_fwd"] / t["sparse_fwd"])
            tr.append(t["dense_train"] / t["sparse_train"])
            wr.append(t["dense_train_w"] / t["sparse_train_w"])
            rows.append([f"{d:g}", f"{t['dense_fwd']:.1f}", f"{t['sparse_fwd']:.1f}", f"{fr[-1]:.2f}",
                         f"{t['dense_train']:.1f}", f"{t['sparse_train']:.1f}", f"{tr[-1]:.2f}",
                         f"{t['dense_train_w']:.1f}", f"{t['sparse_train_w']:.1f}", f"{wr[-1]:.2f}",
                         f"{t['count_pass']:.2f}", f"{t['count_nonzero']:.2f}", f"{t['max_abs_err']:.1e}"])
            print(f"{size} d={d:g}: " + " ".join(rows[-1][1:]), flush=True)
        print(f"\n### {n} rows, {k} -> {out} (ms, median of {a.reps}; ratio = dense / sparse)\n")
        print(C.markdown_table(["density", "dense fwd", "sparse fwd", "fwd ratio", "dense fwd+bwd",
                                "sparse fwd+bwd", "fwd+bwd ratio", "dense fwd+bwd (no grad x)",
                                "sparse fwd+bwd (no grad x)", "ratio (no grad x)", "count pass",
                                "count_nonzero", "max abs err"], rows), flush=True)
        at5 = ds.index(0.05) if 0.05 in ds else None
        summary.append([size, crossover(ds, fr), crossover(ds, tr), crossover(ds, wr),
                        *("-" if at5 is None else f"{r[at5]:.2f}" for r in (fr, tr, wr))])
    print("\n### Crossover densities and speed-up at 5 %\n")
    print(C.markdown_table(["size", "crossover fwd", "crossover fwd+bwd", "crossover fwd+bwd (no grad x)",
                            "speed-up fwd @5%", "speed-up fwd+bwd @5%", "speed-up fwd+bwd (no grad x) @5%"],
                           summary), flush=True)
    if a.formulations:
        n, k, out = map(int, a.sizes.split(",")[0].split("x"))
        rows = []
        for d in (0.01, 0.05, 0.2):
            t = formulations(n, k, out, d, a.reps)
            rows.append([f"{d:g}", *(f"{v:.1f}" for v in t.values())])
            print(f"formulations d={d:g}: {t}", flush=True)
        print(f"\n### Forward formulations, {n} rows, {k} -> {out} (ms, median of {a.reps})\n")
        print(C.markdown_table(["density", *t.keys()], rows))


if __name__ == "__main__":
    main()
