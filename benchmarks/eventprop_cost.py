"""EventProp against surrogate-gradient BPTT: memory and time of one training step as the
simulated time T grows, and as the spike count grows (issue 11, acceptance 4).

The network, for both: ``Linear(5, H) + CubaLIF + Linear(H, 3, bias=False) + CubaLI``
(default time constants, dt = 1), B samples of latency-coded input (5 channels, each spikes
once in the first 20 time units, ``sf.encoding.latency_times``), so the spikes do not
change with T; the hidden layer is silent long before T = 500. First-layer weights
``U(0, s)`` for each ``--scales`` s (a larger s: more hidden spikes).

* ``eventprop``: ``eventprop.run(model, Events.from_times(times), t_end=T, record=...)``,
  the readout read at ``--record`` points spread over ``[0, --span]`` (the readout's peak
  lies there; hidden spikes end by t ~ 40), loss ``max_membrane_ce`` on them.
* ``bptt``: the same modules' ordinary forward on the ``(T, B, 5)`` spike raster (default
  backend, surrogate gradient), loss ``max_membrane_ce`` over all T steps.

One training step = forward + loss + ``backward()``. Each (method, scale, T) runs in its own
child process (``_common.run_child``): ms per step (median of ``--reps`` after
``_common.WARMUP`` warm-up steps), peak RSS (VmHWM) and its growth over the RSS once the
model and input exist, hidden spikes per sample, the loss.

    PYTHONPATH=src python benchmarks/eventprop_cost.py              # ~1-2 min on 2 cores
    PYTHONPATH=src python benchmarks/eventprop_cost.py --T 500,5000,20000 --scales 12
"""
from __future__ import annotations

import argparse
import json
import math
import os
import sys

import _common as C

METHODS = ("eventprop", "bptt")


def setup(scale: float, T: int, B: int, H: int, seed: int = 0):
    """The model, the input spike times ``(B, 5)`` (inf: silent) and the targets."""
    import torch

    import spikeforge as sf

    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(5, H), sf.nn.CubaLIF(), torch.nn.Linear(H, 3, bias=False),
                              sf.nn.CubaLI())
    with torch.no_grad():
        net[0].weight.uniform_(0.0, scale)
        net[2].weight.mul_(2.0)
    g = torch.Generator().manual_seed(seed + 1)
    times = sf.encoding.latency_times(torch.rand(B, 5, generator=g), num_steps=min(T, 20))
    return net, times, torch.randint(0, 3, (B,), generator=g)


def step_fns(method: str, net, times, target, T: int, record: int, span: float):
    """``(forward, backward, hidden spikes per sample)`` of one training step."""
    import torch

    import spikeforge as sf
    from spikeforge.learning import eventprop as ep

    if method == "eventprop":
        events = ep.Events.from_times(times)
        rec = torch.linspace(span / record, span, record)

        def forward():
            out = ep.run(net, events, float(T), record=rec)
            return sf.losses.max_membrane_ce(out.readout, target)

        def spikes():
            with torch.no_grad():
                return ep.run(net, events, float(T), record=rec).spikes[0].counts.float().mean().item()
    else:
        raster = torch.zeros(T, *times.shape)
        b, c = torch.nonzero(torch.isfinite(times), as_tuple=True)
        raster[times[b, c].long(), b, c] = 1.0

        def forward():
            return sf.losses.max_membrane_ce(net(raster), target)

        def spikes():
            with torch.no_grad():
                return (net[1](net[0](raster)).sum() / times.shape[0]).item()

    def backward(out):
        for p in net.parameters():
            p.grad = None
        out.backward()
    return forward, backward, spikes


def measure(method: str, scale: float, T: int, B: int, H: int, record: int, span: float, reps: int,
            warmup: int = C.WARMUP) -> dict:
    """One measurement, in this process (the parent runs it in a child)."""
    net, times, target = setup(scale, T, B, H)
    forward, backward, spikes = step_fns(method, net, times, target, T, record, span)
    base = C.rss_mb()
    losses = []
    r = C.time_passes(forward, backward, reps, warmup=warmup, on_first=lambda out: losses.append(out.item()))
    r.update(method=method, scale=scale, T=T, peak_mb=C.peak_rss_mb(), base_mb=base, loss=losses[0],
             spikes=spikes())
    r["growth_mb"] = r["peak_mb"] - base
    return r


