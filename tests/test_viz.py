"""``spikeforge.viz``: every plot renders headless (Agg) to a PNG that is not blank and is
labelled, shows what it says (one raster mark per spike, the threshold at v_th, bins that
add up...), takes a Monitor as well as a tensor, and refuses bad input by name."""
from __future__ import annotations

import io
import math
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge import viz
from spikeforge.data.yinyang import yinyang_class
from spikeforge.monitor import Monitor

pytest.importorskip("matplotlib")
from matplotlib.figure import Figure  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "viz.md"


def render(fig) -> np.ndarray:
    """The figure as a PNG (Agg), read back: (H, W, channels); not a single colour."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=50)
    from PIL import Image

    image = np.asarray(Image.open(io.BytesIO(buf.getvalue())).convert("RGB"))
    assert image.size > 0 and len(np.unique(image.reshape(-1, 3), axis=0)) > 1, "blank image"
    return image


def labelled(ax) -> None:
    assert ax.get_xlabel() and ax.get_ylabel() and ax.get_title()


def _spikes(*shape, p=0.2, seed=0) -> torch.Tensor:
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(seed)) < p).float()


@pytest.fixture(scope="module")
def monitored():
    """A two-layer network that fires, run on 4 samples under a Monitor of spikes and v."""
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 12), sf.nn.LIF(tau=4.0, v_threshold=0.8), nn.Linear(12, 5), sf.nn.LIF())
    with torch.no_grad():
        net[0].weight.uniform_(0.0, 1.0)
        net[2].weight.uniform_(0.0, 1.0)
    with Monitor(net, record=("spikes", "v")) as mon:
        net(_spikes(25, 4, 6, p=0.4))
    assert mon.firing_rates()["1"] > 0 and mon.firing_rates()["3"] > 0
    return mon


# -- raster ---------------------------------------------------------------------------------------------
def test_raster_draws_one_mark_per_spike():
    s = _spikes(20, 3, 4, 5)                          # (T, B, N...): neurons flattened to 20
    fig = viz.raster(s, sample=1)
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    labelled(ax)
    render(fig)
    marks = np.concatenate([col.get_offsets() for col in ax.collections])
    assert len(marks) == int(s[:, 1].sum())
    expected = {(t, n) for t, n in torch.nonzero(s[:, 1].reshape(20, -1)).tolist()}
    assert {(int(t), int(n)) for t, n in marks} == expected
    assert f"{int(s[:, 1].sum())} spikes" in ax.get_title()


def test_raster_negative_spikes_and_counts():
    s = torch.zeros(5, 1, 3)
    s[0, 0, 0], s[2, 0, 1], s[4, 0, 2] = 1, -1, 2        # ternary spike and a count of 2
    ax = viz.raster(s).axes[0]
    pos, neg = (len(col.get_offsets()) for col in ax.collections)
    assert (pos, neg) == (2, 1) and "4 spikes" in ax.get_title()


def test_raster_from_a_monitor_matches_the_tensor(monitored):
    from_mon = viz.raster(monitored, "1", sample=2).axes[0]
    from_tensor = viz.raster(monitored.get("1"), sample=2).axes[0]
    assert np.array_equal(from_mon.collections[0].get_offsets(), from_tensor.collections[0].get_offsets())
    assert from_mon.get_title().startswith("1, sample 2")


def test_drawing_into_an_existing_axes():
    fig = Figure()
    axes = fig.subplots(1, 2)
    assert viz.raster(_spikes(10, 1, 4), ax=axes[1]) is fig
    assert axes[1].get_title() and not axes[0].get_title()
    with pytest.raises(TypeError, match="ax must be a matplotlib Axes"):
        viz.raster(_spikes(10, 1, 4), ax=fig)


def test_multi_panel_plots_draw_into_subfigures(monitored):
    fig = Figure(figsize=(10, 6), layout="constrained")
    top, middle, bottom = fig.subfigures(3, 1)
    assert viz.rate_histogram(monitored, fig=top) is fig
    assert viz.feature_maps(_spikes(4, 1, 5, 5), fig=middle) is fig
    assert viz.learning_curves([dict(epoch=1, train_loss=1.0, val_loss=1.0, train_accuracy=0.5,
                                     val_accuracy=0.5)], fig=bottom) is fig
    assert len(top.axes) == 2 and len(middle.axes) == 5 and len(bottom.axes) == 2    # 4 maps + colour bar
    render(fig)
    with pytest.raises(TypeError, match="fig must be a matplotlib Figure"):
        viz.feature_maps(_spikes(4, 1, 5, 5), fig=Figure().subplots())


# -- membrane -------------------------------------------------------------------------------------------
def _dashed_levels(ax) -> list[float]:
    return [float(ln.get_ydata()[0]) for ln in ax.get_lines() if ln.get_linestyle() == "--"]


def test_membrane_draws_the_traces_and_the_threshold():
    v = torch.randn(30, 2, 8)
    ax = viz.membrane(v, sample=1, neurons=[0, 3, 7], v_th=0.7).axes[0]
    labelled(ax)
    render(ax.figure)
    traces = [ln for ln in ax.get_lines() if ln.get_linestyle() == "-"]
    assert len(traces) == 3 and np.allclose(traces[1].get_ydata(), v[:, 1, 3].numpy())
    assert _dashed_levels(ax) == [pytest.approx(0.7)]


def test_membrane_per_neuron_thresholds():
    th = torch.tensor([0.5, 1.0, 1.5])
    ax = viz.membrane(torch.randn(10, 1, 3), v_th=th).axes[0]
    assert sorted(_dashed_levels(ax)) == pytest.approx([0.5, 1.0, 1.5])


def test_membrane_from_a_monitor_reads_the_threshold_and_marks_spikes(monitored):
    ax = viz.membrane(monitored, "1", sample=0, neurons=[0, 1, 2]).axes[0]
    assert _dashed_levels(ax) == [pytest.approx(0.8)]          # the layer's v_threshold
    marks = [ln for ln in ax.get_lines() if ln.get_marker() == "x"]
    assert sum(len(m.get_xdata()) for m in marks) == int(monitored.get("1")[:, 0, :3].sum())


# -- firing rates -----------------------------------------------------------------------------------------
def test_rate_histogram_one_panel_per_layer(monitored):
    fig = viz.rate_histogram(monitored, bins=10)
    render(fig)
    assert len(fig.axes) == 2
    for ax, layer in zip(fig.axes, ("1", "3")):
        labelled(ax)
        heights = [p.get_height() for p in ax.patches]
        rates = monitored.neuron_rates(layer).numpy()
        assert sum(heights) == rates.size
        assert heights == list(np.histogram(rates, bins=10, range=(0, 1))[0])


def test_rate_histogram_of_tensors():
    s = _spikes(50, 4, 30, p=0.3)
    ax = viz.rate_histogram({"hidden": s}).axes[0]
    assert ax.get_title().startswith("hidden: mean") and sum(p.get_height() for p in ax.patches) == 30
    with pytest.raises(ValueError, match="ax draws one layer"):
        viz.rate_histogram({"a": s, "b": s}, ax=Figure().subplots())


# -- feature maps -----------------------------------------------------------------------------------------
def test_feature_maps_bins_add_up_to_the_spikes():
    s = _spikes(10, 2, 2, 6, 7, p=0.3)                 # (T, B, C, H, W)
    fig = viz.feature_maps(s, sample=1, frames=3)
    render(fig)
    images = [ax.images[0] for ax in fig.axes if ax.images]
    assert len(images) == 3
    assert sum(im.get_array().sum() for im in images) == pytest.approx(float(s[:, 1].sum()))
    titles = [ax.get_title() for ax in fig.axes if ax.images]
    assert titles == ["t = 0-3", "t = 4-6", "t = 7-9"] and fig.get_suptitle()
    one = viz.feature_maps(s, channel=1, frames=10)
    assert sum(ax.images[0].get_array().sum() for ax in one.axes if ax.images) == float(s[:, 0, 1].sum())


def test_feature_map_gif(tmp_path):
    from PIL import Image

    s = _spikes(6, 1, 8, 8, p=0.3)
    fig = viz.feature_map_gif(s, tmp_path / "spikes.gif", fps=10)
    assert isinstance(fig, Figure)
    with Image.open(tmp_path / "spikes.gif") as gif:
        assert gif.n_frames == 6
    with pytest.raises(ValueError, match="path must end in .gif"):
        viz.feature_map_gif(s, tmp_path / "spikes.png")


def test_feature_maps_from_a_conv_layer_monitor():
    net = nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(1, 3, 3, padding=1)), sf.nn.LIF(v_threshold=0.1))
    with Monitor(net) as mon:
        net(torch.rand(4, 2, 1, 6, 6))
    fig = viz.feature_maps(mon, sample=1)
    total = sum(ax.images[0].get_array().sum() for ax in fig.axes if ax.images)
    assert total == float(mon.get("1")[:, 1].sum()) > 0


# -- decision map -----------------------------------------------------------------------------------------
def _oracle(features: torch.Tensor) -> torch.Tensor:
    return torch.tensor([yinyang_class(float(x), float(y)) for x, y in features[:, :2]])


def test_decision_map_of_a_perfect_model():
    data = sf.data.YinYang("test")
    small = (data.data[:200], data.targets[:200])
    ax = viz.decision_map(_oracle, data=small, resolution=30).axes[0]
    labelled(ax)
    render(ax.figure)
    grid = ax.images[0].get_array()
    features, inside = viz.yinyang_grid(30)
    truth = _oracle(features).reshape(30, 30).numpy()
    assert np.array_equal(grid.mask, ~inside.reshape(30, 30).numpy())
    assert np.array_equal(grid.compressed(), truth[~grid.mask])
    assert "100.0 % of 200 points" in ax.get_title()


class _TimeFirst(nn.Module):
    """Takes encoded input (T, B, 4) and answers scores over time (T, B, 3): the oracle's one-hot."""

    def forward(self, x):
        assert x.dim() == 3
        return nn.functional.one_hot(_oracle(x[0]), 3).float().expand(x.shape[0], -1, -1)


