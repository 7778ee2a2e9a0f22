"""Activity over time: spike rasters, membrane traces with their threshold, firing-rate histograms."""
from __future__ import annotations

import operator
from typing import Mapping, Sequence

import torch
from torch import Tensor

from ..monitor import Monitor
from . import _common as c

__all__ = ["raster", "membrane", "rate_histogram"]

MAX_TRACES = 5   # membrane(): neurons drawn when none are named


def _one_sample(t: Tensor, sample: int, name: str) -> Tensor:
    """(T, B, N...) -> (T, N): one sample, its neurons flattened."""
    c.check_dims(t, name, range(3, 9), "(T, B, N...) (time, batch, then one or more neuron dims)")
    return c.pick(t, sample, "sample", 1, "batch").reshape(t.shape[0], -1)


def raster(source, layer: str | None = None, *, sample: int = 0, ax=None, title: str | None = None):
    """Spike raster of one sample: a mark at (step, neuron) for every spike.

    ``source``: spikes ``(T, B, N...)`` (0/1; -1 for negative spikes, drawn in red; or whole
    spike counts per step: one mark per nonzero step; neurons after the batch dim are
    flattened in C order) or a ``Monitor`` that recorded
    ``"spikes"`` (``layer``: the layer's name; optional when one layer is monitored).
    Returns the matplotlib ``Figure`` (``ax``'s figure when ``ax`` is given)."""
    spikes, layer = c.from_source(source, layer, "spikes", "raster")
    s = c.check_spikes(_one_sample(spikes, sample, "spikes"), "spikes")
    fig, ax = c.axes(ax, (6, 3.5))
    for sign, color in ((s > 0, "k"), (s < 0, "tab:red")):
        t, n = torch.nonzero(sign, as_tuple=True)
        ax.scatter(t.numpy(), n.numpy(), s=min(60.0, max(10.0, 1500.0 / s.shape[1])), marker="|", color=color,
                   linewidths=1.2)
    ax.set(xlim=(-0.5, s.shape[0] - 0.5), ylim=(-0.5, s.shape[1] - 0.5), xlabel="time step", ylabel="neuron",
           title=title or f"{layer or 'spikes'}, sample {sample}: {int(s.abs().sum())} spikes")
    return fig


def _thresholds(v_th, n: int, neurons: list[int]) -> list[float]:
    """``v_th`` (a number, or one value per neuron) as one value per drawn neuron."""
    t = torch.as_tensor(v_th, dtype=torch.float64).detach().cpu()
    if t.numel() == 1:
        return [float(t)] * len(neurons)
    if t.numel() != n:
        raise ValueError(f"v_th must be a number or hold one value per neuron ({n}), got shape {tuple(t.shape)}")
    return [float(x) for x in t.reshape(-1)[neurons]]


def _indices(neurons, n: int) -> list[int]:
    if neurons is None:
        return list(range(min(n, MAX_TRACES)))
    items = list(neurons)
    try:
        out = [operator.index(i) for i in items if not isinstance(i, bool)]
    except TypeError:
        out = None
    if not out or len(out) != len(items) or any(not 0 <= i < n for i in out):
        raise IndexError(f"neurons must be a non-empty list of integer indices in [0, {n}), got {items}")
    return out


def _monitored(mon: Monitor, layer: str, key: str, sample: int):
    """The threshold and the spikes of a monitored layer, when it has them."""
    m = mon.layers[layer]
    neuron = getattr(m, "neuron", m)
    v_th = getattr(neuron, "v_threshold", None) if key == "v" else None
    spikes = None
    if "spikes" in mon.record and neuron.spec_type.spiking:
        spikes = _one_sample(mon.get(layer, "spikes").detach().cpu(), sample, "spikes")
    return v_th, spikes


