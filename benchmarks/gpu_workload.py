"""The Triton backend on a CUDA device: the reference workload and a neuron alone vs HBM.

1. Workload: ``Linear(n, n)`` (bias 0.8) then LIF (tau = 2, decay-input, threshold 1, hard
   reset to 0) on x of shape (T, B, n) = (500, 16, n), n in {4096, 16384}; loss = z.sum();
   forward + backward time (CUDA events, median of ``--reps`` after ``--warmup`` passes,
   the first of which compiles the kernels), peak device memory, and agreement with the
   reference backend (same weights and input): spike mismatches and the relative error of
   the Linear's weight gradient.
2. Neuron alone: x = mean + std * randn (T, B, n), forward z = neuron(x), backward with a
   dense upstream gradient. Nominal bytes per pass as in benchmarks/neuron_alone.py:
   (2 + S) * T * B * n * itemsize each way, S = number of state variables. GB/s = nominal
   bytes / time, also as a fraction of the device's copy bandwidth (``dst.copy_(src)`` of
   1 GiB, read + write), the practical HBM ceiling.

Exits with a message (status 0) when there is no CUDA device. ``--device cpu`` (with
``TRITON_INTERPRET=1`` and tiny sizes) only smoke-tests this script; its numbers mean nothing.

    python benchmarks/gpu_workload.py
    python benchmarks/gpu_workload.py --sizes 4096 --neurons all --dtype bfloat16 --json out.json
    TRITON_INTERPRET=1 python benchmarks/gpu_workload.py --device cpu --sizes 64 --T 5 --B 2 --alone-n 64 --reps 1
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import _common as C
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


def peak_gib() -> float | None:
    import torch

    return torch.cuda.max_memory_allocated() / 2**30 if DEVICE == "cuda" else None


# -- 1. the workload -------------------------------------------------------------------------

def workload(n: int, backend: str, a, dtype) -> dict:
    import torch

    import spikeforge as sf

    torch.manual_seed(0)  # same weights and input for every backend
    lin = torch.nn.Linear(n, n, device=DEVICE, dtype=dtype)
    x = torch.randn(a.T, a.B, n, device=DEVICE, dtype=dtype)
    with torch.no_grad():
        lin.bias.fill_(0.8)
    lif = sf.nn.LIF(tau=2.0, backend=backend).to(device=DEVICE, dtype=dtype)

    def step():
        lin.weight.grad = lin.bias.grad = None
        z = lif(lin(x))
        z.sum().backward()
        return z

    z = step()  # compile, and keep one result for the agreement check
    if DEVICE == "cuda":
        torch.cuda.reset_peak_memory_stats()
    ms = cuda_time(step, a.reps, a.warmup)
    return {"ms": statistics.median(ms), "peak_gib": peak_gib(),
            "spikes": z.detach().bool(), "wgrad": lin.weight.grad.detach().float(), "used": lif.last_backend}


def run_workload(a, dtype) -> list[dict]:
    rows = []
    for n in a.sizes:
        res = {}
        for b in a.backends:
            try:
                res[b] = workload(n, b, a, dtype)
            except Exception as e:  # report and go on (e.g. out of memory for the reference)
                res[b] = {"error": f"{type(e).__name__}: {str(e)[:120]}"}
        ref = res.get("reference")
        for b, r in res.items():
            row = {"n": n, "backend": b, **{k: v for k, v in r.items() if k not in ("spikes", "wgrad")}}
            if "error" not in r:
                row["rate"] = r["spikes"].float().mean().item()
                if ref is not None and "error" not in ref and b != "reference":
                    row["spike_mismatch"] = (r["spikes"] != ref["spikes"]).float().mean().item()
                    row["wgrad_rel_err"] = ((r["wgrad"] - ref["wgrad"]).norm() / ref["wgrad"].norm()).item()
            rows.append(row)
        del res
    return rows


# -- 2. a neuron alone -----------------------------------------------------------------------

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
    p.add_argument("--sizes", default="4096,16384", help="n of the workload, comma separated")
    p.add_argument("--T", type=int, default=500)
    p.add_argument("--B", type=int, default=16)
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--backends", default="triton,reference")
    p.add_argument("--neurons", default=DEFAULT_NEURONS, help="for the neuron-alone part; 'all' or 'none'")
    p.add_argument("--alone-n", type=int, default=16384, help="n of the neuron-alone part")
    p.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "float64"])
    p.add_argument("--json", help="also write the results here")
    p.add_argument("--device", default="cuda", help=argparse.SUPPRESS)  # cpu: smoke test of this script
    a = p.parse_args(argv)
    a.sizes = [int(s) for s in a.sizes.split(",") if s]
    a.backends = [b for b in a.backends.split(",") if b]

    import torch

    global DEVICE
    DEVICE = a.device
    if DEVICE == "cuda" and not torch.cuda.is_available():
        print("gpu_workload: no CUDA device here (torch.cuda.is_available() is False); nothing to measure.")
        return 0
    import spikeforge as sf
    from spikeforge.neurons import REGISTRY

    dtype = getattr(torch, a.dtype)
    why = sf.backends(DEVICE, dtype)
    if why.get("triton"):
        print(f"gpu_workload: the triton backend is unavailable: {why['triton']}")
        a.backends = [b for b in a.backends if b != "triton"]
    hbm = copy_gbs(1.0 if DEVICE == "cuda" else 0.0625)
    if DEVICE == "cuda":
        props = torch.cuda.get_device_properties(0)
        device = f"{props.name}, {props.total_memory / 2**30:.0f} GiB, {props.multi_processor_count} SMs"
    else:
        device = f"{DEVICE} (smoke test of the script, not a measurement)"
    print(f"{device}; torch {torch.__version__}; {a.dtype}; copy bandwidth {hbm:.0f} GB/s (read + write)\n")

    rows = run_workload(a, dtype)
    print(f"Linear(n, n) + LIF, T={a.T}, B={a.B}: forward + backward")
    print(C.markdown_table(
        ["n", "backend", "ms", "peak GiB", "spike rate", "spike mismatch", "dW rel. err", "ran on"],
        [[r["n"], r["backend"], C.fmt(r.get("ms"), ".1f"), C.fmt(r.get("peak_gib"), ".2f"),
          C.fmt(r.get("rate"), ".3f"), C.fmt(r.get("spike_mismatch"), ".1e"), C.fmt(r.get("wgrad_rel_err"), ".1e"),
          r.get("used", r.get("error", "-"))] for r in rows]))

    names = list(REGISTRY) if a.neurons == "all" else [] if a.neurons == "none" else a.neurons.split(",")
    alone = []
    for name in names:
        for b in a.backends:
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
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"device": device, "copy_gbs": hbm, "dtype": a.dtype, "workload": rows, "alone": alone},
                      f, indent=1, default=str)
    return 0


if __name__ == "__main__":
    sys.exit(main())
