"""A neuron layer alone (no Linear): achieved memory bandwidth of forward + backward.

Input x (T, B, n) = mean + std * randn (requires grad; per-neuron mean/std below put
each model in a firing regime); forward z = neuron(x); backward z.backward(g) with a
dense, pre-allocated g (a real upstream gradient, not the stride-0 ones of z.sum()).

Byte accounting (nominal, float32, F = T * B * n * 4 bytes; S = number of state variables
of the model, e.g. LIF 1, CubaLIF/ALIF/Izhikevich 2):
  forward   read x, write z, write one saved tensor per state variable  = (2 + S) F
  backward  read g, read the S saved tensors, write grad_x              = (2 + S) F
  LIF: 6 F = 6 full-tensor passes, 786 MB at n = 4096 (as in PERFORMANCE.md).
GB/s = nominal bytes / measured time: what an implementation that moves exactly these
bytes would need to sustain. An implementation that saves less (uint8 spikes,
recomputation) gets credit for bytes it did not move; one that moves more pays for them.

The machine's copy bandwidth is measured first, in this process: dst.copy_(src) of a
256 MiB float32 tensor, median of 9 after a warm-up, counting read + write (2 x 256 MiB)
to match the accounting above. Each measurement then runs in its own process.

    .venv-peers/bin/python benchmarks/neuron_alone.py
    .venv-peers/bin/python benchmarks/neuron_alone.py --neurons all --backends cpu --malloc-tuned
"""
from __future__ import annotations

import argparse
import json
import sys

import _common as C

DEFAULT_NEURONS = "LIF,CubaLIF,ALIF,Izhikevich"
# (mean, std) of the input per model; anything not listed gets the LIF regime.
INPUT = {"LIF": (0.8, 0.6), "CubaLIF": (1.2, 1.0), "ALIF": (1.5, 1.0), "Izhikevich": (10.0, 5.0)}


# -- child: one (framework, neuron, backend) -------------------------------------------------

def _build(framework: str, neuron: str, backend: str):
    """(run(x) -> z, number of state variables)."""
    if framework == "spikingjelly":
        if neuron != "LIF":
            raise ValueError("the SpikingJelly comparison is LIF only")
        from spikingjelly.activation_based import neuron as sjn

        lif = sjn.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, step_mode="m")

        def run(x):
            lif.reset()
            return lif(x)
        return run, 1
    import spikeforge as sf

    mod = sf.nn.MODULES[neuron](backend=backend)  # the model's defaults (LIF: tau 2, hard reset)
    return mod, len(mod.spec_type.state)


def child(a) -> dict:
    import torch

    C.child_setup(a.threads)
    run, n_state = _build(a.framework, a.neuron, a.backend)
    mean, std = INPUT.get(a.neuron, INPUT["LIF"])
    torch.manual_seed(0)
    x = (mean + std * torch.randn(a.T, a.B, a.n)).requires_grad_()
    g = torch.rand(a.T, a.B, a.n)
    setup_rss = C.rss_mb()
    info = {}

    def forward():
        x.grad = None
        return run(x)

    def first(z):
        info["rate"] = float((z.detach() != 0).float().mean())

    res = C.time_passes(forward, lambda z: z.backward(g), a.reps, on_first=first)
    peak = C.peak_rss_mb()
    del x, g
    copy_now = C.copy_gbs(128, 5)  # the bandwidth this process sees right after its passes
    full = a.T * a.B * a.n * 4
    return {**res, **info, "states": n_state, "fwd_bytes": (2 + n_state) * full,
            "bwd_bytes": (2 + n_state) * full, "copy_now": copy_now, "peak_rss_mb": peak, "setup_rss_mb": setup_rss}


# -- parent ----------------------------------------------------------------------------------

def jobs(a, info: dict) -> list[tuple[str, str, str]]:
    names = info["neurons"] if a.neurons == "all" else a.neurons.split(",")
    for nm in names:
        if nm not in info["neurons"]:
            raise SystemExit(f"unknown neuron {nm!r}; registered: {', '.join(info['neurons'])}")
    backends = info["backends"] if a.backends == "available" else a.backends.split(",")
    out = [("spikeforge", nm, b) for nm in names for b in backends]
    if not a.no_peers and "LIF" in names:
        out.append(("spikingjelly", "LIF", "-"))
    return out


