"""``torch.compile`` of a multi-layer SNN: graph breaks, and time beside eager (fused ``cpu`` backend).

Network: Linear(n, n) + LIF + Linear(n, n) + LIF + Linear(n, 10) + LI on (T, B, n) input;
loss = readout.square().sum(); forward + backward. Eager and compiled (inductor and
aot_eager) are timed in interleaved rounds in one process; the figure is the median per
pass, in milliseconds, and the ratio to eager.

    .venv/bin/python benchmarks/compile_network.py
"""
from __future__ import annotations

import argparse
import copy
import statistics
import time

import torch
from torch import nn

import _common as C
import spikeforge as sf


def network(n: int) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(n, n), sf.nn.LIF(backend="cpu"), nn.Linear(n, n), sf.nn.LIF(backend="cpu"),
                        nn.Linear(n, 10), sf.nn.LI(backend="cpu"))
    with torch.no_grad():
        net[0].bias.fill_(0.8)
        net[2].bias.fill_(0.8)
    return net


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--T", type=int, default=100)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--n", type=int, default=512)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    x = torch.rand(a.T, a.B, a.n)
    eager = network(a.n)
    explained = torch._dynamo.explain(copy.deepcopy(eager))(x)
    runs = {"eager": eager}
    compile_s = {}
    for backend in ("aot_eager", "inductor"):
        t0 = time.perf_counter()
        runs[backend] = torch.compile(copy.deepcopy(eager), backend=backend, fullgraph=True)
        runs[backend](x).square().sum().backward()       # compiles forward and backward
        compile_s[backend] = time.perf_counter() - t0

    def one(net):
        t0 = time.perf_counter()
        net(x).square().sum().backward()
        return (time.perf_counter() - t0) * 1e3

    times = {k: [] for k in runs}
    for _ in range(a.rounds):
        for k, net in runs.items():
            one(net)
            times[k].append(statistics.median(one(net) for _ in range(a.reps)))
    print(C.machine_info(a.threads, False, torch.__version__))
    print(f"# T={a.T}, B={a.B}, n={a.n}; graph breaks: {explained.graph_break_count}, "
          f"graphs: {explained.graph_count}")
    floor = min(times["eager"])
    rows = [[k, C.fmt(min(v), ".1f"), C.fmt(min(v) / floor, ".2f"), C.fmt(compile_s.get(k), ".1f")]
            for k, v in times.items()]
    print(C.markdown_table(["run", "ms / pass (best round)", "x eager", "first call s"], rows))


if __name__ == "__main__":
    main()