def test_decision_map_encodes_and_restores_train_mode():
    model = _TimeFirst().train()
    calls = []

    def encode(f):
        calls.append(f.shape)
        return f.expand(4, -1, -1)

    ax = viz.decision_map(model, encode=encode, resolution=12, batch_size=50).axes[0]
    inside = int(viz.yinyang_grid(12)[1].sum())                           # only those are evaluated
    assert model.training and sum(n for n, _ in calls) == inside and calls[0] == (50, 4) and inside > 100
    assert ax.images[0].get_array().compressed().max() == 2


def test_decision_map_bad_output():
    with pytest.raises(ValueError, match="readout"):
        viz.decision_map(lambda f: torch.zeros(len(f), 5), resolution=4)
    with pytest.raises(ValueError, match=r"in \[0, 3\)"):
        viz.decision_map(lambda f: torch.full((len(f),), 7), resolution=4)
    with pytest.raises(ValueError, match="resolution"):
        viz.decision_map(_oracle, resolution=1)
    points = torch.rand(4, 4)
    for labels in (torch.tensor([0, 1, -1, 2]), torch.tensor([0, 1, 3, 2])):    # -1 was drawn as class 2
        with pytest.raises(ValueError, match=r"data: labels must lie in \[0, 3\)"):
            viz.decision_map(lambda f: torch.zeros(len(f), dtype=torch.long), data=(points, labels), resolution=4)


