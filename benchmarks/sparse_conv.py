"""Spike-sparse ``SpikeConv2d`` against dense ``F.conv2d``: where does sparse win?

For each layer (N = T*B samples, C -> O channels, H x W, 3x3 kernel, padding 1, stride 1) and
input density (fraction of ones in a random binary input), times, in the same run and
interleaved (each repetition runs every variant once, so load from other processes hits them
alike), median over ``--reps``:

* ``fwd``: forward only, under ``torch.no_grad`` (inference);
* ``train``: forward + backward of ``(y * g).sum()`` with gradients for the weight, the bias and
  the input (the input's gradient, a dense transposed convolution on both paths, is what the
  neuron layer before needs), and the same without the input's gradient;

for ``F.conv2d`` (dense) and ``spike_conv2d(mode=SPARSE)`` (counting pass, weight re-layout and
the C kernels included). The crossover is the density at which dense/sparse crosses 1
(log-linear interpolation). Writes the crossover curve to ``--png``.

    .venv/bin/python benchmarks/sparse_conv.py --formulations    # full table (~15 min here)
    .venv/bin/python benchmarks/sparse_conv.py --layers 16x64x32x32x128 --reps 3 --densities 0.01,0.05
"""
from __future__ import annotations

import argparse
import math
import os
import warnings
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # see sparse_linear.py: same protocol

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import _common as C  # noqa: E402
from sparse_linear import crossover, interleaved  # noqa: E402
from spikeforge.kernels.sparse import count_active  # noqa: E402
from spikeforge.nn.sparse import SparseMode  # noqa: E402
from spikeforge.nn.sparse_conv import spike_conv2d  # noqa: E402

DENSITIES = (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3)
LAYERS = ("32x64x32x32x128", "16x64x32x32x128", "32x128x16x16x256", "8x32x16x16x32", "32x2x32x32x16")
KINDS = {"fwd": "forward (no grad)", "train": "forward + backward", "train_w": "forward + backward, no grad x"}


def _setup(n, c, h, w, o, d, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(n, c, h, w, generator=g) < d).float()
    wt = (torch.rand(o, c, 3, 3, generator=g) - 0.5).mul_(2 / math.sqrt(9 * c)).requires_grad_()
    b = torch.rand(o, generator=g).requires_grad_()
    gy = torch.randn(n, o, h, w, generator=g)
    return x, wt, b, gy


def _dense(x, w, b):
    return F.conv2d(x, w, b, 1, 1)


def _sparse(x, w, b):
    y, path, _ = spike_conv2d(x, w, b, 1, 1, mode=SparseMode.SPARSE)
    assert path == "sparse"
    return y


def _fwd(fn, x, w, b):
    def run():
        with torch.no_grad():
            fn(x, w, b)
    return run


def _train(fn, x, w, b, gy, input_grad=True):
    def run():
        xg = x.detach().requires_grad_(input_grad)
        y = fn(xg, w, b)
        torch.autograd.grad((y * gy).sum(), (xg, w, b) if input_grad else (w, b))
    return run


def measure(layer, d, reps) -> dict:
    x, w, b, gy = _setup(*layer, d)
    with torch.no_grad():
        err = (_sparse(x, w, b) - _dense(x, w, b)).abs().max().item()
    n, c, h, wd, _ = layer
    t = interleaved({
        "dense_fwd": _fwd(_dense, x, w, b), "sparse_fwd": _fwd(_sparse, x, w, b),
        "dense_train": _train(_dense, x, w, b, gy), "sparse_train": _train(_sparse, x, w, b, gy),
        "dense_train_w": _train(_dense, x, w, b, gy, False), "sparse_train_w": _train(_sparse, x, w, b, gy, False),
        "count_pass": lambda: count_active(x.view(n * c, h * wd), mask=True),
    }, reps)
    t["max_abs_err"] = err
    return t


def formulations(layer, d, reps) -> dict:
    """Forward (no grad) of the sparse formulations, index construction included."""
    from spikeforge.kernels import sparse_conv as K
    from spikeforge.nn.sparse import spike_linear

    x, w, b, _ = _setup(*layer, d)
    n, c, h, wd, o = layer
    w2 = w.detach().reshape(o, -1)

    def kernel(form):
        def run():
            K.FORMULATION = form
            try:
                return _sparse(x, w, b)
            finally:
                K.FORMULATION = K.Formulation.SCATTER
        return run

    def cols():  # binary im2col (N*H*W, C*9), then SpikeLinear's kernel over its active columns
        return F.unfold(x, 3, padding=1).transpose(1, 2).reshape(n * h * wd, c * 9)

    def unfold_linear():
        y = spike_linear(cols(), w2, b.detach(), SparseMode.SPARSE)[0]
        return y.reshape(n, h * wd, o).transpose(1, 2).reshape(n, o, h, wd)

    def unfold_csr():
        y = torch.addmm(b.detach(), cols().to_sparse_csr(), w2.t())
        return y.reshape(n, h * wd, o).transpose(1, 2).reshape(n, o, h, wd)

    fns = {"dense F.conv2d": lambda: _dense(x, w.detach(), b.detach()),
           "scatter kernel": kernel(K.Formulation.SCATTER), "gather kernel": kernel(K.Formulation.GATHER),
           "unfold + SpikeLinear": unfold_linear,
           "unfold + sparse CSR mm": unfold_csr}
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "sparse CSR support is in beta"
        ref = fns["dense F.conv2d"]()
        for f in fns.values():
            assert torch.allclose(f(), ref, atol=1e-4)
        return interleaved({k: _fwd(lambda *_, f=f: f(), x, w, b) for k, f in fns.items()}, reps)


