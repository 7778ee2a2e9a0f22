"""EventProp's event-based forward against an independent ODE solver, and the Euler
simulation's convergence to it (issue 11, acceptance 2).

(a) Random 2-layer networks ``Linear + N + Linear + N``, N in CubaLIF, LIF, IF, ALIF (hard and
    soft reset), float64, several spikes per neuron, random input spikes (several per
    channel). Every spike time of both layers from ``eventprop.run`` against scipy's
    ``solve_ivp`` (DOP853, rtol = atol = 1e-12, event detection), integrated here neuron by
    neuron from input to input, the second layer driven by the solver's own first-layer
    spikes; the model is only the spec's ``derivative``/``threshold``/``jump`` on Python
    floats (nothing of spikeforge's modal solver). Pass: equal spike counts and
    max |t_eventprop - t_ode| < 1e-6. Simultaneous input spikes act as one summed pulse;
    where applying them one at a time, in some order, would change a neuron's state (a
    convention, see ``ode_neuron``), its spikes from that instant on are not compared.
(b) The same networks in spikeforge's ordinary time-stepped modules (the neuron with
    ``dt = h``; inputs as pulses of height 1/h for one step, so the same area; the second
    Linear's weights / h likewise; a spike in step k counts at (k + 1) h): max and mean
    |first spike time - event-based first spike time| over both layers, the fitted order
    (slope of log mean error against log h; Euler: 1), and a log-log plot (``--plot``).

    PYTHONPATH=src python benchmarks/eventprop_exactness.py --plot euler.png   # ~1 min
    PYTHONPATH=src python benchmarks/eventprop_exactness.py --quick           # seconds
"""
from __future__ import annotations

import argparse
import itertools
import math
import random
import sys
import time

import torch

import _common as C
import spikeforge as sf
from spikeforge.learning import eventprop as ep

# options, first- and second-layer weight ranges (the second for 16 inputs), bias range. LIF, IF, ALIF:
# a drive above threshold makes them fire between inputs, mostly inhibitory inputs modulate it; input
# pulses that push several neurons over threshold at once (ties in the next layer) stay rare.
NEURONS = {"CubaLIF": (dict(tau_syn=4.0, tau_mem=9.0), (-2.4, 8.0), (-0.9, 3.0), (0.0, 0.1)),
           "LIF": (dict(tau=7.0), (-3.0, 1.2), (-1.0, 0.4), (1.4, 2.0)),
           "IF": (dict(), (-0.2, 0.1), (-0.1, 0.05), (0.08, 0.2)),
           "ALIF": (dict(tau=7.0, tau_adapt=30.0, beta=0.3), (-3.0, 1.2), (-1.0, 0.4), (1.6, 2.2))}
STEPS_H = (1.0, 0.3, 0.1, 0.03, 0.01, 0.003)


def make_net(name: str, reset: str, seed: int, n_in: int, n_hid: int, n_out: int) -> torch.nn.Sequential:
    kw, w1, w2, bias = NEURONS[name]
    torch.manual_seed(seed)
    neuron = lambda: getattr(sf.nn, name)(reset=reset, **kw)  # noqa: E731
    net = torch.nn.Sequential(torch.nn.Linear(n_in, n_hid), neuron(), torch.nn.Linear(n_hid, n_out), neuron())
    with torch.no_grad():
        for lin, (lo, hi) in ((net[0], w1), (net[2], (w2[0] * 16 / n_hid, w2[1] * 16 / n_hid))):
            lin.weight.uniform_(lo, hi)
            lin.bias.uniform_(*bias)
    return net.double()


def make_input(seed: int, samples: int, n_in: int, per_channel: int, t_in: float) -> ep.Events:
    """``per_channel`` random spike times in ``[0, t_in]`` for every input channel."""
    g = torch.Generator().manual_seed(seed)
    times = torch.rand(samples, n_in * per_channel, generator=g, dtype=torch.float64) * t_in
    order = times.argsort(1)
    index = torch.arange(n_in).repeat(per_channel).expand(samples, -1)
    return ep.Events(times.gather(1, order), index.gather(1, order))


# ---- (a) the reference: scipy solve_ivp, one neuron at a time, the spec as the model ----------
def _groups(events: list) -> list:
    """``[(t, [channels])]`` in time order, simultaneous spikes in one group."""
    out = []
    for t, j in sorted(events):
        if out and out[-1][0] == t:
            out[-1][1].append(j)
        else:
            out.append((t, [j]))
    return out


