"""The reference workload on one device for spikeforge and its peers, in one process,
under a wall-clock budget (used by gpu_workload.py).

Every row builds the same ``Linear(n, n)`` (seed 0, bias 0.8) and input ``randn(T, B, n)``
on the device, runs ``z = neuron(linear(x))``, ``z.sum().backward()``, and records: the
median time of the timed passes, the device's peak memory over them (absolute, and above
what was allocated before the pass: weights, input, grads), the firing rate, the share of
spikes that differ from spikeforge's, and, for spikeforge rows, the relative error of the
Linear's weight gradient against spikeforge's reference backend.

On ``--device cpu`` (a smoke test of the script) the peers run their CPU paths, and the
"ran on" column says so: SpikingJelly's Triton/CUDA kernels need CUDA, its CPU path is the
torch reference.
"""
from __future__ import annotations

import gc
import statistics
import time

import _common as C

SF_BASE = "spikeforge-triton"  # the row every ratio is taken against
FRAMEWORKS = ("floor", "spikeforge-triton", "spikeforge-reference", "spikeforge-cpu",
              "spikingjelly", "snntorch", "norse")
DEFAULT_FRAMEWORKS = "floor,spikeforge-triton,spikeforge-reference,spikingjelly,snntorch,norse"
PEER_MODULE = {"spikingjelly": "spikingjelly.activation_based", "snntorch": "snntorch", "norse": "norse.torch"}


# -- the neuron layers: build(dev, dtype) -> (run, weight scale, label()) ---------------------
# LIF, tau = 2, decay-input h = v + (x - v)/2, threshold 1, hard reset to 0, in every framework
# (as in workload.py, whose README section explains each peer's parameters).

def _spikeforge(backend):
    def build(dev, dtype):
        import spikeforge as sf

        lif = sf.nn.LIF(tau=2.0, backend=backend).to(device=dev, dtype=dtype)
        return lif, 1.0, lambda: f"spikeforge {lif.last_backend}"
    return build


def _spikingjelly(dev, dtype):
    from spikingjelly.activation_based import neuron
    from spikingjelly.activation_based.functional.neuron import neuron_implementation

    lif = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, step_mode="m").to(dev)

    def run(cur):
        lif.reset()
        return lif(cur)

    def label():
        if dev.type != "cuda":
            return "CPU FALLBACK: SJ torch reference (SJ's Triton/CUDA kernels need CUDA)"
        return f"SJ {neuron_implementation('lif', dev)['implementation']} (eager)"
    return run, 1.0, label


def _snntorch(dev, dtype):
    import snntorch as snn
    import torch

    # mem = beta * mem + input: beta = 1 - 1/tau, the input scaled by 1/tau through the Linear;
    # reset "zero" with the default one-step delay emits the hard-reset spikes.
    lif = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero").to(dev)

    def run(cur):
        mem = torch.zeros(cur.shape[1:], device=cur.device, dtype=cur.dtype)
        out = []
        for t in range(cur.shape[0]):  # the tutorials' loop: cur[step]
            spk, mem = lif(cur[t], mem)
            out.append(spk)
        return torch.stack(out)
    return run, 0.5, lambda: f"snnTorch Leaky, PyTorch eager on {dev.type}" + (
        "" if dev.type == "cuda" else " (CPU FALLBACK)")


def _norse(dev, dtype):
    import norse.torch as norse
    import torch

    t = lambda v: torch.tensor(v, device=dev, dtype=dtype)  # noqa: E731
    p = norse.LIFBoxParameters(tau_mem_inv=t(0.5), v_leak=t(0.0), v_th=t(1.0), v_reset=t(0.0))
    lifted = norse.Lift(norse.LIFBoxCell(p, dt=1.0))  # v += dt/tau (v_leak - v + x)
    return (lambda cur: lifted(cur)[0]), 1.0, lambda: f"Norse Lift(LIFBoxCell), PyTorch eager on {dev.type}" + (
        "" if dev.type == "cuda" else " (CPU FALLBACK)")


def builder(fw: str):
    if fw == "floor":
        return None
    if fw.startswith("spikeforge-"):
        return _spikeforge(fw.split("-", 1)[1])
    return {"spikingjelly": _spikingjelly, "snntorch": _snntorch, "norse": _norse}[fw]


def missing(fw: str) -> str | None:
    """Why a peer cannot run here (not installed), else None."""
    import importlib

    if fw not in PEER_MODULE:
        return None
    try:
        importlib.import_module(PEER_MODULE[fw])
    except Exception as e:  # ImportError, or a peer's own import-time failure
        return f"skipped: not importable ({type(e).__name__}: {str(e)[:80]})"
    return None