# -- energy ---------------------------------------------------------------------------------------------
def _bar_total(ax) -> float:
    unit = re.search(r"\((\w+)\)$", ax.get_ylabel()).group(1)
    scale = dict((u, s) for s, u in viz.energy.UNITS)[unit]
    return sum(p.get_height() for p in ax.patches) * scale


@pytest.mark.parametrize("preset", [None, "loihi", "cmos45_int8"])
def test_energy_bars_add_up_to_the_monitor_energy(monitored, preset):
    ax = viz.energy_bars(monitored, preset=preset).axes[0]
    labelled(ax)
    render(ax.figure)
    expected = monitored.energy(preset=preset) / monitored.num_samples
    assert _bar_total(ax) == pytest.approx(expected, rel=1e-9)
    parts = viz.layer_energy(monitored, preset=preset)
    assert sum(sum(d.values()) for d in parts.values()) == pytest.approx(monitored.energy(preset=preset))
    assert list(parts) == ["0", "1", "2", "3"]


def test_energy_bars_of_given_energies_and_bad_input(monitored):
    ax = viz.energy_bars({"fc1": 2e-9, "fc2": 1e-9}).axes[0]
    assert _bar_total(ax) == pytest.approx(3e-9)
    with pytest.raises(ValueError, match="not both"):
        viz.energy_bars(monitored, preset="loihi", e_synop=1e-12)
    with pytest.raises(TypeError, match="Monitor or a dict"):
        viz.energy_bars(torch.ones(3))
    with pytest.raises(ValueError, match="joules"):
        viz.energy_bars({"fc1": -1.0})
    for kw in ({"e_synop": -1e-12}, {"e_mac": math.nan}, {"e_synop": "1e-12"}):   # negative bars, or a TypeError
        with pytest.raises(ValueError, match=f"{next(iter(kw))} must be a finite number of joules"):
            viz.energy_bars(monitored, **kw)
    net = nn.Sequential(nn.Linear(3, 4), sf.nn.LIF())
    with Monitor(net) as mon:
        net(torch.rand(5, 2, 3))                    # analogue input: MACs, which Loihi has none of
    with pytest.raises(ValueError, match="no energy per dense MAC"):
        viz.energy_bars(mon, preset="loihi")


