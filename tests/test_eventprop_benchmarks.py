"""benchmarks/eventprop_exactness.py and benchmarks/eventprop_cost.py on tiny sizes, in this
process (no child processes): the solver reference, the tie convention, Euler convergence,
the plot, the cost measurement and its tables, and argparse errors naming the option."""
from __future__ import annotations

import math
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))
pytest.importorskip("scipy")
import eventprop_cost as cost  # noqa: E402
import eventprop_exactness as exact  # noqa: E402


@pytest.mark.parametrize("name", ["CubaLIF", "LIF", "ALIF"])
def test_eventprop_spike_times_equal_the_solver(name):
    net = exact.make_net(name, "hard", 0, 3, 4, 2)
    r = exact.compare_ode(net, exact.make_input(0, 1, 3, 2, 16.0), 20.0)
    assert r["spikes"][0] > 0 and r["compared"][0] == r["spikes"][0]
    assert r["mismatch"] == [0, 0] and max(r["max_err"]) < 1e-6, r


def test_simultaneous_inputs_are_summed_and_their_order_flagged():
    """+1.2 and -0.5 at one instant into an IF neuron (threshold 1): summed, no spike; one at
    a time, +1.2 first would fire, so the instant is where comparison stops."""
    import spikeforge as sf

    spec, p = sf.nn.IF(reset="soft").spec, sf.nn.IF().params()
    p = type(p)(*(float(v) for v in p))
    spikes, cut = exact.ode_neuron(spec, p, 0.0, [1.2, -0.5], exact._groups([(1.0, 0), (1.0, 1)]), 5.0)
    assert spikes == [] and cut == 1.0
    spikes, cut = exact.ode_neuron(spec, p, 0.0, [1.2, -0.5], exact._groups([(1.0, 0), (2.0, 1)]), 5.0)
    assert spikes == [1.0] and cut == math.inf


def test_euler_converges_to_the_event_based_forward():
    net = exact.make_net("IF", "hard", 0, 3, 4, 2)
    rows = exact.euler_errors(net, exact.make_input(1, 2, 3, 3, 16.0), 20.0, [0.1, 0.01])
    assert rows[0]["compared"] > 0 and rows[1]["mean"] < rows[0]["mean"] / 3
    assert exact.order(rows) > 0.5


def test_exactness_main_quick_prints_tables_and_writes_the_plot(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    png = tmp_path / "euler.png"
    assert exact.main(["--quick", "--neurons", "IF", "--resets", "soft", "--plot", str(png)]) == 0
    out = capsys.readouterr().out
    assert "| neuron |" in out and "fitted order" in out and "(a) PASS" in out
    assert png.stat().st_size > 1000


@pytest.mark.parametrize("method", cost.METHODS)
def test_cost_measure(method):
    r = cost.measure(method, 12.0, 40, 2, 8, 5, 40.0, reps=1, warmup=0)
    assert r["total_ms"] > 0 and r["peak_mb"] >= r["base_mb"] > 0 and r["spikes"] >= 0
    assert math.isfinite(r["loss"]) and r["method"] == method


def test_cost_main_quick_tables(monkeypatch, capsys):
    """The parent's loop and tables, with the child processes replaced by in-process calls."""
    def run_child(script, args, env, timeout):
        m, s, T, B, H, rec, reps, threads, span = args
        return cost.measure(m, float(s), int(T), int(B), int(H), int(rec), float(span), int(reps), warmup=0)
    monkeypatch.setattr(cost.C, "run_child", run_child)
    monkeypatch.setattr(cost.C, "probe", lambda env, threads: {"torch": "test"})
    assert cost.main(["--quick", "--scales", "12,40"]) == 0
    out = capsys.readouterr().out
    assert out.count("| eventprop |") >= 4 and "| bptt |" in out and "| BPTT / EventProp |" in out
    assert "scale 12: T 30 -> 60" in out


@pytest.mark.parametrize("main,args,option", [
    (exact.main, ["--neurons", "QIF"], "--neurons"), (exact.main, ["--size", "3,4"], "--size"),
    (exact.main, ["--steps", "0"], "--steps"), (exact.main, ["--steps", "40"], "--steps"),
    (exact.main, ["--tol", "-1"], "--tol"), (exact.main, ["--samples", "0"], "--samples"),
    (cost.main, ["--T", "0"], "--T"), (cost.main, ["--scales", "x"], "--scales"),
    (cost.main, ["--methods", "adjoint"], "--methods"), (cost.main, ["--B", "-2"], "--B"),
    (cost.main, ["--span", "0"], "--span"),
])
def test_bad_arguments_are_argparse_errors(main, args, option, capsys):
    with pytest.raises(SystemExit) as e:
        main(args)
    assert e.value.code == 2 and option in capsys.readouterr().err