# -- the budget --------------------------------------------------------------------------------

class Budget:
    """A deadline shared by ``rows`` rows: each row may spend its fair share of what is left."""

    def __init__(self, seconds: float, rows: int):
        self.deadline = time.perf_counter() + seconds
        self.rows_left = rows
        self.last: dict[str, tuple[int, float, float]] = {}  # fw -> (n, pass s, pass bytes)

    def remaining(self) -> float:
        return self.deadline - time.perf_counter()

    def share(self) -> float:
        return self.remaining() / max(self.rows_left, 1)

    def predict(self, fw: str, n: int) -> tuple[float, float] | None:
        """(seconds of one pass, bytes above the weights) at n, scaled from fw's last size:
        time by (n/n0)^2 (the Linear's share grows as n^2: an upper bound), memory by n/n0."""
        if fw not in self.last:
            return None
        n0, s, b = self.last[fw]
        return s * (n / n0) ** 2, b * n / n0


def _sync(dev) -> None:
    import torch

    if dev.type == "cuda":
        torch.cuda.synchronize()


def _timed(step, reps: int, dev) -> list[float]:
    """Milliseconds per pass: CUDA events on a GPU, perf_counter elsewhere."""
    import torch

    out = []
    for _ in range(reps):
        if dev.type == "cuda":
            a, b = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            a.record()
            step()
            b.record()
            torch.cuda.synchronize()
            out.append(a.elapsed_time(b))
        else:
            t0 = time.perf_counter()
            step()
            out.append(1e3 * (time.perf_counter() - t0))
    return out


def measure(fw: str, n: int, a, dev, dtype, budget: Budget) -> dict:
    """One framework at one size: warm-up passes (the first compiles), then up to ``a.reps``
    timed passes, as many as the row's share of the budget allows (at least one)."""
    import torch

    cuda = dev.type == "cuda"
    row_t0 = time.perf_counter()
    build = builder(fw)
    torch.manual_seed(0)  # same weights and input in every row
    lin = torch.nn.Linear(n, n, device=dev, dtype=dtype)
    x = torch.randn(a.T, a.B, n, device=dev, dtype=dtype)
    run, scale, label = build(dev, dtype) if build else (None, 1.0, lambda: "Linear alone (no neuron)")
    with torch.no_grad():
        lin.bias.fill_(0.8)
        lin.weight.mul_(scale)
        lin.bias.mul_(scale)

    def step():
        lin.weight.grad = lin.bias.grad = None
        z = lin(x) if run is None else run(lin(x))
        z.sum().backward()
        return z

    _sync(dev)
    base = torch.cuda.memory_allocated() if cuda else 0
    t0 = time.perf_counter()
    z = step()  # compiles; keep its spikes for the agreement check
    _sync(dev)
    first_s = time.perf_counter() - t0
    try:
        ran_on = label()
    except Exception as e:  # a peer's introspection changed: the measurement still stands
        ran_on = f"? ({type(e).__name__}: {str(e)[:80]})"
    out = {"first_pass_s": first_s, "ran_on": ran_on}
    if run is not None:
        spikes = (z.detach() != 0).cpu()
        out["spikes"], out["rate"] = spikes, spikes.float().mean().item()
    del z
    est = first_s
    for _ in range(max(a.warmup - 1, 0)):
        t0 = time.perf_counter()
        step()
        _sync(dev)
        est = time.perf_counter() - t0
    allowed = budget.share() - (time.perf_counter() - row_t0)
    reps = max(1, min(a.reps, int(allowed / max(est, 1e-9))))
    if reps < a.reps:
        out["note"] = f"reps cut to {reps} of {a.reps} (time budget)"
    if cuda:
        torch.cuda.reset_peak_memory_stats()
    ms = _timed(step, reps, dev)
    out.update(ms=statistics.median(ms), reps=reps)
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out.update(peak_gib=peak / 2**30, pass_gib=(peak - base) / 2**30)
        budget.last[fw] = (n, est, peak - base)
    else:
        budget.last[fw] = (n, est, 0.0)
    if fw.startswith("spikeforge-"):
        out["wgrad"] = lin.weight.grad.detach().float().cpu()
    return out


