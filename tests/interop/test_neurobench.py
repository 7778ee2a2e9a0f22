"""spikeforge under NeuroBench (spikeforge.interop.neurobench_model): NeuroBench's static
(Footprint, ConnectionSparsity, ParameterCount) and workload (ActivationSparsity,
SynapticOperations, ClassificationAccuracy) metrics on small spikeforge networks, compared
with spikeforge's own Monitor and parameter counts on the same data. Where the two count
differently (zero weights, an analogue first layer, a non-spiking readout) the difference is
computed exactly, not hidden behind a tolerance (docs/encoding_layers.md, "NeuroBench")."""
import ast

import pytest
import torch
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import spikeforge as sf
from spikeforge.interop import BatchFirst, neurobench_model
from spikeforge.monitor import Monitor

pytest.importorskip("neurobench")
from neurobench.benchmarks import Benchmark  # noqa: E402
from neurobench.metrics.static import ConnectionSparsity, Footprint, ParameterCount  # noqa: E402
from neurobench.metrics.workload import (  # noqa: E402
    ActivationSparsity, ClassificationAccuracy, SynapticOperations)

STATIC = [Footprint, ConnectionSparsity, ParameterCount]
WORKLOAD = [ActivationSparsity, SynapticOperations, ClassificationAccuracy]
B, T, N_BATCHES = 6, 12, 3


def _mlp(batch_first=False):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), sf.nn.LIF(tau=2.0, batch_first=batch_first),
                        nn.Linear(32, 10), sf.nn.LIF(tau=2.0, batch_first=batch_first))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(6.0)
    return net


def _conv():
    torch.manual_seed(1)
    net = nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(2, 4, 3, stride=2, padding=1)), sf.nn.LIF(tau=2.0),
                        sf.nn.Flatten(), nn.Linear(4 * 4 * 4, 10), sf.nn.LIF(tau=2.0))
    with torch.no_grad():
        net[0].module.weight.mul_(4.0)
        net[3].weight.mul_(4.0)
    return net


def _recurrent():
    torch.manual_seed(3)
    net = nn.Sequential(nn.Linear(20, 16), sf.nn.Recurrent(sf.nn.LIF(tau=2.0), 16), nn.Linear(16, 10),
                        sf.nn.LIF(tau=2.0))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
        net[2].weight.mul_(6.0)
    return net


def _loader(shape, analogue=False):
    """Fixed random (B, T, ...) batches (NeuroBench's layout): spikes, or analogue values."""
    g = torch.Generator().manual_seed(2)
    n = N_BATCHES * B
    x = torch.rand((n, T) + shape, generator=g)
    x = x * (x > 0.5) if analogue else (x < 0.3).float()
    y = torch.randint(0, 10, (n,), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=B)


def _count(out):   # NeuroBench postprocessor: (B, T, classes) spikes -> predicted class by spike count
    return out.sum(1).argmax(-1)


def _neurobench(net, loader, batch_first=False):
    model = neurobench_model(net, batch_first=batch_first)
    return Benchmark(model, loader, [], [_count], [STATIC, WORKLOAD]).run(quiet=True)


def _monitor(net, loader, batch_first=False):
    """spikeforge's own run of the same data: Monitor plus accuracy by spike count."""
    correct = 0
    with Monitor(net) as mon, torch.no_grad():
        for x, y in loader:
            out = net(x if batch_first else x.transpose(0, 1))
            correct += int((_count(out if batch_first else out.transpose(0, 1)) == y).sum())
    return mon, correct / len(loader.dataset)


def _sparsity(mon):
    """NeuroBench's activation sparsity from Monitor's rates: 1 - spikes / (neurons x steps x
    samples) over all spiking layers (every layer runs the same steps and samples); the float32
    rates times the steps give back the integer spike counts."""
    steps = mon.num_samples * T
    spikes = sum(int((mon.neuron_rates(n).double() * steps).round().sum()) for n in mon.firing_rates())
    neurons = sum(mon.neuron_rates(n).numel() for n in mon.firing_rates())
    return 1 - spikes / (neurons * steps)