def _ratio(a, b) -> str:
    return "-" if a is None or b is None or not b else f"{a / b:.2f}"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--T", default="500,5000", help="time steps (dt = 1), comma-separated")
    pos = lambda x: C.checked(lambda v: 0 < v < math.inf, float(x))  # noqa: E731
    ap.add_argument("--scales", type=C.comma_list(pos, "positive numbers"), default=[12.0, 80.0],
                    help="first-layer weights U(0, s), comma-separated")
    ap.add_argument("--B", default="32", help="batch size")
    ap.add_argument("--H", default="100", help="hidden neurons")
    ap.add_argument("--record", default="50", help="EventProp: readout record points")
    ap.add_argument("--span", type=C.comma_list(pos, "a positive number", 1), default=100.0,
                    help="EventProp: record points spread over [0, span]")
    ap.add_argument("--methods", type=C.comma_list(lambda x: C.checked(METHODS.__contains__, x),
                                                   "some of " + ", ".join(METHODS)), default=list(METHODS))
    ap.add_argument("--reps", default="3")
    ap.add_argument("--threads", default="1")
    ap.add_argument("--rounds", default="1", help="run the whole list R times, interleaved; keep each row's fastest")
    ap.add_argument("--quick", action="store_true", help="tiny sizes, one repetition (smoke test)")
    ap.add_argument("--child", nargs=9, metavar="ARG", help=argparse.SUPPRESS)
    C.add_child_options(ap)
    a = ap.parse_args(argv)
    if a.child:
        import torch
        torch.set_num_threads(int(a.child[7]))
        m, s, T, B, H, rec, reps = a.child[0], float(a.child[1]), *map(int, a.child[2:7])
        print(json.dumps(measure(m, s, T, B, H, rec, float(a.child[8]), reps, warmup=1 if reps == 1 else C.WARMUP)))
        return 0
    C.check_args(ap, a, positive=("B", "H", "record", "reps", "threads", "rounds"), lists=("T",))
    Ts = sorted(set(C.positive_ints(a.T)))
    scales, methods = a.scales, a.methods
    B, H, record, reps, threads = (int(getattr(a, k)) for k in ("B", "H", "record", "reps", "threads"))
    if a.quick:
        Ts, B, H, record, reps = [30, 60], 2, 8, 5, 1

    env = C.child_env(threads, a.malloc_tuned, a.omp_passive)
    info = C.probe(env, threads)
    print(C.machine_info(threads, a.malloc_tuned, info["torch"], a.omp_passive) +
          f"; spikeforge {C.git_revision('src/spikeforge/learning')}")

    def one(key, rnd):
        m, s, T = key
        r = C.run_child(os.path.abspath(__file__), [m, s, T, B, H, record, reps, threads, a.span], env, a.timeout)
        print(f"  round {rnd + 1}: {m} scale {s:g} T {T}: " + (r["error"] if "error" in r else
              f"{r['total_ms']:.0f} ms, peak {r['peak_mb']:.0f} MB (+{r['growth_mb']:.0f})"), flush=True)
        return r
    res = C.best_of_rounds([(m, s, T) for s in scales for T in Ts for m in methods], int(a.rounds), one)
    rows = []
    for (m, s, T), r in res.items():
        if "error" in r:
            rows.append([m, f"{s:g}", T, *["-"] * 8, r["error"]])
            continue
        rows.append([m, f"{s:g}", T, f"{r['spikes']:.0f}", f"{r['fwd_ms']:.1f}", f"{r['bwd_ms']:.1f}",
                     f"{r['total_ms']:.1f}", f"{r['cpu_ms']:.0f}", f"{r['peak_mb']:.0f}", f"{r['growth_mb']:.1f}",
                     f"{r['loss']:.4f}", f"{r['load']:.1f}"])
    print(f"\nOne training step (forward + max-membrane CE + backward), B = {B}, 5-{H}-3, CubaLIF + CubaLI, "
          f"EventProp readout at {record} points in [0, {a.span:g}]; median of {reps}"
          f"{f', fastest of {a.rounds} rounds' if int(a.rounds) > 1 else ''}\n")
    print(C.markdown_table(["method", "scale", "T", "hidden spikes/sample", "fwd ms", "bwd ms", "step ms", "CPU ms",
                            "peak RSS MB", "RSS growth MB", "loss", "load"], rows))
    get = lambda m, s, T, k: res.get((m, s, T), {}).get(k)  # noqa: E731
    lines = []
    for s in scales:
        for m in methods:
            if len(Ts) > 1:
                lines.append(f"| {m} | scale {s:g}: T {Ts[0]} -> {Ts[-1]} | "
                             f"{_ratio(get(m, s, Ts[-1], 'growth_mb'), get(m, s, Ts[0], 'growth_mb'))} | "
                             f"{_ratio(get(m, s, Ts[-1], 'total_ms'), get(m, s, Ts[0], 'total_ms'))} |")
    for T in Ts:
        for m in methods:
            if len(scales) > 1:
                lo, hi = scales[0], scales[-1]
                lines.append(f"| {m} | T {T}: scale {lo:g} -> {hi:g} (spikes x "
                             f"{_ratio(get(m, hi, T, 'spikes'), get(m, lo, T, 'spikes'))}) | "
                             f"{_ratio(get(m, hi, T, 'growth_mb'), get(m, lo, T, 'growth_mb'))} | "
                             f"{_ratio(get(m, hi, T, 'total_ms'), get(m, lo, T, 'total_ms'))} |")
        if set(METHODS) <= set(methods):
            for s in scales:
                lines.append(f"| BPTT / EventProp | T {T}, scale {s:g} | "
                             f"{_ratio(get('bptt', s, T, 'growth_mb'), get('eventprop', s, T, 'growth_mb'))} | "
                             f"{_ratio(get('bptt', s, T, 'total_ms'), get('eventprop', s, T, 'total_ms'))} |")
    if lines:
        print("\nRatios (same run)\n\n| method | change | RSS growth x | step time x |\n|---|---|---:|---:|")
        print("\n".join(lines))
    if a.json:
        with open(a.json, "w") as f:
            json.dump([{"key": list(k), **v} for k, v in res.items()], f, indent=1)
    return 1 if any("error" in r for r in res.values()) else 0


if __name__ == "__main__":
    sys.exit(main())