def _pulses(spec, p, s: list, ws: list) -> tuple:
    """Input pulses of area ``spec.dt`` and weights ``ws`` one after the other, each followed
    by the spikes it causes (a jump over threshold fires at once): ``(state, spikes)``."""
    n = 0
    for w in ws:
        up, base = spec.derivative(1.0, tuple(s), p), spec.derivative(0.0, tuple(s), p)
        s = [x + spec.dt * (u - c) * w for x, u, c in zip(s, up, base)]
        while spec.threshold(tuple(s), p) >= 0:
            s, n = list(spec.jump(tuple(s), p)), n + 1
    return s, n


def _orders(ws: list, rng: random.Random):
    """Every order of ``ws`` (up to 5), else both sorted orders and 100 random ones."""
    if len(ws) <= 5:
        yield from itertools.permutations(ws)
        return
    yield from (sorted(ws), sorted(ws, reverse=True))
    for _ in range(100):
        yield rng.sample(ws, len(ws))


def ode_neuron(spec, p, b: float, w: list, groups: list, t_end: float) -> tuple:
    """``(spike times, t_cut)`` of one neuron (parameters ``p``, bias ``b``, input weights
    ``w``). Simultaneous inputs act as one summed pulse (as in a time step, and as Dirac
    pulses at one instant do); ``t_cut`` is the first instant where applying them one at a
    time, in some order, would leave another state or spike count (a convention: e.g. with a
    hard reset the pulses after the spike survive it), inf if none."""
    from scipy.integrate import solve_ivp

    f = lambda _, s: spec.derivative(b, tuple(s), p)  # noqa: E731
    g = lambda _, s: spec.threshold(tuple(s), p)  # noqa: E731
    g.terminal, g.direction = True, 1
    s, t0, spikes, t_cut, rng = [float(v) for v in spec.rest(p)], 0.0, [], math.inf, random.Random(0)
    for t1, js in [*groups, (t_end, ())]:
        while t0 < t1:
            sol = solve_ivp(f, (t0, t1), s, method="DOP853", rtol=1e-12, atol=1e-12, events=g)
            if sol.status == 1:              # a threshold crossing: spike, reset, go on
                t0, s = float(sol.t_events[0][0]), list(spec.jump(tuple(sol.y_events[0][0]), p))
                spikes.append(t0)
            else:
                t0, s = t1, list(sol.y[:, -1])
        if js:
            ws = [w[j] for j in js]
            after, n = _pulses(spec, p, s, [sum(ws)])
            if len(js) > 1 and t_cut == math.inf and any(
                    m != n or max(abs(x - y) for x, y in zip(other, after)) > 1e-12
                    for other, m in (_pulses(spec, p, s, list(o)) for o in _orders(ws, rng))):
                t_cut = t0
            s, spikes = after, spikes + [t0] * n
    return spikes, t_cut


def ode_network(net, events: list, t_end: float) -> list:
    """Per spiking layer, per neuron: ``(spike times, t_cut)`` from the solver (``ode_neuron``),
    each layer fed by the solver's own spikes of the layer before."""
    layers = []
    for lin, neuron in zip(net[0::2], net[1::2]):
        W, bias, params = lin.weight.detach().tolist(), lin.bias.detach().tolist(), neuron.params()
        groups = _groups(events)
        out = [ode_neuron(neuron.spec, type(params)(*(float(v.reshape(-1)[i if v.numel() > 1 else 0]) for v in params)),
                          bias[i], W[i], groups, t_end) for i in range(len(W))]
        layers.append(out)
        events = [(t, j) for j, (ts, _) in enumerate(out) for t in ts]
    return layers


def compare_ode(net, events: ep.Events, t_end: float) -> dict:
    """Per layer: spikes, spikes compared, neurons whose spike counts differ, and the largest
    spike-time difference."""
    with torch.no_grad():
        run = ep.run(net, events, t_end)
    sizes = [m.weight.shape[0] for m in net[0::2]]
    res = {k: [0] * len(sizes) for k in ("spikes", "compared", "mismatch")}
    res.update(max_err=[0.0] * len(sizes), neurons=sizes, samples=events.times.shape[0])
    t0 = time.perf_counter()
    for b in range(events.times.shape[0]):
        inp = [(t, j) for t, j in zip(events.times[b].tolist(), events.index[b].tolist()) if math.isfinite(t)]
        for k, layer in enumerate(ode_network(net, inp, t_end)):
            got = [[] for _ in layer]
            for t, i in zip(run.spikes[k].times[b].tolist(), run.spikes[k].index[b].tolist()):
                got[i] += [t] if math.isfinite(t) else []
            for mine, (want, cut) in zip(got, layer):
                res["spikes"][k] += len(want)
                mine, want = [t for t in mine if t < cut - 1e-6], [t for t in want if t < cut - 1e-6]
                res["compared"][k] += len(want)
                if len(mine) != len(want):
                    res["mismatch"][k] += 1
                elif mine:
                    res["max_err"][k] = max(res["max_err"][k], max(abs(x - y) for x, y in zip(mine, want)))
    res["ode_s"] = time.perf_counter() - t0
    return res


