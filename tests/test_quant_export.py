"""``quant.export_tables``: the tables and the generated C99 reference, compiled with the system
compiler and compared with the integer mode (``XyloNet``) spike for spike."""
from __future__ import annotations

import json

import pytest
import torch
from test_quant_xylo import random_layers
from torch import nn

import spikeforge as sf
from spikeforge import quant
from spikeforge.kernels.cpu import compiler
from spikeforge.neurons.xylo import XyloCore

needs_cc = pytest.mark.skipif(compiler() is None, reason="no C compiler found (install gcc or set CC)")


def _events(seed: int, T: int, B: int, n_in: int, full: bool = False) -> torch.Tensor:
    g = torch.Generator().manual_seed(500 + seed)
    e = torch.randint(0, 16, (T, B, n_in), generator=g).double()
    return e if full else e * (torch.rand(T, B, n_in, generator=g) < 0.5)


@needs_cc
@pytest.mark.parametrize("core", [XyloCore.V2, XyloCore.V1], ids=lambda c: c.value)
def test_c_reference_equals_integer_mode(core, tmp_path):
    """Random networks over the whole range: both delivery paths (saturation mid-delivery,
    checked to occur) and multi-spike steps."""
    deliveries = set()
    for seed in range(6):
        net, _ = random_layers(seed, core)
        out = quant.export_tables(net, tmp_path / f"n{seed}", name=f"net{seed}")
        run = quant.load_reference(out)
        for k, full in enumerate((False, True)):
            x = _events(seed * 2 + k, 40, 3, net[0].in_features, full)
            want = net(x)
            deliveries.update(m.last_delivery for m in net)
            assert torch.equal(run(x), want), (seed, full)
    assert deliveries == {"summed", "per-event"}


@needs_cc
def test_c_reference_saturates_like_xylo(tmp_path):
    """Largest weights and shift with 15 events per channel: currents and membranes pinned at
    the 16-bit limits, spike counts at the cap of 31."""
    w0 = torch.tensor([[127.0] * 4, [-128.0] * 4, [127.0, -128.0, 127.0, 0.0]])
    hid = quant.XyloLayer(w0, 8, dash_syn=1, dash_mem=[0, 15, 4], threshold=[1, 5, 1000], bias=[300, -300, 0],
                          name="hidden")
    out = quant.XyloLayer(torch.tensor([[127.0, -128.0, 5.0], [1.0, 1.0, 1.0]]), 8, dash_syn=[0, 15],
                          dash_mem=[15, 0], threshold=[1, 32767], population=sf.neurons.xylo.XyloPopulation.OUTPUT,
                          delay=1, name="out")
    net = quant.XyloNet(hid, out)
    x = torch.full((20, 2, 4), 15.0)
    x[10:, 1] = 0.0
    want = net(x)
    i, v = hid.trace   # after the decay by half: 32767 -> 16384, -32768 -> -16384
    assert (i.max(), i.min(), v.min()) == (16384, -16384, -32768)
    assert hid.spikes.max() == 31
    run = quant.load_reference(quant.export_tables(net, tmp_path))
    assert torch.equal(run(x), want)


@needs_cc
def test_quantized_model_with_membrane_readout(tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 16), sf.nn.CubaLIF(reset="soft", tau_syn=4.0, tau_mem=8.0),
                          nn.Linear(16, 3), sf.nn.CubaLI(tau_syn=2.0, tau_mem=16.0))
    net = quant.quantize(model, target="xylo")
    x = _events(7, 50, 4, 4)
    out = quant.export_tables(net, tmp_path)
    assert torch.equal(quant.load_reference(out)(x), net(x))
    qat = quant.quantize(model, qat=True)   # exported as its frozen integer net
    assert torch.equal(quant.load_reference(quant.export_tables(qat, tmp_path / "q"))(x), qat.freeze()(x))


def test_tables_hold_the_integers(tmp_path):
    net, spec = random_layers(1, XyloCore.V2)
    out = quant.export_tables(net, tmp_path, name="tables")
    meta = json.loads(out.tables.read_text())
    assert meta["format"] == "spikeforge.xylo-tables/1" and meta["core"] == "v2"
    assert (out.inputs, out.outputs) == (5, 3)
    for layer, ref in zip(meta["layers"], spec):
        assert layer["weight"] == ref["w"] and layer["shift"] == ref["shift"] and layer["cap"] == ref["cap"]
        assert (layer["dash_syn"], layer["dash_mem"], layer["threshold"], layer["bias"]) == \
            (ref["ds"], ref["dm"], ref["th"], ref["bias"])
    assert "int tables_run(int T, int B, const int32_t *events, int32_t *out);" in out.header.read_text()


@needs_cc
def test_bad_input_is_refused_not_clipped(tmp_path):
    net, _ = random_layers(2, XyloCore.V2)
    run = quant.load_reference(quant.export_tables(net, tmp_path))
    x = _events(0, 5, 1, 5)
    x[2, 0, 1] = 16.0
    with pytest.raises(quant.XyloError, match=r"0\.\.15"):
        run(x)
    with pytest.raises(ValueError, match=r"shape \(T, B, 5\)"):
        run(x[0])


def test_export_errors(tmp_path):
    with pytest.raises(TypeError, match="must be a spikeforge.quant.XyloNet"):
        quant.export_tables(nn.Linear(2, 2), tmp_path)
    net, _ = random_layers(0, XyloCore.V2)
    with pytest.raises(ValueError, match="C identifier"):
        quant.export_tables(net, tmp_path, name="my-net")


def _docs_example(heading: str) -> str:
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "hardware.md").read_text()
    section = text.split(f"## {heading}", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, re.S)[0]


@needs_cc
def test_docs_example_runs():
    """The export example in docs/hardware.md runs as written."""
    exec(_docs_example("Fixed-point export"), {})
