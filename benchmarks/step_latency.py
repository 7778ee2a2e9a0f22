"""Streaming latency: one LIF time step on (B, n), spikeforge beside its peers, one process.

Each framework's single-step LIF (tau = 2 in the decay-input form, threshold 1, hard reset
to 0 where the framework has it) is called on the same input; the state is carried from
step to step and dropped every ``--chunk`` steps (so with grad the graph stays short).
Modes: ``no_grad`` (inference) and ``grad`` (input requires grad, a graph is built).
Frameworks are timed in interleaved rounds (round-robin, so drift hits all of them alike);
the figure is the median over rounds of the mean time per step, in microseconds.

    .venv-peers/bin/python benchmarks/step_latency.py             # with SpikingJelly, snnTorch, Norse
    .venv/bin/python benchmarks/step_latency.py                   # spikeforge and eager torch only
"""
from __future__ import annotations

import argparse
import importlib.util
import statistics
import time

import torch

import _common as C


def hand_written(x0):
    """The floor: a hand-written eager torch LIF step."""
    state = {"v": torch.zeros_like(x0)}

    def step(x):
        v = state["v"] + (x - state["v"]) * 0.5
        z = (v >= 1.0).to(x.dtype)
        state["v"] = v * (1.0 - z)
        return z
    return step, lambda: state.update(v=torch.zeros_like(x0))


def spikeforge(x0):
    import spikeforge as sf
    m = sf.nn.LIF(tau=2.0)
    return m.step, m.reset


def snntorch(x0):
    import snntorch as snn
    m = snn.Leaky(beta=0.5, threshold=1.0, reset_mechanism="zero", init_hidden=False)
    state = {"mem": m.init_leaky()}

    def step(x):
        z, state["mem"] = m(x, state["mem"])
        return z
    return step, lambda: state.update(mem=m.init_leaky())


def norse(x0):
    from norse.torch import LIFCell, LIFParameters
    m = LIFCell(p=LIFParameters(tau_mem_inv=torch.tensor(500.0), v_th=torch.tensor(1.0)), dt=1e-3)
    state = {"s": None}

    def step(x):
        z, state["s"] = m(x, state["s"])
        return z
    return step, lambda: state.update(s=None)


def spikingjelly(x0):
    from spikingjelly.activation_based import neuron
    m = neuron.LIFNode(tau=2.0, decay_input=True, v_threshold=1.0, v_reset=0.0, step_mode="s")
    return m, m.reset


FRAMEWORKS = {"eager torch": (hand_written, None), "spikeforge": (spikeforge, "spikeforge"),
              "snnTorch": (snntorch, "snntorch"), "Norse": (norse, "norse"),
              "SpikingJelly": (spikingjelly, "spikingjelly")}


def measure(n: int, grad: bool, steps: int, rounds: int, chunk: int) -> dict[str, float]:
    g = torch.Generator().manual_seed(0)
    x = (torch.rand(1, n, generator=g) * 1.6).requires_grad_(grad)
    fns = {}
    for name, (make, package) in FRAMEWORKS.items():
        if package is None or importlib.util.find_spec(package) is not None:
            fns[name] = make(x.detach())
    times: dict[str, list[float]] = {name: [] for name in fns}
    ctx = torch.enable_grad if grad else torch.no_grad
    with ctx():
        for r in range(rounds + 1):                 # round 0 warms up
            for name, (step, reset) in fns.items():
                reset()
                t0 = time.perf_counter()
                for k in range(steps):
                    step(x)
                    if (k + 1) % chunk == 0:
                        reset()
                dt = (time.perf_counter() - t0) / steps * 1e6
                if r:
                    times[name].append(dt)
    return {name: statistics.median(v) for name, v in times.items()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="128,4096")
    ap.add_argument("--steps", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--chunk", type=int, default=100, help="steps between state resets")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    print(C.machine_info(a.threads, False, torch.__version__))
    rows = []
    for n in map(int, a.sizes.split(",")):
        for grad in (False, True):
            res = measure(n, grad, a.steps, a.rounds, a.chunk)
            sf_us, floor = res["spikeforge"], res["eager torch"]
            for name, us in res.items():
                rows.append([f"1 x {n}", "grad" if grad else "no_grad", name, C.fmt(us, ".1f"),
                             C.fmt(us / floor, ".2f"), C.fmt(us / sf_us, ".2f")])
    print(C.markdown_table(["x_t", "mode", "framework", "us / step", "x eager torch", "x spikeforge"], rows))


if __name__ == "__main__":
    main()