HEADERS = ["framework", "neuron", "backend", "S", "fwd ms", "bwd ms", "total ms", "CPU ms", "fwd GB/s",
           "bwd GB/s", "total GB/s", "% of copy BW", "copy GB/s after", "firing", "peak RSS MB", "load"]


def row(job, r, bw) -> list:
    if "error" in r:
        return [*job, "", r["error"][:70], *[""] * 11]
    gbs = lambda b, ms: b / ms / 1e6  # noqa: E731
    tot = gbs(r["fwd_bytes"] + r["bwd_bytes"], r["total_ms"])
    ms = [C.fmt(r[k]) for k in ("fwd_ms", "bwd_ms", "total_ms")] + [C.fmt(r.get("cpu_ms"))]
    rates = [C.fmt(gbs(r["fwd_bytes"], r["fwd_ms"]), ".2f"), C.fmt(gbs(r["bwd_bytes"], r["bwd_ms"]), ".2f"),
             C.fmt(tot, ".2f"), C.fmt(100 * tot / bw, ".1f"), C.fmt(r["copy_now"], ".1f")]
    return [*job, r["states"], *ms, *rates, C.fmt(r.get("rate"), ".1%"), C.fmt(r["peak_rss_mb"]),
            C.fmt(r.get("load"), ".1f")]


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--neurons", default=DEFAULT_NEURONS,
                    help=f"comma-separated or 'all' (default {DEFAULT_NEURONS})")
    ap.add_argument("--backends", default="available",
                    help="comma-separated spikeforge backends (default: all available)")
    ap.add_argument("--no-peers", action="store_true", help="skip SpikingJelly's LIF")
    ap.add_argument("--n", type=int, default=4096)
    ap.add_argument("--T", type=int, default=500)
    ap.add_argument("--B", type=int, default=16)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=1,
                    help="run all jobs this many times, interleaved, and keep each one's fastest round")
    ap.add_argument("--threads", type=int, default=2)
    C.add_child_options(ap)
    ap.add_argument("--child", nargs=8, metavar=("FW", "NEURON", "BACKEND", "N", "T", "B", "REPS", "THREADS"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        fw, nm, be, n, T, B, reps, threads = a.child
        ns = argparse.Namespace(framework=fw, neuron=nm, backend=be, n=int(n), T=int(T), B=int(B),
                                reps=int(reps), threads=int(threads))
        print(json.dumps(child(ns)))
        return

    env = C.child_env(a.threads, a.malloc_tuned, a.omp_passive)
    info = C.probe(env, a.threads, bandwidth=True)
    bw = info["copy_gbs"]
    machine = C.machine_info(a.threads, a.malloc_tuned, info["torch"], a.omp_passive)
    print(f"# {machine}")
    print(f"# neuron alone: T={a.T}, B={a.B}, n={a.n}, forward + backward, median of {a.reps} after {C.WARMUP} warm-ups"
          + (f", fastest of {a.rounds} interleaved rounds" if a.rounds > 1 else "")
          + "; CPU ms = process CPU time per pass, all threads; load = 1-min load average after the child")
    print(f"# copy bandwidth (256 MiB copy_, read + write counted): {bw:.1f} GB/s")

    def one(job, rnd):
        print(f"  running {' '.join(job)} (round {rnd + 1}) ...", file=sys.stderr, flush=True)
        return C.run_child(__file__, [*job, a.n, a.T, a.B, a.reps, a.threads], env, a.timeout)

    results = C.best_of_rounds(jobs(a, info), a.rounds, one)
    raw = [{"job": job, **r} for job, r in results.items()]
    print(C.markdown_table(HEADERS, [row(job, r, bw) for job, r in results.items()]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "copy_gbs": bw, "results": raw}, f,
                      indent=1)


if __name__ == "__main__":
    main()