def run_rows(a, dev, dtype, log=print) -> list[dict]:
    """Every framework at every size (sizes ascending), each row within its share of
    ``a.budget`` seconds; a framework whose predicted time or memory at a size does not fit
    is skipped there with the reason in its row."""
    import torch

    fws, sizes = a.frameworks, sorted(a.sizes)
    budget = Budget(a.budget, len(fws) * len(sizes))
    absent = {fw: missing(fw) for fw in fws}
    rows = []
    for n in sizes:
        res = {}
        for fw in fws:
            why = absent[fw]
            pred = budget.predict(fw, n)
            itemsize = torch.empty((), dtype=dtype).element_size()
            fixed = (2 * n * n + 2 * a.T * a.B * n) * itemsize  # weight and its grad; x and the Linear's output
            if why is None and fw == SF_BASE and a.triton_unavailable:
                why = f"skipped: triton backend unavailable ({a.triton_unavailable})"
            if why is None and pred is not None and pred[0] * (1 + max(a.warmup, 1)) > budget.remaining():
                why = (f"skipped: over the time budget (one pass predicted {pred[0]:.1f} s from n="
                       f"{budget.last[fw][0]}, {budget.remaining():.0f} s left)")
            if why is None and pred is not None and dev.type == "cuda":
                free = torch.cuda.mem_get_info()[0]
                if pred[1] + fixed > 0.9 * free:
                    why = (f"skipped: would need ~{(pred[1] + fixed) / 2**30:.1f} GiB, "
                           f"{free / 2**30:.1f} GiB free")
            if why is not None:
                res[fw] = {"error": why}
            else:
                log(f"  {fw} n={n} (budget left {budget.remaining():.0f} s) ...")
                try:
                    res[fw] = measure(fw, n, a, dev, dtype, budget)
                except Exception as e:  # out of memory, a peer's failure: report and go on
                    kind = "out of memory" if "out of memory" in str(e).lower() else type(e).__name__
                    res[fw] = {"error": f"{kind}: {str(e).splitlines()[0][:140] if str(e) else ''}"}
            budget.rows_left -= 1
            gc.collect()
            if dev.type == "cuda":
                torch.cuda.empty_cache()
        rows.extend(agree(res, n))
    return rows


def agree(res: dict, n: int) -> list[dict]:
    """Rows for one size: spike mismatch against spikeforge-triton (else the first spiking
    row), weight-gradient error of spikeforge rows against spikeforge-reference, and the
    ratios of time and pass memory to spikeforge-triton."""
    import torch

    spiking = [f for f, r in res.items() if "spikes" in r]
    ref = SF_BASE if SF_BASE in spiking else (spiking[0] if spiking else None)
    gref = res.get("spikeforge-reference", {}).get("wgrad")
    base = res.get(SF_BASE, {})
    rows = []
    for fw, r in res.items():
        row = {"n": n, "framework": fw, **{k: v for k, v in r.items() if k not in ("spikes", "wgrad")}}
        if "spikes" in r and ref is not None and fw != ref:
            if r["spikes"].shape == res[ref]["spikes"].shape:
                row["mismatch"] = torch.count_nonzero(r["spikes"] != res[ref]["spikes"]).item() / r["spikes"].numel()
                row["mismatch_vs"] = ref
        if "wgrad" in r and gref is not None and fw != "spikeforge-reference":
            row["wgrad_rel_err"] = ((r["wgrad"] - gref).norm() / gref.norm()).item()
        if "ms" in r and "ms" in base:
            row["x_sf"] = r["ms"] / base["ms"]
            if base.get("pass_gib"):
                row["mem_x_sf"] = r["pass_gib"] / base["pass_gib"]
        rows.append(row)
    return rows


HEADERS = ["n", "framework", "ms", "reps", "x sf-triton", "peak GiB", "pass GiB", "mem x sf-triton",
           "spike rate", "spikes differ", "dW rel. err", "ran on / note"]


def table(rows: list[dict]) -> str:
    f = C.fmt
    return C.markdown_table(HEADERS, [
        [r["n"], r["framework"], f(r.get("ms"), ".1f"), f(r.get("reps"), "d"), f(r.get("x_sf"), ".2f"),
         f(r.get("peak_gib"), ".2f"), f(r.get("pass_gib"), ".2f"), f(r.get("mem_x_sf"), ".2f"),
         f(r.get("rate"), ".3f"), f(r.get("mismatch"), ".1e"), f(r.get("wgrad_rel_err"), ".1e"),
         r["error"] if "error" in r else "; ".join(filter(None, [r.get("ran_on"), r.get("note")]))]
        for r in rows])