# -- training plots ---------------------------------------------------------------------------------------
def test_learning_curves_and_confusion():
    history = [dict(epoch=e, train_loss=1.0 / e, val_loss=1.2 / e, train_accuracy=0.5 + 0.1 * e,
                    val_accuracy=0.45 + 0.1 * e) for e in (1, 2, 3)]
    fig = viz.learning_curves(history)
    render(fig)
    for ax in fig.axes:
        labelled(ax)
    cm = viz.confusion_matrix(torch.tensor([0, 1, 2, 2]), torch.tensor([0, 2, 2, 2]), 3)
    ax = viz.confusion(cm, ("a", "b", "c")).axes[0]
    labelled(ax)
    assert "3/4 correct" in ax.get_title() and [t.get_text() for t in ax.texts][-1] == "2"
    with pytest.raises(ValueError, match="missing"):
        viz.learning_curves([{"epoch": 1}])
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        viz.confusion(torch.zeros(2, 2), ("a", "b", "c"))


def test_the_trainer_writes_its_plots_with_viz(tmp_path):
    from spikeforge.train import Trainer, make_config
    from spikeforge.train.plots import write_all

    trainer = Trainer(make_config(hidden=8, steps=4, batch_size=500), tmp_path, quiet=True, plots=False)
    trainer.history = [dict(epoch=1, train_loss=1.0, val_loss=1.1, train_accuracy=0.4, val_accuracy=0.4)]
    names = write_all(trainer)
    assert names == ["curves.png", "activity.png", "confusion.png", "decision_map.png"]
    for name in names:
        assert (tmp_path / name).stat().st_size > 1000