# ---- (b) Euler: spikeforge's time-stepped modules with dt = h --------------------------------
def first_times(ev: ep.Events, n: int) -> torch.Tensor:
    """Each neuron's first spike ``(B, n)``, inf where silent."""
    mine = ev.index.unsqueeze(-1) == torch.arange(n)
    return torch.where(mine & torch.isfinite(ev.times).unsqueeze(-1), ev.times.unsqueeze(-1), math.inf).amin(1) \
        if ev.times.shape[1] else torch.full((ev.times.shape[0], n), math.inf, dtype=ev.times.dtype)


def euler_first(net, events: ep.Events, t_end: float, h: float) -> torch.Tensor:
    """First spike times ``(B, n1 + n2)`` (inf: silent) of the time-stepped network, step h."""
    steps = int(round(t_end / h))
    x = torch.zeros(steps, events.times.shape[0], net[0].weight.shape[1], dtype=torch.float64)
    b, k = torch.nonzero(torch.isfinite(events.times) & (events.times < steps * h), as_tuple=True)
    step = torch.floor(events.times[b, k] / h + 1e-9).long()
    x.index_put_((step, b, events.index[b, k]), torch.full(step.shape, 1.0 / h, dtype=torch.float64), accumulate=True)
    at = torch.arange(1, steps + 1, dtype=torch.float64).view(-1, 1, 1) * h
    firsts = []
    with torch.no_grad():
        for lin, neuron in zip(net[0::2], net[1::2]):
            opts = {o: getattr(neuron.spec, o) for o in neuron.spec.options() if o != "dt"}
            stepped = type(neuron)(dt=h, **opts, **{k: float(v) for k, v in neuron.params()._asdict().items()})
            x = stepped.double()(torch.nn.functional.linear(x, lin.weight, lin.bias))
            firsts.append(torch.where(x > 0, at, math.inf).amin(0))
            x = x / h                                       # the next layer's pulses keep area 1 * w
    return torch.cat(firsts, 1)


def euler_errors(net, events: ep.Events, t_end: float, hs) -> list:
    with torch.no_grad():
        run = ep.run(net, events, t_end)
    exact = torch.cat([first_times(s, m.weight.shape[0]) for s, m in zip(run.spikes, net[0::2])], 1)
    rows = []
    for h in hs:
        got = euler_first(net, events, t_end, h)
        err = (got - exact)[torch.isfinite(exact) & torch.isfinite(got)].abs()
        rows.append({"h": h, "steps": int(round(t_end / h)), "compared": err.numel(),
                     "differ": int((torch.isfinite(exact) != torch.isfinite(got)).sum()),
                     "max": err.max().item() if err.numel() else math.nan,
                     "mean": err.mean().item() if err.numel() else math.nan,
                     "median": err.median().item() if err.numel() else math.nan})
    return rows


def order(rows: list, key: str = "mean") -> float:
    """Least-squares slope of log(error) against log(h)."""
    import numpy as np
    pts = np.log([(r["h"], r[key]) for r in rows if r[key] > 0]).reshape(-1, 2)
    return float(np.polyfit(pts[:, 0], pts[:, 1], 1)[0]) if len(pts) > 1 else math.nan