def plot(curves: dict, ds: list, path: str, note: str) -> None:
    """One panel per measurement kind, one line (colour) per layer; ratio > 1: sparse faster."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import ScalarFormatter

    layers = list(dict.fromkeys(layer for layer, _ in curves))
    fig, axes = plt.subplots(1, len(KINDS), figsize=(13, 4.4), sharey=True)
    for ax, (kind, title) in zip(axes, KINDS.items()):
        for i, layer in enumerate(layers):
            ax.plot([100 * d for d in ds], curves[(layer, kind)], marker="o", color=f"C{i}", label=layer)
        ax.axhline(1.0, color="black", linewidth=0.8)
        ax.set_xscale("log")
        ax.set_yscale("log")
        for axis in (ax.xaxis, ax.yaxis):
            axis.set_major_formatter(ScalarFormatter())
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("input spike density (%)")
        ax.grid(True, which="both", alpha=0.3)
    axes[0].set_ylabel("speed-up: F.conv2d time / sparse time")
    axes[0].legend(title="layer N x C x H x W x O", fontsize=8, title_fontsize=8)
    fig.suptitle(f"SpikeConv2d (3x3, padding 1) vs F.conv2d, float32, 2 threads, same-run ratios ({note})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--layers", default=",".join(LAYERS), help="comma-separated NxCxHxWxO (3x3 kernel, pad 1)")
    ap.add_argument("--densities", default=",".join(map(str, DENSITIES)))
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--formulations", action="store_true", help="also time the other sparse forward formulations")
    ap.add_argument("--png", default=str(Path(__file__).with_name("sparse_conv.png")))
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    ds = [float(v) for v in a.densities.split(",")]
    tuned = all(os.environ.get(k) == v for k, v in C.MALLOC_TUNED.items())
    info = C.machine_info(a.threads, tuned, torch.__version__) + f"; OMP_WAIT_POLICY={os.environ['OMP_WAIT_POLICY']}"
    print(info + f"; load average {os.getloadavg()[0]:.1f}", flush=True)
    summary, curves = [], {}
    for spec in a.layers.split(","):
        layer = tuple(map(int, spec.split("x")))
        rows, r = [], {k: [] for k in KINDS}
        for d in ds:
            t = measure(layer, d, a.reps)
            for k in KINDS:
                r[k].append(t[f"dense_{k}"] / t[f"sparse_{k}"])
            rows.append([f"{d:g}", *(f"{t[f'{p}_{k}']:.1f}" if p else f"{r[k][-1]:.2f}"
                                     for k in KINDS for p in ("dense", "sparse", None)),
                         f"{t['count_pass']:.2f}", f"{t['max_abs_err']:.1e}"])
            print(f"{spec} d={d:g}: " + " ".join(rows[-1][1:]), flush=True)
        curves.update({(spec, k): v for k, v in r.items()})
        print(f"\n### {spec} (N x C x H x W x O; ms, median of {a.reps}; ratio = dense / sparse)\n")
        print(C.markdown_table(["density", *(f"{p} {k}" for k in KINDS for p in ("dense", "sparse", "ratio")),
                                "count pass", "max abs err"], rows), flush=True)
        at5 = ds.index(0.05) if 0.05 in ds else None
        summary.append([spec, *(crossover(ds, r[k]) for k in KINDS),
                        *("-" if at5 is None else f"{r[k][at5]:.2f}" for k in KINDS)])
    print(f"\n### Crossover densities and speed-up at 5 % (load average at the end {os.getloadavg()[0]:.1f})\n")
    print(C.markdown_table(["layer", *(f"crossover {k}" for k in KINDS), *(f"speed-up {k} @5%" for k in KINDS)],
                           summary), flush=True)
    plot(curves, ds, a.png, info.split(";")[0])
    print(f"wrote {a.png}", flush=True)
    if a.formulations:
        layer, rows = tuple(map(int, a.layers.split(",")[0].split("x"))), []
        for d in (0.01, 0.05, 0.2):
            t = formulations(layer, d, a.reps)
            rows.append([f"{d:g}", *(f"{v:.1f}" for v in t.values())])
            print(f"formulations d={d:g}: {t}", flush=True)
        print(f"\n### Forward formulations, {a.layers.split(',')[0]} (ms, median of {a.reps})\n")
        print(C.markdown_table(["density", *t.keys()], rows))


if __name__ == "__main__":
    main()
