"""The Open Neuromorphic reference workload, spikeforge beside its peers.

``Linear(n, n)`` (bias 0.8, so 5-40 % of the neurons fire) then one LIF layer (tau = 2,
decay-input form, threshold 1, hard reset to 0) on an input of shape (T, B, n);
loss = output.sum(); time = forward + backward, median of ``--reps`` after ``_common.WARMUP`` warm-up passes.
Each framework and size runs in its own process (peak RSS is that framework's alone).

Every framework gets the same Linear weights and input (seeded), and the script checks
that they emit the same spikes. See benchmarks/README.md for the peers' set-up.

    .venv-peers/bin/python benchmarks/workload.py                     # n = 512, 2048
    .venv-peers/bin/python benchmarks/workload.py --sizes 512 --frameworks all --malloc-tuned
    .venv-peers/bin/python benchmarks/workload.py --frameworks spikeforge-cpu,spikeforge-fused,spikingjelly

``spikeforge-fused`` is ``sf.nn.SpikingLinear`` (the Linear and the LIF fused, run in time
chunks; ``spikeforge-fused-<steps>`` fixes the chunk length), on the same Linear weights.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import _common as C

PEERS = {"spikingjelly": "SJ", "snntorch": "snnTorch", "norse": "Norse"}
EXTRAS = ("snntorch-unbind", "norse-unbind", "autograd-loop")
FUSED = "spikeforge-fused"  # sf.nn.SpikingLinear: its builder takes the Linear too
TOL = 1e-3  # spike counts and per-element disagreement, relative to the reference


# -- the neuron layers, one builder per framework --------------------------------------------
# A builder returns (run, scale): run(cur) maps the Linear's output (T, B, n) to spikes
# (T, B, n); scale multiplies the Linear's weights and bias (exact: a power of two).

def _spikeforge(backend):
    def build():
        import spikeforge as sf

        lif = sf.nn.LIF(tau=2.0, backend=backend)  # decay-input, hard reset to 0, threshold 1
        return lif, 1.0
    return build


def _spikingjelly():
    from spikingjelly.activation_based import neuron

    # 2.0 has no backend argument: with autograd on a CPU tensor, torch.ops.sj_lif runs its
    # torch reference (a Python loop over x_seq, differentiated by autograd).
    lif = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, step_mode="m")

    def run(cur):
        lif.reset()
        return lif(cur)
    return run, 1.0


def _snntorch(unbind=False):
    def build():
        import snntorch as snn
        import torch

        # Leaky: mem = beta * mem + input, so beta = 1 - 1/tau and the input is scaled by
        # 1/tau through the Linear. reset "zero" with the default one-step reset delay
        # emits the same spikes as a hard reset (the delayed reset zeroes mem first).
        lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero")

        def run(cur):
            mem = torch.zeros(cur.shape[1:])
            steps = cur.unbind(0) if unbind else (cur[t] for t in range(cur.shape[0]))
            out = []
            for c in steps:  # the tutorials' loop: cur[step]
                spk, mem = lif(c, mem)
                out.append(spk)
            return torch.stack(out)
        return run, 0.5
    return build


def _norse(unbind=False):
    def build():
        import norse.torch as norse
        import torch

        t = torch.tensor
        p = norse.LIFBoxParameters(tau_mem_inv=t(0.5), v_leak=t(0.0), v_th=t(1.0), v_reset=t(0.0))
        cell = norse.LIFBoxCell(p, dt=1.0)  # v += dt/tau (v_leak - v + x): the decay-input form
        if not unbind:
            lifted = norse.Lift(cell)  # documented sequence form; indexes x[ts]
            return (lambda cur: lifted(cur)[0]), 1.0

        def run(cur):
            state, out = None, []
            for c in cur.unbind(0):
                z, state = cell(c, state)
                out.append(z)
            return torch.stack(out)
        return run, 1.0
    return build


def _autograd_loop():
    import torch
    from spikeforge.surrogate import Sigmoid, spike

    sg = Sigmoid()

    def run(cur):  # the plain loop of PERFORMANCE.md: x[t] on a tensor that requires grad
        v, out = torch.zeros(cur.shape[1:]), []
        for t in range(cur.shape[0]):
            h = v + (cur[t] - v) / 2.0
            z = spike(h - 1.0, sg)
            v = h * (1.0 - z)
            out.append(z)
        return torch.stack(out)
    return run, 1.0


def _spikeforge_fused(chunk):
    def build(lin):
        import spikeforge as sf

        layer = sf.nn.SpikingLinear(lin.in_features, lin.out_features, sf.nn.LIF(tau=2.0, backend="cpu"),
                                    chunk=chunk)
        layer.linear = lin  # the same weights as every other framework

        def run(x):
            out = layer(x)
            if not layer.last_fused:
                raise RuntimeError("SpikingLinear ran unfused")
            return out
        return run
    return build


def builder(name: str):
    if name == "floor":
        return None
    if name.startswith(FUSED):
        return None
    if name.startswith("spikeforge-"):
        return _spikeforge(name.split("-", 1)[1])
    return {"spikingjelly": _spikingjelly, "snntorch": _snntorch(), "norse": _norse(),
            "snntorch-unbind": _snntorch(True), "norse-unbind": _norse(True),
            "autograd-loop": _autograd_loop}[name]


# -- child: one framework, one size ----------------------------------------------------------

def child(a) -> dict:
    import torch

    C.child_setup(a.threads)
    build = builder(a.framework)
    run, scale = build() if build else (None, 1.0)
    torch.manual_seed(0)  # same weights and input in every child
    lin = torch.nn.Linear(a.n, a.n)
    x = torch.randn(a.T, a.B, a.n)
    with torch.no_grad():
        lin.bias.fill_(0.8)
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)
    fused = None
    if a.framework.startswith(FUSED):  # the layer takes x itself: Linear and neuron in one call
        suffix = a.framework[len(FUSED) + 1:]
        fused = _spikeforge_fused(int(suffix) if suffix else None)(lin)
    setup_rss = C.rss_mb()
    info = {}

    def forward():
        for p in lin.parameters():
            p.grad = None
        z = fused(x) if fused else lin(x) if run is None else run(lin(x))
        return z.sum(), z

    def first(out):
        z = out[1].detach()
        if run is not None or fused is not None:
            info["spikes"], info["numel"] = int((z != 0).sum()), z.numel()
            import numpy as np

            np.save(a.spikes, np.packbits((z != 0).numpy().reshape(-1)))

    res = C.time_passes(forward, lambda out: out[0].backward(), a.reps, on_first=first)
    return {**res, **info, "peak_rss_mb": C.peak_rss_mb(), "setup_rss_mb": setup_rss,
            "threads": torch.get_num_threads()}


# -- parent ----------------------------------------------------------------------------------

def frameworks(arg: str, backends: list[str]) -> list[str]:
    sf = [f"spikeforge-{b}" for b in backends] + ([FUSED] if "cpu" in backends else [])
    default = ["floor", *sf, *PEERS]
    if arg == "default":
        return default
    if arg == "all":
        return [*default, *EXTRAS]
    names = [s.strip() for s in arg.split(",") if s.strip()]
    return ["floor", *[n for n in names if n != "floor"]]  # ratios need the floor


def agreement(results: dict, n: int, paths: dict) -> list[str]:
    """Spike counts and per-element disagreement of every framework against the first."""
    import numpy as np

    have = [f for f, r in results.items() if "spikes" in r]
    if not have:
        return []
    ref = have[0]
    a = np.unpackbits(np.load(paths[ref]))
    out = [f"spike check n={n}, against {ref}: {results[ref]['spikes']:,} spikes of "
           f"{results[ref]['numel']:,} (tolerance {TOL:.1%} of the count and of the elements)"]
    for f in have[1:]:
        r = results[f]
        diff = int(np.count_nonzero(a != np.unpackbits(np.load(paths[f]))))
        dc = (r["spikes"] - results[ref]["spikes"]) / max(results[ref]["spikes"], 1)
        ok = abs(dc) <= TOL and diff <= TOL * r["numel"]
        out.append(f"  {f:18s} {r['spikes']:>12,} spikes ({dc:+.4%}), {diff:,} elements differ "
                   f"({diff / r['numel']:.4%})  {'OK' if ok else 'MISMATCH'}")
    return out


def table(results: dict, n: int) -> list[list]:
    floor = results.get("floor", {}).get("total_ms")
    peers = {p: results.get(p, {}).get("total_ms") for p in PEERS}
    rows = []
    for f, r in results.items():
        if "error" in r:
            rows.append([f, n, r["error"][:60], *[""] * 12])
            continue
        t = r["total_ms"]
        ratio = lambda d: C.fmt(t / d if d else None, ".2f")  # noqa: E731
        rate = C.fmt(r["spikes"] / r["numel"] if "spikes" in r else None, ".1%")
        rows.append([f, n, C.fmt(r["fwd_ms"]), C.fmt(r["bwd_ms"]), C.fmt(t), C.fmt(r.get("cpu_ms")),
                     C.fmt(r["peak_rss_mb"]),
                     C.fmt(r["peak_rss_mb"] - r["setup_rss_mb"]), rate, ratio(floor),
                     *[ratio(peers[p]) for p in PEERS], C.fmt(r.get("load"), ".1f")])
    return rows


HEADERS = ["framework", "n", "fwd ms", "bwd ms", "total ms", "CPU ms", "peak RSS MB", "RSS growth MB",
           "firing", "x floor", *[f"x {v}" for v in PEERS.values()], "load"]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="512,2048", help="comma-separated n (default 512,2048)")
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3, help="timed repetitions after the warm-up passes (_common.WARMUP)")
    ap.add_argument("--rounds", type=int, default=1,
                    help="run the whole framework list this many times, interleaved, and keep each "
                         "framework's fastest round (de-noises a shared machine)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frameworks", default="default",
                    help="'default' (floor, every available spikeforge backend, spikingjelly, snntorch, "
                         f"norse), 'all' (adds {', '.join(EXTRAS)}) or a comma-separated list")
    C.add_child_options(ap)
    ap.add_argument("--child", nargs=7, metavar=("FW", "N", "T", "B", "REPS", "THREADS", "SPIKES"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        fw, n, T, B, reps, threads, spikes = a.child
        ns = argparse.Namespace(framework=fw, n=int(n), T=int(T), B=int(B), reps=int(reps),
                                threads=int(threads), spikes=spikes)
        print(json.dumps(child(ns)))
        return

    env = C.child_env(a.threads, a.malloc_tuned, a.omp_passive)
    info = C.probe(env, a.threads)
    fws = frameworks(a.frameworks, info["backends"])
    machine = C.machine_info(a.threads, a.malloc_tuned, info["torch"], a.omp_passive)
    print(f"# {machine}")
    print(f"# workload: Linear(n, n) + LIF, T={a.T}, B={a.B}, median of {a.reps} after {C.WARMUP} warm-ups"
          + (f", fastest of {a.rounds} interleaved rounds" if a.rounds > 1 else "")
          + "; 'x P' = this total / P's total (< 1: faster than P); CPU ms = process CPU time per pass, "
          "all threads; load = 1-min load average after the child")
    everything = {}
    with tempfile.TemporaryDirectory() as tmp:
        for n in map(int, a.sizes.split(",")):
            paths = {f: os.path.join(tmp, f"{f}-{n}.npy") for f in fws}

            def one(f, rnd):
                print(f"  running {f} n={n} (round {rnd + 1}) ...", file=sys.stderr, flush=True)
                return C.run_child(__file__, [f, n, a.T, a.B, a.reps, a.threads, paths[f]], env, a.timeout)

            results = C.best_of_rounds(fws, a.rounds, one)
            print(C.markdown_table(HEADERS, table(results, n)), flush=True)
            print("\n".join(agreement(results, n, paths)) + "\n", flush=True)
            everything[n] = results
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "results": everything}, f, indent=1)


if __name__ == "__main__":
    main()
