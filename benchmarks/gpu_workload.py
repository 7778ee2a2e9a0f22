"""The reference workload on a CUDA device: spikeforge's Triton backend beside SpikingJelly,
snnTorch and Norse in one process, and a neuron alone vs HBM.

1. Workload: ``Linear(n, n)`` (bias 0.8) then LIF (tau = 2, decay-input, threshold 1, hard
   reset to 0) on x of shape (T, B, n) = (500, 16, n), n in {512, 2048, 4096, 16384};
   loss = z.sum(); forward + backward, for every framework of ``--frameworks``:
   ``floor`` (the Linear alone), ``spikeforge-triton``, ``spikeforge-reference`` (the
   correctness anchor: spikeforge's per-step torch backend), ``spikingjelly`` (2.0's
   ``LIFNode``, its Triton kernels: ``SJ_LIF_CUDA_IMPLEMENTATION=triton`` is set, so it
   fails rather than fall back silently; ``--sj-impl auto`` lets it choose), ``snntorch``
   and ``norse`` (plain PyTorch eager). Time = median of the timed passes (CUDA events)
   after ``--warmup`` passes (the first compiles); peak device memory (absolute, and above
   the weights and input: "pass"); ratios of time and pass memory to spikeforge-triton;
   spikes that differ from spikeforge-triton's; and the relative error of spikeforge's
   weight gradient against its reference backend. The whole table keeps to ``--budget``
   seconds: each row gets its share of what is left (fewer timed passes, at least one), and
   a framework whose pass at the next size is predicted not to fit the time or the free
   memory is skipped there, saying so in its row (_gpu_peers.py).
2. Neuron alone: x = mean + std * randn (T, B, n), forward z = neuron(x), backward with a
   dense upstream gradient. Nominal bytes per pass as in benchmarks/neuron_alone.py:
   (2 + S) * T * B * n * itemsize each way, S = number of state variables. GB/s = nominal
   bytes / time, also as a fraction of the device's copy bandwidth (``dst.copy_(src)`` of
   1 GiB, read + write), the practical HBM ceiling. Skipped when the budget is spent.

Exits with a message (status 0) when there is no CUDA device. ``--device cpu`` (with
``TRITON_INTERPRET=1`` and tiny sizes) only smoke-tests this script: the peers then run
their CPU paths, labelled "CPU FALLBACK" in the table, and the numbers mean nothing.

    bash benchmarks/setup_gpu.sh        # installs the peers (never torch), then runs this
    python benchmarks/gpu_workload.py --json gpu.json
    python benchmarks/gpu_workload.py --sizes 4096 --frameworks spikeforge-triton,spikingjelly --neurons none
    TRITON_INTERPRET=1 python benchmarks/gpu_workload.py --device cpu --sizes 64 --T 5 --B 2 --alone-n 64 --reps 1
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

import _common as C
import _gpu_peers as P
from neuron_alone import DEFAULT_NEURONS, INPUT


DEVICE = "cuda"


def cuda_time(fn, reps: int, warmup: int) -> list[float]:
    """Milliseconds of ``fn()`` per repetition, timed with CUDA events (a clock off CUDA)."""
    import torch

    for _ in range(warmup):
        fn()
    out = []
    for _ in range(reps):
        if DEVICE != "cuda":
            t0 = time.perf_counter()
            fn()
            out.append(1e3 * (time.perf_counter() - t0))
            continue
        a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        fn()
        b.record()
        torch.cuda.synchronize()
        out.append(a.elapsed_time(b))
    return out


def copy_gbs(gib: float = 1.0) -> float:
    import torch

    src = torch.ones(int(gib * 2**30) // 4, device=DEVICE)
    dst = torch.empty_like(src)
    ms = statistics.median(cuda_time(lambda: dst.copy_(src), 9, 2))
    return 2 * src.numel() * 4 / (ms * 1e-3) / 1e9


# -- 2. a neuron alone (1., the workload, is in _gpu_peers.py) -----------------------------------------------------------------------

def neuron_alone(name: str, backend: str, a, dtype, n: int) -> dict:
    import torch

    import spikeforge as sf
    from spikeforge.neurons import REGISTRY

    mean, std = INPUT.get(name, INPUT["LIF"])
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = (mean + std * torch.randn(a.T, a.B, n, device=DEVICE, dtype=dtype, generator=g)).requires_grad_()
    gz = torch.randn(x.shape, device=DEVICE, dtype=dtype, generator=g)
    mod = sf.nn.MODULES[name](backend=backend).to(device=DEVICE, dtype=dtype)
    out = {}
    fw = cuda_time(lambda: out.__setitem__("z", mod(x)), a.reps, a.warmup)

    def backward():
        x.grad = None
        mod(x).backward(gz)

    total = cuda_time(backward, a.reps, a.warmup)
    S = len(REGISTRY[name].state)
    nbytes = (2 + S) * x.numel() * x.element_size()
    f_ms, t_ms = statistics.median(fw), statistics.median(total)
    b_ms = max(t_ms - f_ms, 1e-6)
    return {"neuron": name, "backend": backend, "fwd_ms": f_ms, "bwd_ms": b_ms,
            "fwd_gbs": nbytes / (f_ms * 1e-3) / 1e9, "bwd_gbs": nbytes / (b_ms * 1e-3) / 1e9,
            "rate": out["z"].float().mean().item()}


# -- parent ----------------------------------------------------------------------------------

def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--sizes", default="512,2048,4096,16384", help="n of the workload, comma separated")
    p.add_argument("--T", type=int, default=500)
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--reps", type=int, default=10, help="timed passes per row (fewer if the budget says so)")
    p.add_argument("--warmup", type=int, default=3, help="untimed passes per row, the first compiles")
    p.add_argument("--frameworks", default=P.DEFAULT_FRAMEWORKS,
                   help=f"comma separated, of: {', '.join(P.FRAMEWORKS)}")
    p.add_argument("--budget", type=float, default=360,
                   help="seconds for the workload table (default 360: with the install, imports and the "
                        "neuron-alone part the run stays under 8 minutes)")
    p.add_argument("--sj-impl", default="triton", choices=["triton", "cuda", "torch", "auto"],
                   help="SpikingJelly's CUDA implementation (SJ_LIF_CUDA_IMPLEMENTATION)")
    p.add_argument("--backends", default="triton,reference", help="spikeforge backends of the neuron-alone part")
    p.add_argument("--neurons", default=DEFAULT_NEURONS, help="for the neuron-alone part; 'all' or 'none'")
    p.add_argument("--alone-n", type=int, default=16384, help="n of the neuron-alone part")
    p.add_argument("--alone-budget", type=float, default=30, help="seconds for the neuron-alone part")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--device", default="cuda", help="cuda; cpu only smoke-tests this script")
    a = p.parse_args(argv)
    C.check_args(p, a, positive=("T", "B", "reps", "alone_n"), lists=("sizes",))
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.backends = [b for b in a.backends.split(",") if b]
    a.frameworks = [f.strip() for f in a.frameworks.split(",") if f.strip()]
    bad = [f for f in a.frameworks if f not in P.FRAMEWORKS]
    if bad:
        p.error(f"unknown framework(s) {', '.join(bad)}; known: {', '.join(P.FRAMEWORKS)}")
    # read by SpikingJelly when it is imported: must precede any import of it
    os.environ["SJ_LIF_CUDA_IMPLEMENTATION"] = a.sj_impl
    t_start = time.perf_counter()

    import torch

    global DEVICE
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_workload: no CUDA device here (torch.cuda.is_available() is False); nothing to measure.")
        return 0
    import spikeforge as sf
    from spikeforge.neurons import REGISTRY

    dtype = getattr(torch, a.dtype)
    dev = torch.device(DEVICE)
    why = sf.backends(DEVICE, dtype)
    a.triton_unavailable = why.get("triton")
    if a.triton_unavailable:
        print(f"gpu_workload: the triton backend is unavailable: {a.triton_unavailable}")
        a.backends = [b for b in a.backends if b != "triton"]
    hbm = copy_gbs(1.0 if DEVICE == "cuda" else 0.0625)
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs; "
                  f"CUDA {torch.version.cuda}; TF32 matmul {torch.backends.cuda.matmul.allow_tf32}")
    else:
        device = f"{DEVICE} (SMOKE TEST of the script, not a measurement)"
    print(f"{device}; torch {torch.__version__}; {versions()}; {a.dtype}; "
          f"copy bandwidth {hbm:.0f} GB/s (read + write)\n", flush=True)

    rows = P.run_rows(a, dev, dtype, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"Linear(n, n) + LIF, T={a.T}, B={a.B}: forward + backward, loss z.sum(); median of up to "
          f"{a.reps} timed passes after {a.warmup} warm-ups; 'x sf-triton' = this / spikeforge-triton "
          f"(> 1: slower than spikeforge); 'pass GiB' = peak minus what was allocated before the pass; "
          f"'spikes differ' against spikeforge-triton; dW rel. err against spikeforge-reference")
    print(P.table(rows), flush=True)

    names = list(REGISTRY) if a.neurons == "all" else [] if a.neurons == "none" else a.neurons.split(",")
    alone, deadline = [], time.perf_counter() + a.alone_budget
    for name in names:
        for b in a.backends:
            if time.perf_counter() > deadline:
                alone.append({"neuron": name, "backend": b, "error": "skipped: neuron-alone budget spent"})
                continue
            try:
                alone.append(neuron_alone(name, b, a, dtype, a.alone_n))
            except Exception as e:
                alone.append({"neuron": name, "backend": b, "error": f"{type(e).__name__}: {str(e)[:120]}"})
    if alone:
        print(f"\nNeuron alone, T={a.T}, B={a.B}, n={a.alone_n}: nominal GB/s and share of copy bandwidth")
        print(C.markdown_table(
            ["neuron", "backend", "fwd ms", "bwd ms", "fwd GB/s", "bwd GB/s", "fwd % HBM", "bwd % HBM", "rate"],
            [[r["neuron"], r["backend"], C.fmt(r.get("fwd_ms"), ".2f"), C.fmt(r.get("bwd_ms"), ".2f"),
              C.fmt(r.get("fwd_gbs")), C.fmt(r.get("bwd_gbs")),
              C.fmt(r.get("fwd_gbs") and 100 * r["fwd_gbs"] / hbm),
              C.fmt(r.get("bwd_gbs") and 100 * r["bwd_gbs"] / hbm),
              C.fmt(r.get("rate"), ".3f") if "error" not in r else r["error"]] for r in alone]))
    total = time.perf_counter() - t_start
    print(f"\ngpu_workload: {total:.0f} s in all (after Python's start)")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device, "versions": versions(), "copy_gbs": hbm, "dtype": a.dtype,
                       "T": a.T, "B": a.B, "workload": rows, "alone": alone, "seconds": total},
                      f, indent=1, default=str)
    return 0


def versions() -> str:
    """The installed versions of spikeforge's peers and triton ('-' where absent)."""
    import importlib.metadata as md

    out = []
    for d in ("triton", "spikingjelly", "snntorch", "norse"):
        try:
            out.append(f"{d} {md.version(d)}")
        except md.PackageNotFoundError:
            out.append(f"{d} -")
    return ", ".join(out)


if __name__ == "__main__":
    sys.exit(main())