def membrane(source, layer: str | None = None, *, key: str = "v", sample: int = 0,
             neurons: Sequence[int] | None = None, v_th=None, spikes: Tensor | None = None,
             labels: Sequence[str] | None = None, ax=None, title: str | None = None):
    """Membrane (or any state) traces of a few neurons of one sample, with the threshold.

    ``source``: a state ``(T, B, N...)`` or a ``Monitor`` that recorded ``key`` (default
    ``"v"``) for ``layer``. ``neurons``: flat neuron indices to draw (default: the first
    ``MAX_TRACES``). ``v_th``: the threshold, a number or one value per neuron, drawn as a
    dashed line (per neuron in its colour when they differ); for a Monitor it defaults to the
    layer's ``v_threshold`` when ``key == "v"`` (for ``ALIF``, the base threshold, before
    adaptation). ``spikes``: optional spikes of the same shape, marked with an ``x`` at the
    threshold (on the trace when there is none); a Monitor that recorded ``"spikes"``
    supplies them.
    ``labels``: legend names of the drawn neurons. Returns the ``Figure``."""
    trace, name = c.from_source(source, layer, key, "membrane")
    v = c.check_real(_one_sample(trace, sample, key), key)
    found_spikes = None
    if isinstance(source, Monitor):
        found_th, found_spikes = _monitored(source, name, key, sample)
        v_th = found_th if v_th is None else v_th
    if spikes is None:
        spikes = found_spikes
    else:
        if not isinstance(spikes, Tensor) or spikes.shape != trace.shape:
            raise ValueError(f"spikes must be a tensor of the trace's shape {tuple(trace.shape)}, got "
                             f"{tuple(getattr(spikes, 'shape', ())) or type(spikes).__name__}")
        spikes = _one_sample(spikes.detach().cpu(), sample, "spikes")
    if spikes is not None:
        spikes = c.check_spikes(spikes, "spikes")
    n = v.shape[1]
    neurons = _indices(neurons, n)
    if labels is not None and len(labels) != len(neurons):
        raise ValueError(f"labels must name each drawn neuron ({len(neurons)}), got {len(labels)}")
    levels = _thresholds(v_th, n, neurons) if v_th is not None else None
    fig, ax = c.axes(ax, (6, 3.5))
    steps, colors = torch.arange(v.shape[0]).numpy(), []
    for k, i in enumerate(neurons):
        line, = ax.plot(steps, v[:, i].numpy(), lw=1.2, label=labels[k] if labels else f"neuron {i}")
        if spikes is not None:      # at the threshold (a recorded v is after the reset), else on the trace
            t = torch.nonzero(spikes[:, i], as_tuple=True)[0]
            y = torch.full((len(t),), levels[k]) if levels else v[t, i]
            ax.plot(t.numpy(), y.numpy(), "x", color=line.get_color(), ms=6, mew=1.5)
        colors.append(line.get_color())
    if levels:
        _draw_thresholds(ax, levels, colors)
    ax.set(xlabel="time step", ylabel=key, title=title or f"{name or key}, sample {sample}")
    ax.grid(alpha=0.3)
    if len(neurons) <= 10:
        ax.legend(fontsize=7)
    return fig


def _draw_thresholds(ax, values: list[float], colors: list) -> None:
    if len(set(values)) == 1:
        ax.axhline(values[0], color="0.3", ls="--", lw=1, label=f"threshold {values[0]:g}")
        return
    for value, color in zip(values, colors):
        ax.axhline(value, color=color, ls="--", lw=1)


def _rates(source) -> dict[str, Tensor]:
    if isinstance(source, Monitor):
        layers = list(source.firing_rates())
        if not layers:
            raise ValueError("rate_histogram: the Monitor has counted no spikes yet (run the network first)")
        return {name: source.neuron_rates(name).reshape(-1).cpu().double() for name in layers}
    items = source.items() if isinstance(source, Mapping) else [("spikes", source)]
    out = {}
    for name, t in items:
        if not isinstance(t, Tensor):
            raise TypeError(f"rate_histogram: source must be a Monitor, spikes (T, B, N...) or a dict of them; "
                            f"{name!r} is a {type(t).__name__}")
        c.check_dims(t, f"spikes {name!r}", range(3, 9), "(T, B, N...)")
        out[str(name)] = c.check_spikes(t, f"spikes {name!r}").mean(dim=(0, 1)).reshape(-1)
    if not out:
        raise ValueError("rate_histogram: source is an empty dict")
    return out


def rate_histogram(source, *, bins: int = 20, ax=None, fig=None):
    """Histogram of the neurons' firing rates (spikes per step, over all steps and samples),
    one panel per layer.

    ``source``: a ``Monitor`` (every spiking layer it counted), spikes ``(T, B, N...)``, or a
    dict ``{layer name: spikes}``. ``ax`` (one axes) is allowed when there is one layer;
    ``fig`` (a ``Figure`` or ``SubFigure``) takes the panels of any number. Returns the ``Figure``."""
    bins = c.int_in(bins, "bins", 1, 10_000)
    rates = _rates(source)
    if ax is not None and (len(rates) != 1 or fig is not None):
        raise ValueError(f"rate_histogram: ax draws one layer, without fig; there are {len(rates)}: {list(rates)}")
    if ax is None:
        root, fig = c.panels(fig, (4.2 * len(rates), 3.2))
        panels = fig.subplots(1, len(rates), squeeze=False)[0]
    else:
        root, ax = c.axes(ax, (4, 3))
        panels = [ax]
    for ax, (name, r) in zip(panels, rates.items()):
        low, high = min(0.0, float(r.min())), max(1.0, float(r.max()))
        ax.hist(r.numpy(), bins=bins, range=(low, high), color="tab:blue", edgecolor="white")
        ax.set(xlabel="firing rate (spikes / step)", ylabel="neurons",
               title=f"{name}: mean {float(r.mean()):.3f}, {r.numel()} neurons")
    return root
