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
    .venv/bin/python benchmarks/neuron_alone.py --neurons all --backends cpu --no-peers --pool both --rounds 5

``--pool on,off,tuned`` (any of them; ``both`` = on,off) runs spikeforge with its buffer
pool (the default), with ``SPIKEFORGE_BUFFER_POOL=0`` (fresh outputs every pass, as before
the pool) and with the pool off under the tuned glibc environment, interleaved.
With ``--rounds R > 1`` a second table gives each job's min / median / max over the R
rounds (% of copy bandwidth of the round's median pass, and peak RSS).
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

import _common as C

DEFAULT_NEURONS = "LIF,CubaLIF,ALIF,Izhikevich"
POOLS = ("on", "off", "tuned", "both")
# (mean, std) of the input per model; anything not listed gets the LIF regime.
# XyloLIF counts in integer state units (threshold 64): the LIF regime left it silent (< 0.05 %), (4, 3) fires ~18 %.
INPUT = {"LIF": (0.8, 0.6), "CubaLIF": (1.2, 1.0), "ALIF": (1.5, 1.0), "Izhikevich": (10.0, 5.0), "XyloLIF": (4.0, 3.0)}


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
    copy_before = C.copy_gbs(128, 5)  # the bandwidth this process sees right before its passes
    info = {}

    def forward():
        x.grad = None
        return run(x)

    def first(z):  # per time step: no sequence-sized temporaries in the peak RSS
        info["rate"] = sum(int(torch.count_nonzero(zt)) for zt in z.detach()) / z.numel()

    res = C.time_passes(forward, lambda z: z.backward(g), a.reps, on_first=first)
    peak = C.peak_rss_mb()
    del x, g
    copy_now = C.copy_gbs(128, 5)  # the bandwidth this process sees right after its passes
    full = a.T * a.B * a.n * 4
    return {**res, **info, "states": n_state, "fwd_bytes": (2 + n_state) * full,
            "bwd_bytes": (2 + n_state) * full, "copy_now": copy_now, "copy_before": copy_before, "peak_rss_mb": peak, "setup_rss_mb": setup_rss}


# -- parent ----------------------------------------------------------------------------------

def jobs(a, info: dict) -> list[tuple[str, ...]]:
    names = info["neurons"] if a.neurons == "all" else a.neurons.split(",")
    for nm in names:
        if nm not in info["neurons"]:
            raise SystemExit(f"unknown neuron {nm!r}; registered: {', '.join(info['neurons'])}")
    backends = info["backends"] if a.backends == "available" else a.backends.split(",")
    pools = [v for p in a.pool for v in (["on", "off"] if p == "both" else [p])]
    out = [("spikeforge", nm, b, p) for nm in names for b in backends for p in pools]
    if not a.no_peers and "LIF" in names:
        out.append(("spikingjelly", "LIF", "-", "-"))
    return out


HEADERS = ["framework", "neuron", "backend", "pool", "S", "fwd ms", "bwd ms", "total ms", "CPU ms", "fwd GB/s",
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


def percent(r, bw) -> float:
    return 100 * (r["fwd_bytes"] + r["bwd_bytes"]) / r["total_ms"] / 1e6 / bw


SPREAD = ["framework", "neuron", "backend", "pool", "rounds", "% of copy BW min", "median", "max",
          "% of own copy BW min", "median", "max", "total ms min", "median", "max", "peak RSS MB min", "max"]


def own_percent(r) -> float:
    """% of the copy bandwidth this child measured itself (the higher of before and after
    its passes): the same load for both, so less noisy on a shared machine."""
    own = max(r["copy_now"], r.get("copy_before", 0.0))
    return 100 * (r["fwd_bytes"] + r["bwd_bytes"]) / r["total_ms"] / 1e6 / own


def spread(job, rs, bw) -> list:
    """One job's min / median / max over the rounds that succeeded."""
    ok = [r for r in rs if "error" not in r]
    if not ok:
        return [*job, 0, *["-"] * 11]
    pc, own, ms, rss = ([f(r) for r in ok] for f in (lambda r: percent(r, bw), own_percent,
                                                      lambda r: r["total_ms"], lambda r: r["peak_rss_mb"]))
    three = lambda v, spec: [C.fmt(min(v), spec), C.fmt(statistics.median(v), spec), C.fmt(max(v), spec)]  # noqa
    return [*job, len(ok), *three(pc, ".1f"), *three(own, ".1f"), *three(ms, ".0f"), C.fmt(min(rss)),
            C.fmt(max(rss))]


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
    ap.add_argument("--pool", type=C.comma_list(lambda v: C.checked(lambda p: p in POOLS, v),
                                                 f"a comma-separated list of {', '.join(POOLS)}"),
                    default=["on"], help="spikeforge's buffer pool, comma-separated variants run interleaved: on "
                    "(default), off (SPIKEFORGE_BUFFER_POOL=0), tuned (off, with --malloc-tuned's environment), "
                    "both (= on,off)")
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
    print(f"# commit {C.git_revision('src', 'benchmarks/neuron_alone.py')}")
    if "tuned" in a.pool:
        print("# pool 'tuned' rows: SPIKEFORGE_BUFFER_POOL=0 and " + " ".join(f"{k}={v}" for k, v in C.MALLOC_TUNED.items()))
    print(f"# neuron alone: T={a.T}, B={a.B}, n={a.n}, forward + backward, median of {a.reps} after {C.WARMUP} warm-ups"
          + (f", fastest of {a.rounds} interleaved rounds" if a.rounds > 1 else "")
          + "; CPU ms = process CPU time per pass, all threads; load = 1-min load average after the child")
    print(f"# copy bandwidth (256 MiB copy_, read + write counted): {bw:.1f} GB/s")

    rounds: dict = {}

    def one(job, rnd):
        print(f"  running {' '.join(job)} (round {rnd + 1}) ...", file=sys.stderr, flush=True)
        job_env = {**env, "SPIKEFORGE_BUFFER_POOL": "1" if job[3] == "on" else "0"}
        if job[3] == "tuned":
            job_env.update(C.MALLOC_TUNED)
        r = C.run_child(__file__, [*job[:3], a.n, a.T, a.B, a.reps, a.threads], job_env, a.timeout)
        rounds.setdefault(job, []).append(r)
        if "error" not in r:  # progress, so that an interrupted run still says something
            print(f"    {r['total_ms']:.0f} ms, {own_percent(r):.1f} % of own copy BW, {r['peak_rss_mb']:.0f} MB",
                  file=sys.stderr, flush=True)
        return r

    results = C.best_of_rounds(jobs(a, info), a.rounds, one)
    raw = [{"job": job, "rounds": rounds[job], **r} for job, r in results.items()]
    print(C.markdown_table(HEADERS, [row(job, r, bw) for job, r in results.items()]))
    if a.rounds > 1:
        print(f"\n# over the {a.rounds} rounds: % of copy bandwidth (each round: median of {a.reps} passes), "
              "total ms, peak RSS")
        print(C.markdown_table(SPREAD, [spread(job, rs, bw) for job, rs in rounds.items()]))
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "copy_gbs": bw, "results": raw}, f,
                      indent=1)


if __name__ == "__main__":
    main()