def test_trainer_activity_plot_with_many_classes(tmp_path):
    from spikeforge.train.plots import activity

    classes = [f"c{k}" for k in range(20)]                # e.g. SHD: too many traces for a legend
    spikes, membrane = _spikes(8, 3, 16), torch.randn(8, 3, 20)
    activity(spikes, membrane, [0, 5, 19], [1, 5, 19], classes, tmp_path / "a.png")
    activity(spikes, membrane[..., :3], [0, 1, 2], [1, 1, 2], classes[:3], tmp_path / "b.png", v_th=1.0)
    assert (tmp_path / "a.png").stat().st_size > 1000 and (tmp_path / "b.png").stat().st_size > 1000


# -- bad input, optional dependencies ----------------------------------------------------------------------
@pytest.mark.parametrize("call, error, match", [
    (lambda: viz.raster(torch.rand(5, 2, 3)), ValueError, "spikes must hold spikes"),
    (lambda: viz.raster(torch.ones(5, 3)), ValueError, r"shape \(T, B, N...\)"),
    (lambda: viz.raster(torch.ones(5, 2, 3, dtype=torch.complex64)), TypeError, "real numbers"),
    (lambda: viz.raster(torch.ones(5, 2, 3), sample=2), IndexError, "sample"),
    (lambda: viz.raster([1, 0]), TypeError, "torch.Tensor or a spikeforge.Monitor"),
    (lambda: viz.raster(torch.ones(5, 2, 3), layer="1"), ValueError, "only for a Monitor"),
    (lambda: viz.membrane(torch.full((5, 1, 3), float("nan"))), ValueError, "NaN"),
    (lambda: viz.membrane(torch.rand(5, 1, 3), neurons=[3]), IndexError, "neurons"),
    (lambda: viz.membrane(torch.rand(5, 1, 3), v_th=torch.ones(2)), ValueError, "v_th"),
    (lambda: viz.membrane(torch.rand(5, 1, 3), spikes=torch.ones(5, 1, 2)), ValueError, "spikes must be"),
    (lambda: viz.feature_maps(torch.ones(5, 2, 3)), ValueError, r"\(T, B, H, W\)"),
    (lambda: viz.feature_maps(torch.ones(5, 1, 3, 3), frames=6), ValueError, "frames"),
    (lambda: viz.feature_maps(torch.ones(5, 1, 3, 3), channel=0), ValueError, "no channel"),
    (lambda: viz.feature_maps(torch.ones(5, 1, 2, 3, 3), channel=2), IndexError, "channel"),
    (lambda: viz.rate_histogram(torch.ones(4, 2, 3), bins=0), ValueError, "bins"),
])
def test_bad_input_is_refused_by_name(call, error, match):
    with pytest.raises(error, match=match):
        call()


def test_monitor_layer_errors(monitored):
    with pytest.raises(ValueError, match=r"one of the monitored layers \['1', '3'\]"):
        viz.raster(monitored)
    with pytest.raises(KeyError, match="not monitored"):
        viz.raster(monitored, "7")


def test_import_spikeforge_does_not_import_matplotlib():
    code = "import sys, spikeforge, spikeforge.viz; assert 'matplotlib' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_missing_matplotlib_or_pillow_is_a_clear_error(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "PIL", None)
    with pytest.raises(ImportError, match="Pillow"):
        viz.feature_map_gif(_spikes(3, 1, 4, 4), tmp_path / "x.gif")
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)
    with pytest.raises(ImportError, match=r"spikeforge\[viz\]"):
        viz.raster(_spikes(3, 1, 4))


def test_docs_examples_run(tmp_path, monkeypatch):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), re.S)
    assert len(blocks) >= 7, "docs/viz.md: one example per plot"
    monkeypatch.chdir(tmp_path)
    scope = {}
    for code in blocks:
        exec(compile(code, str(DOC), "exec"), scope)
    assert (tmp_path / "raster.png").stat().st_size > 1000