def _static(net):
    weights = [m.weight for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    zeros = sum(int((w == 0).sum()) for w in weights) / sum(w.numel() for w in weights)
    tensors = list(net.parameters()) + list(net.buffers())
    return {"Footprint": sum(t.numel() * t.element_size() for t in tensors),
            "ParameterCount": sum(p.numel() for p in net.parameters()),
            "ConnectionSparsity": round(zeros, 4)}


@pytest.mark.parametrize("make, shape", [(_mlp, (20,)), (_conv, (2, 8, 8)), (_recurrent, (20,))],
                         ids=["linear", "conv", "recurrent"])
def test_metrics_agree_with_monitor(make, shape):
    net, loader = make(), _loader(shape)
    nb = _neurobench(net, loader)
    mon, acc = _monitor(net, loader)
    assert mon.num_samples == len(loader.dataset)
    assert 0 < min(mon.firing_rates().values()) and max(mon.firing_rates().values()) < 1   # both layers spike
    assert {k: nb[k] for k in ("Footprint", "ParameterCount", "ConnectionSparsity")} == _static(net)
    ops = nb["SynapticOperations"]
    assert ops["Effective_MACs"] == 0 and mon.macs() == {}              # spike input: accumulates only
    assert ops["Effective_ACs"] == sum(mon.synops().values()) / mon.num_samples
    assert nb["ActivationSparsity"] == pytest.approx(_sparsity(mon), abs=1e-12)
    assert nb["ClassificationAccuracy"] == pytest.approx(acc)


def test_batch_first_network_runs_as_is():
    net, loader = _mlp(batch_first=True), _loader((20,))
    nb = _neurobench(net, loader, batch_first=True)
    mon, acc = _monitor(net, loader, batch_first=True)
    assert mon.num_samples == len(loader.dataset)
    assert nb["SynapticOperations"]["Effective_ACs"] == sum(mon.synops().values()) / mon.num_samples
    assert nb["ActivationSparsity"] == pytest.approx(_sparsity(mon), abs=1e-12)
    # the same weights time-first, wrapped: identical figures
    assert _neurobench(_mlp(), loader) == nb


def test_dense_figure_is_every_input_times_every_synapse():
    net, loader = _mlp(), _loader((20,))
    dense = _neurobench(net, loader)["SynapticOperations"]["Dense"]
    assert dense == T * (20 * 32 + 32 * 10)   # per sample, biases not counted


def test_zero_weights_are_skipped_by_neurobench_not_by_monitor():
    """Pruned weights: NeuroBench counts an AC only where the weight is nonzero; Monitor counts
    every synapse a spike drives (nonzero inputs x out_features)."""
    net, loader = _mlp(), _loader((20,))
    with torch.no_grad():
        net[0].weight[:, ::2] = 0.0    # half of layer 0's synapses
    nb = _neurobench(net, loader)
    mon, _ = _monitor(net, loader)
    assert nb["ConnectionSparsity"] == _static(net)["ConnectionSparsity"] == round(320 / 960, 4)
    # layer 0's input is the data: the ACs NeuroBench skips are its spikes onto zero weights
    skipped = sum(int((x != 0).float().matmul((net[0].weight == 0).float().T).sum()) for x, _ in loader)
    assert skipped > 0
    assert nb["SynapticOperations"]["Effective_ACs"] == (sum(mon.synops().values()) - skipped) / mon.num_samples


def test_analogue_input_counts_effective_macs_not_dense():
    """An analogue first layer: Monitor counts dense MACs (every input x out_features); NeuroBench's
    Effective_MACs skips the zero inputs (nonzero inputs x out_features)."""
    net, loader = _mlp(), _loader((20,), analogue=True)
    nb = _neurobench(net, loader)
    mon, _ = _monitor(net, loader)
    nonzero = sum(int((x != 0).sum()) for x, _ in loader)
    assert set(mon.macs()) == {"0"} and set(mon.synops()) == {"2"}
    assert mon.macs()["0"] == len(loader.dataset) * T * 20 * 32
    ops = nb["SynapticOperations"]
    assert ops["Effective_MACs"] == nonzero * 32 / mon.num_samples
    assert ops["Effective_ACs"] == mon.synops()["2"] / mon.num_samples


def test_non_spiking_readout_counts_in_neurobench_sparsity_only():
    """An LI readout is a spikeforge Neuron: NeuroBench's activation sparsity counts its membrane
    (mostly nonzero) with the spikes; Monitor's firing rates leave it out."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 32), sf.nn.LIF(tau=2.0), nn.Linear(32, 10), sf.nn.LI(tau=2.0))
    with torch.no_grad():
        net[0].weight.mul_(4.0)
    loader = _loader((20,))
    nb = _neurobench(net, loader)
    mon, _ = _monitor(net, loader)
    assert set(mon.firing_rates()) == {"1"}
    zeros_li = 0
    with torch.no_grad():
        for x, _ in loader:
            zeros_li += int((net(x.transpose(0, 1)) == 0).sum())
    n = len(loader.dataset) * T
    zeros = 32 * n - int((mon.neuron_rates("1").double() * n).round().sum()) + zeros_li
    assert nb["ActivationSparsity"] == pytest.approx(zeros / (42 * n), abs=1e-12)


def test_wrapper_is_time_first_inside():
    net = _mlp()
    x = (torch.rand(B, T, 20) < 0.3).float()
    assert torch.equal(BatchFirst(net)(x), net(x.transpose(0, 1)).transpose(0, 1))
    model = neurobench_model(net)
    assert [d["layer"] for d in model.activation_layers()] == [net[1], net[3]]
    assert model.connection_layers() == [net[0], net[2]]


def test_docs_example_runs(capsys):
    """The example of docs/encoding_layers.md's NeuroBench section runs as written."""
    from pathlib import Path
    text = (Path(__file__).resolve().parents[2] / "docs" / "encoding_layers.md").read_text()
    code = text.split("## NeuroBench", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    exec(compile(code, "encoding_layers.md", "exec"), {})
    out = capsys.readouterr().out
    assert "SynapticOperations" in out and "ActivationSparsity" in out
    result = ast.literal_eval(out.strip().splitlines()[-1])
    assert 0.0 < result["ActivationSparsity"] < 1.0          # the example's neurons fire, not all the time
    shown = code.split("print(", 1)[1].split("# {", 1)[1]  # the output the docs show
    assert f"'ActivationSparsity': {result['ActivationSparsity']:.2f}" in shown.replace("\n#  ", " ")
    assert f"'Effective_ACs': {result['SynapticOperations']['Effective_ACs']:.1f}" in shown
