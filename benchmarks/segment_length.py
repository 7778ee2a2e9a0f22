"""The fused CPU backward's segment length (issue 15 §4): forward + backward of one neuron
alone (T=500, B=16, n=4096, float32, the cpu backend), with its kernel's checkpoint interval K
set to the values that ``--segment-bytes`` (per state variable) give (``kernels.cpu.segment_steps``,
the rule the kernels apply to ``SEGMENT_BYTES``), interleaved in one process; medians of the forward and backward ms.

    .venv/bin/python benchmarks/segment_length.py --segment-bytes 524288,2097152 --reps 10
"""
from __future__ import annotations

import argparse
import statistics

import _common as C


def measure(name: str, sizes: list[int], reps: int, T: int, B: int, n: int) -> dict[int, tuple[float, float]]:
    from spikeforge.kernels import _fused, cpu, csource

    one, named = C.neuron_pass(name, T, B, n)
    kernels = [k for _, k in named]
    tr, want = kernels[0].tr, kernels[0].want
    ks = {s: cpu.segment_steps(csource.step_values(tr, want), tr.n_state, tr.dtype.itemsize, s) for s in sizes}
    times: dict[int, list] = {s: [] for s in sizes}
    default = [k.K for k in kernels]   # the kernel objects are cached (kernels.cpu.CPU.kernel): restored below
    try:
        for rep in range(reps + 1):
            for s in sizes:
                for k in kernels:
                    k.K = ks[s]
                one()
                if rep:
                    times[s].append(one())
    finally:
        for k, K in zip(kernels, default):
            k.K = K
        _fused._KERNELS.clear()
    return {s: (ks[s], statistics.median(f for f, _ in v) * 1e3, statistics.median(b for _, b in v) * 1e3)
            for s, v in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--segment-bytes", type=C.positive_ints, default=[1 << 19, 1 << 21])
    ap.add_argument("--neurons", default="IF,LIF,PLIF,LI,ALIF,CubaLIF,CubaLI,Izhikevich,QIF,EIF,XyloLIF")
    ap.add_argument("--reps", type=C.positive_int, default=10)
    ap.add_argument("--threads", type=C.positive_int, default=2)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    base = a.segment_bytes[0]
    rows = []
    for name in a.neurons.split(","):
        res = measure(name, a.segment_bytes, a.reps, 500, 16, 4096)
        b_total = res[base][1] + res[base][2]
        for s, (k, f, b) in res.items():
            rows.append([name, str(s), str(k), C.fmt(f, ".1f"), C.fmt(b, ".1f"), C.fmt(f + b, ".1f"),
                         C.fmt((f + b) / b_total, ".2f")])
    print(f"# segment length: neuron alone, T=500, B=16, n=4096, float32, cpu backend, {a.reps} interleaved reps, "
          f"medians; ratio = total / total at {base} bytes")
    print(f"# {C.machine_info(a.threads, False, torch.__version__, False)}")
    print(C.markdown_table(["neuron", "segment bytes per state", "K", "fwd ms", "bwd ms", "total ms", "ratio"], rows))


if __name__ == "__main__":
    main()
