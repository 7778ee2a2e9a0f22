"""Streaming stores for the large outputs (issue 15 §4; ``kernels.cpu.STREAM_BYTES``): forward +
backward of one neuron alone (T=500, B=16, n=4096, float32, the cpu backend) with its outputs written
by streaming stores (``on``: every output streamed) and by ordinary ones (``off``), the two
interleaved in one process (the kernel is the same; the choice is made per call); medians of the
forward and backward ms. ``cpu.STREAM_BYTES`` defaults to streaming only on Intel CPUs, where
``on`` measured faster (RESULTS.md 19n, 19p).

    .venv/bin/python benchmarks/streaming_stores.py --reps 10
"""
from __future__ import annotations

import argparse
import statistics
import sys

import _common as C

LIMITS = {"on": 0, "off": sys.maxsize}


def measure(name: str, reps: int, T: int, B: int, n: int) -> dict[str, tuple[float, float]]:
    """``{"on" | "off": (forward ms, backward ms)}``, medians of ``reps`` interleaved passes each."""
    from spikeforge.kernels import cpu

    one, _ = C.neuron_pass(name, T, B, n)
    default = cpu.STREAM_BYTES
    times: dict[str, list] = {v: [] for v in LIMITS}
    try:
        for rep in range(reps + 1):
            for v, limit in LIMITS.items():
                cpu.STREAM_BYTES = limit
                t = one()
                if rep:
                    times[v].append(t)
    finally:
        cpu.STREAM_BYTES = default
    return {v: (statistics.median(f for f, _ in t) * 1e3, statistics.median(b for _, b in t) * 1e3)
            for v, t in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--neurons", default="IF,LIF,PLIF,LI,ALIF,CubaLIF,CubaLI,Izhikevich,QIF,EIF,XyloLIF")
    ap.add_argument("--reps", type=C.positive_int, default=10)
    ap.add_argument("--threads", type=C.positive_int, default=2)
    a = ap.parse_args(argv)
    import torch
    from spikeforge.kernels import cpu
    torch.set_num_threads(a.threads)
    rows = []
    for name in a.neurons.split(","):
        res = measure(name, a.reps, 500, 16, 4096)
        off = sum(res["off"])
        for v, (f, b) in res.items():
            rows.append([name, v, C.fmt(f, ".1f"), C.fmt(b, ".1f"), C.fmt(f + b, ".1f"), C.fmt((f + b) / off, ".3f")])
    print(f"# streaming stores: neuron alone, T=500, B=16, n=4096, float32, cpu backend, {a.reps} interleaved "
          f"reps, medians; ratio = total / total with ordinary stores; this machine's default: "
          f"{'on' if cpu.STREAM_BYTES < sys.maxsize else 'off'}")
    print(f"# {C.machine_info(a.threads, False, torch.__version__, False)}")
    print(C.markdown_table(["neuron", "streaming", "fwd ms", "bwd ms", "total ms", "ratio"], rows))


if __name__ == "__main__":
    main()