def plot(curves: dict, path: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5.5, 4))
    for k, (name, rs) in enumerate(curves.items()):
        h = [r["h"] for r in rs]
        ax.loglog(h, [r["mean"] for r in rs], "o-", color=f"C{k}", label=f"{name} mean")
        ax.loglog(h, [r["max"] for r in rs], "s--", color=f"C{k}", alpha=0.6, label=f"{name} max")
    ax.loglog(h, h, "k:", label="h")
    ax.set(xlabel="Euler step h", ylabel="|first spike time error|", title="Euler vs event-based spike times")
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    arg, L = ap.add_argument, C.comma_list
    pos = lambda x: C.checked(lambda v: 0 < v < math.inf, float(x))  # noqa: E731
    one_of = lambda options: lambda x: C.checked(options.__contains__, x)  # noqa: E731
    arg("--neurons", type=L(one_of(NEURONS), "names from " + ", ".join(NEURONS)), default=list(NEURONS))
    arg("--resets", type=L(one_of(("hard", "soft")), "hard and/or soft"), default=["hard", "soft"])
    arg("--size", type=L(C.positive_int, "three positive integers inputs,hidden,outputs", 3), default=[6, 16, 4])
    arg("--samples", type=C.positive_int, default=2, help="input samples for (a)")
    arg("--euler-samples", type=C.positive_int, default=16, help="input samples for (b)")
    arg("--per-channel", type=C.positive_int, default=4, help="input spikes per input channel")
    arg("--t-end", type=L(pos, "a positive number", 1), default=50.0, help="simulated time (inputs: first 80 %%)")
    arg("--steps", type=L(pos, "positive step sizes"), default=list(STEPS_H), help="Euler step sizes h")
    arg("--seed", type=int, default=0)
    arg("--tol", type=L(pos, "a positive number", 1), default=1e-6, help="pass threshold for (a)")
    arg("--plot", help="write the log-log plot of (b) here (png/pdf/svg)")
    arg("--quick", action="store_true", help="tiny sizes (smoke test)")
    a = ap.parse_args(argv)
    size, hs, t_end = a.size, a.steps, a.t_end
    if max(hs) > t_end / 2:
        ap.error(f"--steps: every step size must be at most t_end/2 = {t_end / 2:g}, got {max(hs):g}")
    if a.quick:
        size, a.samples, a.euler_samples, a.per_channel, t_end, hs = [3, 4, 2], 1, 2, 2, 20.0, hs[:2]
    torch.set_num_threads(1)
    events = make_input(a.seed, a.samples, size[0], a.per_channel, 0.8 * t_end)

    rows, ok = [], True
    for name in a.neurons:
        for reset in a.resets:
            r = compare_ode(make_net(name, reset, a.seed, *size), events, t_end)
            good = not any(r["mismatch"]) and max(r["max_err"]) < a.tol
            ok &= good
            rows.append([name, reset, *(f"{s / (n * r['samples']):.1f}" for s, n in zip(r["spikes"], r["neurons"])),
                         ", ".join(f"{c}/{t}" for c, t in zip(r["compared"], r["spikes"])),
                         "/".join(map(str, r["mismatch"])), *(f"{e:.1e}" for e in r["max_err"]),
                         f"{r['ode_s']:.1f}", "yes" if good else "**NO**"])
    print(f"spikeforge {C.git_revision('src/spikeforge/learning')}; torch {torch.__version__}\n\n(a) eventprop.run "
          f"vs scipy solve_ivp (DOP853, rtol=atol=1e-12), network {size[0]}-{size[1]}-{size[2]}, {a.samples} samples, "
          f"{a.per_channel} input spikes per channel, t_end {t_end:g}, float64\n")
    print(C.markdown_table(["neuron", "reset", "spikes/neuron L1", "L2", "compared/all L1, L2", "count mismatches",
                            "max abs dt L1", "L2", "solver s", f"< {a.tol:g}"], rows))

    events = make_input(a.seed + 1, a.euler_samples, size[0], a.per_channel, 0.8 * t_end)
    curves = {name: euler_errors(make_net(name, a.resets[0], a.seed, *size), events, t_end, hs) for name in a.neurons}
    print(f"\n(b) Euler (spikeforge modules, dt = h) vs the event-based forward: |first spike time error| over "
          f"both layers' neurons that fire in both, reset {a.resets[0]}, {a.euler_samples} input samples\n")
    print(C.markdown_table(["neuron", "h", "steps", "neurons compared", "fire in one only", "max abs error",
                            "mean", "median"],
                           [[name, f"{r['h']:g}", r["steps"], r["compared"], r["differ"], f"{r['max']:.2e}",
                             f"{r['mean']:.2e}", f"{r['median']:.2e}"] for name, rs in curves.items() for r in rs]))
    print("\nfitted order (slope of log error vs log h), mean / median: " +
          ", ".join(f"{name} {order(rs):.2f} / {order(rs, 'median'):.2f}" for name, rs in curves.items()))
    if a.plot:
        plot(curves, a.plot)
        print(f"plot written to {a.plot}")
    print("\n(a) " + ("PASS" if ok else "FAIL") + f": every spike count equal and max |dt| < {a.tol:g}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
