"""A real temporal workload: one training step of a 3-layer recurrent SNN on SHD-shaped data,
spikeforge beside SpikingJelly 2.0, snnTorch 1.0 and Norse 1.1 (issue 13, section 5).

    x (T, B, 700) 0/1 spikes  ->  Linear(700, H) + LIF  ->  Linear(H, H) + recurrent LIF (H x H)
                              ->  Linear(H, 20) + LI  ->  mean over time  ->  cross-entropy

Input: ``spikeforge.data.synthetic.shd_like(B, T, seed=1)`` (the stand-in for SHD binned at
4-10 ms; ``--density``, default 0.03). One step = forward + loss, ``backward()`` and
``Adam.step()``; median of ``--reps`` after ``_common.WARMUP`` warm-up steps. Each framework
and T runs in its own process. Every framework loads the same weights (seeded; scaled where
its LIF form needs it) and the same batch; the table shows the firing rates each produced.
``spikeforge-cpu-sparse`` takes ``sf.nn.SpikeLinear`` (``SparseMode.AUTO``) for the input
layer and reports the path AUTO chose and the density it measured.

    .venv-peers/bin/python benchmarks/shd_workload.py                 # T = 100, 250; B = 32, H = 256
    .venv-peers/bin/python benchmarks/shd_workload.py --train         # the short training check
    .venv-peers/bin/python benchmarks/shd_workload.py --train --data-root ~/data   # ... on the real SHD files
Network differences per framework: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import json
import math
import sys

import _common as C

TAU = 2.0          # every LIF and the LI readout: decay-input form, h = v + (x - v) / tau
CLASSES, CHANNELS = 20, 700
GAINS = (12.0, 8.0, 2.0)  # input, hidden, recurrent weight scales: the two LIF layers fire ~5-6 %
PEERS = {"spikingjelly": "SJ", "snntorch": "snnTorch", "norse": "Norse"}
DEFAULT = ("spikeforge-cpu", "spikeforge-cpu-sparse", *PEERS)
EXTRAS = ("spikeforge-reference", "snntorch-unbind")


def weights(H: int, seed: int = 0) -> dict:
    """The weights every framework loads: uniform, scaled by ``GAINS`` over sqrt(fan-in);
    only the input and readout layers have a bias (Norse's recurrent cell has none)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    u = lambda o, i, gain: (torch.rand(o, i, generator=g) * 2 - 1) * gain / math.sqrt(i)  # noqa: E731
    return {"w1": u(H, CHANNELS, GAINS[0]), "b1": torch.zeros(H), "w2": u(H, H, GAINS[1]),
            "r": u(H, H, GAINS[2]), "w3": u(CLASSES, H, 1.0), "b3": torch.zeros(CLASSES)}


def _linear(w, b=None, cls=None):
    import torch

    lin = (cls or torch.nn.Linear)(w.shape[1], w.shape[0], bias=b is not None)
    with torch.no_grad():
        lin.weight.copy_(w)
        if b is not None:
            lin.bias.copy_(b)
    return lin


# -- one builder per framework: W -> (modules, run) with run(x) = (readout (T, B, 20), [s1, s2]) ----

def _spikeforge(W, backend="cpu", sparse=False):
    import torch
    import spikeforge as sf

    cls = sf.nn.SpikeLinear if sparse else None   # every product whose input is spikes; AUTO picks
    fc1, fc2, fc3 = _linear(W["w1"], W["b1"], cls), _linear(W["w2"], cls=cls), _linear(W["w3"], W["b3"], cls)
    lif1, li = sf.nn.LIF(tau=TAU, backend=backend), sf.nn.LI(tau=TAU, backend=backend)
    rec = sf.nn.Recurrent(sf.nn.LIF(tau=TAU, backend=backend), _linear(W["r"], cls=cls))
    mods = torch.nn.ModuleList([fc1, lif1, fc2, rec, fc3, li])

    def run(x):
        s1 = lif1(fc1(x))
        s2 = rec(fc2(s1))
        return li(fc3(s2)), [s1, s2]
    return mods, run


def _li_loop(cur, tau=TAU):
    """A leaky-integrator readout for frameworks without one: v += (x - v) / tau."""
    import torch

    v, out = torch.zeros_like(cur[0]), []
    for c in cur.unbind(0):
        v = v + (c - v) / tau
        out.append(v)
    return torch.stack(out)


def _spikingjelly(W):
    import torch
    from spikingjelly.activation_based import functional, layer, neuron, surrogate

    lif = dict(tau=TAU, decay_input=True, v_threshold=1.0, v_reset=0.0, surrogate_function=surrogate.ATan())
    fc1, lif1 = _linear(W["w1"], W["b1"]), neuron.LIFNode(**lif, step_mode="m")
    # its recurrent container: i[t] = [x[t], y[t-1]] @ [W2, R]^T, one product per step
    rec = layer.LinearRecurrentContainer(neuron.LIFNode(**lif, step_mode="s"), W["w2"].shape[1],
                                         W["w2"].shape[0], bias=False, step_mode="m")
    with torch.no_grad():
        rec.rc.weight.copy_(torch.cat([W["w2"], W["r"]], 1))
    fc3 = _linear(W["w3"], W["b3"])
    mods = torch.nn.ModuleList([fc1, lif1, rec, fc3])

    def run(x):
        functional.reset_net(mods)
        s1 = lif1(fc1(x))
        s2 = rec(s1)
        return _li_loop(fc3(s2)), [s1, s2]
    return mods, run


def _snntorch(W, unbind=False):
    import snntorch as snn
    import torch

    # Leaky/RLeaky: mem = beta mem + input (+ recurrent(spk)); beta = 1 - 1/tau and every weight
    # scaled by 1/tau gives the decay-input form exactly. Reset "zero" with the default delay =
    # hard reset. The readout is Leaky without reset, its membrane read.
    s = 1.0 / TAU
    fc1, fc2, fc3 = _linear(W["w1"] * s, W["b1"] * s), _linear(W["w2"] * s), _linear(W["w3"] * s, W["b3"] * s)
    lif1 = snn.Leaky(beta=1 - s, threshold=1.0, reset_mechanism="zero")
    rlif = snn.RLeaky(beta=1 - s, threshold=1.0, linear_features=W["r"].shape[0], reset_mechanism="zero")
    with torch.no_grad():
        rlif.recurrent.weight.copy_(W["r"] * s)
        rlif.recurrent.bias.zero_()
    out = snn.Leaky(beta=1 - s, reset_mechanism="none")
    mods = torch.nn.ModuleList([fc1, fc2, fc3, lif1, rlif, out])
    steps = (lambda c: c.unbind(0)) if unbind else (lambda c: (c[t] for t in range(c.shape[0])))

    def run(x):
        mem, s1 = torch.zeros(x.shape[1], fc1.out_features), []
        for c in steps(fc1(x)):      # the tutorials' loop: cur[t]
            z, mem = lif1(c, mem)
            s1.append(z)
        s1 = torch.stack(s1)
        spk, mem, s2 = torch.zeros_like(mem), torch.zeros_like(mem), []
        for c in steps(fc2(s1)):
            spk, mem = rlif(c, spk, mem)
            s2.append(spk)
        s2 = torch.stack(s2)
        mem, y = torch.zeros(x.shape[1], CLASSES), []
        for c in steps(fc3(s2)):
            _, mem = out(c, mem)
            y.append(mem)
        return torch.stack(y), [s1, s2]
    return mods, run


def _norse(W):
    import norse.torch as norse
    import torch

    t = torch.tensor
    fc1, fc3 = _linear(W["w1"], W["b1"]), _linear(W["w3"], W["b3"])
    lif1 = norse.Lift(norse.LIFBoxCell(norse.LIFBoxParameters(tau_mem_inv=t(1 / TAU), v_leak=t(0.0),
                                                              v_th=t(1.0), v_reset=t(0.0)), dt=1.0))
    # LIFRecurrent is current-based: i += W2 x + R z, v += (i - v) / tau, then i decays by
    # dt * tau_syn_inv = 1 to zero: with these parameters the same decay-input LIF.
    p = norse.LIFParameters(tau_syn_inv=t(1.0), tau_mem_inv=t(1 / TAU), v_leak=t(0.0), v_th=t(1.0), v_reset=t(0.0))
    rec = norse.LIFRecurrent(W["w2"].shape[1], W["w2"].shape[0], p=p, dt=1.0, autapses=True,
                             input_weights=W["w2"].clone(), recurrent_weights=W["r"].clone())
    li = norse.Lift(norse.LIBoxCell(norse.LIBoxParameters(tau_mem_inv=t(1 / TAU), v_leak=t(0.0)), dt=1.0))
    mods = torch.nn.ModuleList([fc1, lif1, rec, fc3, li])

    def run(x):
        s1 = lif1(fc1(x))[0]
        s2 = rec(s1)[0]
        return li(fc3(s2))[0], [s1, s2]
    return mods, run


def builder(name: str):
    if name.startswith("spikeforge-"):
        rest = name.split("-")[1:]
        return lambda W: _spikeforge(W, backend=rest[0], sparse=rest[1:] == ["sparse"])
    return {"spikingjelly": _spikingjelly, "snntorch": _snntorch, "norse": _norse,
            "snntorch-unbind": lambda W: _snntorch(W, unbind=True)}[name]


# -- child: one framework, one T ---------------------------------------------------------------

def child(a) -> dict:
    import torch
    from spikeforge.data.synthetic import shd_like

    C.child_setup(a.threads)
    x, labels = shd_like(a.B, a.T, seed=1, density=a.density)
    mods, run = builder(a.framework)(weights(a.H))
    opt = torch.optim.Adam(mods.parameters(), lr=1e-3)
    setup_rss = C.rss_mb()
    info = {"input_density": float(x.mean())}

    def forward():
        opt.zero_grad(set_to_none=True)
        y, spikes = run(x)
        return torch.nn.functional.cross_entropy(y.mean(0), labels), spikes

    def backward(out):
        out[0].backward()
        opt.step()

    def first(out):
        info["loss"] = float(out[0].detach())
        info["rates"] = [float(s.detach().mean()) for s in out[1]]
        # SpikeLinear's choices: fc1, fc2, the recurrent weight (its last step), fc3
        info["paths"] = [(m.last_path, m.last_density) for m in mods.modules() if hasattr(m, "last_path")]

    res = C.time_passes(forward, backward, a.reps, on_first=first)
    return {**res, **info, "peak_rss_mb": C.peak_rss_mb(), "setup_rss_mb": setup_rss,
            "threads": torch.get_num_threads()}


# -- the short training check (spikeforge only, in this process) ------------------------------

def real_shd(root, train: bool, n: int | None, T: int):
    """``(x (T, N, 700) uint8 0/1, y (N,))``: the first ``n`` samples (all: None) of SHD's train or
    test file under ``root`` (``root/SHD/shd_{train,test}.h5``), each binned into ``T`` steps over
    its own duration (``spikeforge.data.SHD`` + ``ToFrame(binary=True)``, as ``spikeforge train
    --dataset shd --frames binary``)."""
    import torch
    from spikeforge.data import SHD, ToFrame

    ds = SHD(root, train=train, transform=ToFrame(SHD.sensor_size, n_time_bins=T, binary=True))
    items = [ds[i] for i in range(len(ds) if n is None else min(n, len(ds)))]
    x = torch.stack([f.reshape(T, CHANNELS) for f, _ in items], dim=1).to(torch.uint8)
    return x, torch.tensor([y for _, y in items], dtype=torch.int64)


def train_check(a) -> None:
    import time

    import torch
    from spikeforge.data.synthetic import shd_like

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    T = a.train_T
    if a.data_root:
        (xtr, ytr), (xte, yte) = (real_shd(a.data_root, train, a.train_n if train else None, T)
                                  for train in (True, False))
        source = f"the SHD files under {a.data_root} (0/1 frames of {T} bins per sample)"
    else:
        xtr, ytr = shd_like(a.train_n, T, seed=1, density=a.density, dtype=torch.uint8)
        xte, yte = shd_like(a.train_n // 4, T, seed=2, density=a.density, dtype=torch.uint8)
        source = (f"shd_like(T={T}, density={a.density}); time-averaged spike counts (nearest class mean) "
                  f"<= ~55 %")
    mods, run = _spikeforge(weights(a.H), backend="cpu", sparse=True)
    opt = torch.optim.Adam(mods.parameters(), lr=a.lr)
    print(f"# training check: spikeforge-cpu-sparse, {len(ytr)} train / {len(yte)} test samples of {source}; "
          f"B={a.B}, H={a.H}, Adam lr={a.lr}, {a.threads} threads; chance = {1 / CLASSES:.0%}")

    def accuracy() -> float:
        with torch.no_grad():
            hits = sum(int((run(xte[:, i:i + 256].float())[0].mean(0).argmax(1) == yte[i:i + 256]).sum())
                       for i in range(0, len(yte), 256))
        return hits / len(yte)

    rows = [["0", "-", C.fmt(100 * accuracy(), ".1f"), "-"]]
    for epoch in range(1, a.epochs + 1):
        t0, losses = time.perf_counter(), []
        for idx in torch.randperm(len(ytr)).split(a.B):
            opt.zero_grad(set_to_none=True)
            y, _ = run(xtr[:, idx].float())
            loss = torch.nn.functional.cross_entropy(y.mean(0), ytr[idx])
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
        wall = time.perf_counter() - t0
        rows.append([str(epoch), C.fmt(sum(losses) / len(losses), ".3f"), C.fmt(100 * accuracy(), ".1f"),
                     C.fmt(wall, ".1f")])
        print(f"  epoch {epoch}: {rows[-1]}", file=sys.stderr, flush=True)
    print(C.markdown_table(["epoch", "train loss", "test accuracy %", "epoch wall s"], rows))


def _train(a) -> None:
    from spikeforge.data import DatasetError

    try:
        train_check(a)
    except DatasetError as e:            # a missing or bad SHD file: one line, exit 2
        print(f"shd_workload.py: error: {e}", file=sys.stderr)
        sys.exit(2)


# -- parent ------------------------------------------------------------------------------------

def frameworks(arg: str) -> list[str]:
    if arg in ("default", "all"):
        return [*DEFAULT, *(EXTRAS if arg == "all" else ())]
    return [s.strip() for s in arg.split(",") if s.strip()]


def _paths(r: dict) -> str:
    """SpikeLinear's choice per layer: 's' sparse, 'd' dense, with the density it counted."""
    return " ".join(p[0] + (f"{d:.1%}" if d is not None else "") for p, d in r.get("paths", [])) or "-"


HEADERS = ["framework", "T", "fwd ms", "bwd+opt ms", "total ms", "CPU ms", "peak RSS MB", "RSS growth MB",
           "L1 rate", "L2 rate", "SpikeLinear", "x sf-cpu", "x sf-sparse", "load"]


def table(results: dict, T: int) -> list[list]:
    base = [results.get(k, {}).get("total_ms") for k in ("spikeforge-cpu", "spikeforge-cpu-sparse")]
    rows = []
    for f, r in results.items():
        if "error" in r:
            rows.append([f, T, r["error"][:70], *[""] * (len(HEADERS) - 3)])
            continue
        t = r["total_ms"]
        rows.append([f, T, C.fmt(r["fwd_ms"]), C.fmt(r["bwd_ms"]), C.fmt(t), C.fmt(r["cpu_ms"]),
                     C.fmt(r["peak_rss_mb"]), C.fmt(r["peak_rss_mb"] - r["setup_rss_mb"]),
                     *[C.fmt(v, ".1%") for v in r["rates"]], _paths(r),
                     *[C.fmt(t / b if b else None, ".2f") for b in base], C.fmt(r["load"], ".1f")])
    return rows


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--T", default="100,250", help="comma-separated sequence lengths (default 100,250)")
    ap.add_argument("--B", type=int, default=32)
    ap.add_argument("--H", type=int, default=256, help="hidden size of both LIF layers")
    ap.add_argument("--density", type=float, default=0.03, help="input spike density of shd_like")
    ap.add_argument("--reps", type=int, default=3, help="timed steps after the warm-up steps")
    ap.add_argument("--rounds", type=int, default=1, help="interleaved rounds; each entry keeps its fastest")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--frameworks", default="default",
                    help=f"'default' ({', '.join(DEFAULT)}), 'all' (adds {', '.join(EXTRAS)}) or a list")
    ap.add_argument("--train", action="store_true", help="run the training check instead (spikeforge)")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--train-n", type=int, default=2000,
                    help="training samples (test: a quarter of the stand-in; with --data-root: the first "
                         "train-n of shd_train.h5 and all of shd_test.h5)")
    ap.add_argument("--data-root", default=None,
                    help="--train on the real SHD files under DIR (DIR/SHD/shd_{train,test}.h5) instead of the "
                         "stand-in; nothing is downloaded")
    ap.add_argument("--train-T", type=int, default=100)
    ap.add_argument("--lr", type=float, default=2e-3)
    C.add_child_options(ap)
    ap.add_argument("--child", nargs=8, metavar=("FW", "T", "B", "H", "DENSITY", "REPS", "THREADS", "_"),
                    help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.child:
        fw, T, B, H, density, reps, threads, _ = a.child
        ns = argparse.Namespace(framework=fw, T=int(T), B=int(B), H=int(H), density=float(density),
                                reps=int(reps), threads=int(threads))
        print(json.dumps(child(ns)))
        return
    C.check_args(ap, a, positive=("B", "H", "reps", "rounds", "threads", "epochs", "train_n", "train_T"),
                 lists=("T",), unit=("density",))
    unknown = [f for f in frameworks(a.frameworks) if f not in (*DEFAULT, *EXTRAS)]
    if unknown:
        ap.error(f"--frameworks: unknown {', '.join(unknown)}; known: {', '.join((*DEFAULT, *EXTRAS))}")
    if a.data_root is not None and not a.train:
        ap.error("--data-root: the real files are for the training check; add --train")
    if a.train:
        return _train(a)

    env = C.child_env(a.threads, a.malloc_tuned, a.omp_passive)
    info = C.probe(env, a.threads)
    fws = frameworks(a.frameworks)
    machine = C.machine_info(a.threads, a.malloc_tuned, info["torch"], a.omp_passive)
    print(f"# {machine}")
    print(f"# shd workload: Linear(700,{a.H})+LIF, Linear({a.H},{a.H})+recurrent LIF, Linear({a.H},20)+LI, "
          f"B={a.B}, input density {a.density}; one training step (forward + cross-entropy, backward + Adam), "
          f"median of {a.reps} after {C.WARMUP} warm-ups"
          + (f", fastest of {a.rounds} interleaved rounds" if a.rounds > 1 else "")
          + "; 'x P' = this total / P's total; SpikeLinear: path (s/d) and counted density of fc1, fc2, "
          "recurrent (last step), fc3")
    everything = {}
    for T in map(int, a.T.split(",")):
        def one(f, rnd):
            print(f"  running {f} T={T} (round {rnd + 1}) ...", file=sys.stderr, flush=True)
            return C.run_child(__file__, [f, T, a.B, a.H, a.density, a.reps, a.threads, "-"], env, a.timeout)

        results = C.best_of_rounds(fws, a.rounds, one)
        rows = table(results, T)
        print(C.markdown_table(HEADERS, rows) + "\n", flush=True)
        everything[T] = results
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"machine": machine, "results": everything}, f, indent=1)


if __name__ == "__main__":
    main()
