"""Values the fused CPU backward keeps from its recomputation (issue 15 §4; ``kernels.csource.kept``)
and steps cut in two loops (``kernels.csource._staged``): forward + backward of one neuron alone
(T=500, B=16, n=4096, float32, the cpu backend, only x's gradient wanted), with kernels built for each
``--variants`` entry, interleaved in one process; medians of the forward and backward ms. An entry is
a set of ``csource.KEEP`` kinds (``none``, ``costly``, ``costly+x``, ``next+costly+x``), optionally
followed by ``@`` and the work in estimated cycles from which a forward step is cut in two loops
(``csource.STAGE_WORK``; ``@inf``: never).

    .venv/bin/python benchmarks/kept_values.py --variants none,costly,costly+x --reps 10
    .venv/bin/python benchmarks/kept_values.py --variants next+costly+x@inf,next+costly+x@80 --neurons EIF,XyloLIF
"""
from __future__ import annotations

import argparse
import statistics

import _common as C


def kinds(variant: str) -> frozenset:
    keep = variant.split("@")[0]
    return frozenset() if keep == "none" else frozenset(keep.split("+"))


def stage_work(variant: str, default: float) -> float:
    return float(variant.split("@")[1]) if "@" in variant else default


def measure(name: str, variants: list[str], reps: int, T: int, B: int, n: int) -> dict[str, tuple]:
    from spikeforge.kernels import _fused, cpu, csource

    one, ((key, k0),) = C.neuron_pass(name, T, B, n)
    built = {}
    default, work = csource.KEEP, csource.STAGE_WORK
    try:
        for v in variants:
            csource.KEEP, csource.STAGE_WORK = kinds(v), stage_work(v, work)
            built[v] = (cpu.Kernel(k0.tr.spec, k0.tr.surrogate, k0.tr.dtype, k0.layout, k0.want),
                        ", ".join(csource.kept(k0.tr, k0.want)[0]) or "-")
    finally:
        csource.KEEP, csource.STAGE_WORK = default, work
    times: dict[str, list] = {v: [] for v in variants}
    for rep in range(reps + 1):
        for v in variants:
            _fused._KERNELS[key] = built[v][0]
            one()
            if rep:
                times[v].append(one())
    _fused._KERNELS.clear()
    return {v: (built[v][0].K, built[v][1], statistics.median(f for f, _ in t) * 1e3,
                statistics.median(b for _, b in t) * 1e3) for v, t in times.items()}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--variants", default="none,costly,costly+x")
    ap.add_argument("--neurons", default="IF,LIF,PLIF,LI,ALIF,CubaLIF,CubaLI,Izhikevich,QIF,EIF,XyloLIF")
    ap.add_argument("--reps", type=C.positive_int, default=10)
    ap.add_argument("--threads", type=C.positive_int, default=2)
    a = ap.parse_args(argv)
    import torch
    torch.set_num_threads(a.threads)
    variants = a.variants.split(",")
    rows = []
    for name in a.neurons.split(","):
        res = measure(name, variants, a.reps, 500, 16, 4096)
        base = res[variants[0]][2] + res[variants[0]][3]
        for v, (k, nodes, f, b) in res.items():
            rows.append([name, v, nodes, str(k), C.fmt(f, ".1f"), C.fmt(b, ".1f"), C.fmt(f + b, ".1f"),
                         C.fmt((f + b) / base, ".3f")])
    print(f"# kept values: neuron alone, T=500, B=16, n=4096, float32, cpu backend, grad of x only, {a.reps} "
          f"interleaved reps, medians; ratio = total / total of {variants[0]}")
    print(f"# {C.machine_info(a.threads, False, torch.__version__, False)}")
    print(C.markdown_table(["neuron", "variant", "kept (traced nodes)", "K", "fwd ms", "bwd ms", "total ms", "ratio"], rows))


if __name__ == "__main__":
    main()
