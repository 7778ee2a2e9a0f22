"""Shared helpers of ``spikeforge.viz``: the lazy matplotlib import, the Monitor-or-tensor
argument, and the checks of shapes and values (each error names the argument)."""
from __future__ import annotations

from typing import Iterable

import torch
from torch import Tensor

from ..monitor import Monitor

EXTRA = "pip install 'spikeforge[viz]'"


def figure(**kw):
    """A matplotlib ``Figure`` on the Agg canvas (no pyplot, no display, no global state)."""
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError(f"spikeforge.viz needs matplotlib: {EXTRA}") from None
    return Figure(**kw)


def axes(ax, figsize: tuple[float, float], name: str = "ax"):
    """``(figure, axes)``: a new single-axes figure, or ``ax`` and its figure."""
    if ax is None:
        fig = figure(figsize=figsize, layout="constrained")
        return fig, fig.subplots()
    from matplotlib.axes import Axes

    if not isinstance(ax, Axes):
        raise TypeError(f"{name} must be a matplotlib Axes (or None for a new figure), got {type(ax).__name__}")
    try:
        return ax.get_figure(root=True), ax      # matplotlib >= 3.10: the top figure, also for a subfigure
    except TypeError:
        return ax.figure, ax


def panels(fig, figsize: tuple[float, float]):
    """``(figure, container)`` for a multi-panel plot: a new figure, or ``fig`` (a matplotlib
    ``Figure``, or a ``SubFigure`` of one) to draw into, and the figure it belongs to."""
    if fig is None:
        new = figure(figsize=figsize, layout="constrained")
        return new, new
    from matplotlib.figure import FigureBase

    if not isinstance(fig, FigureBase):
        raise TypeError(f"fig must be a matplotlib Figure or SubFigure (or None for a new one), "
                        f"got {type(fig).__name__}")
    return getattr(fig, "figure", None) or fig, fig


def from_source(source, layer: str | None, key: str, fn: str) -> tuple[Tensor, str | None]:
    """The tensor ``source`` itself, or what the ``Monitor`` ``source`` recorded for ``layer``
    under ``key`` (``layer`` may be left out when one layer is monitored)."""
    if isinstance(source, Monitor):
        layer = only_layer(source, layer, fn)
        return source.get(layer, key).detach().cpu(), layer
    if not isinstance(source, Tensor):
        raise TypeError(f"{fn}: source must be a torch.Tensor or a spikeforge.Monitor, got {type(source).__name__}")
    if layer is not None:
        raise ValueError(f"{fn}: layer={layer!r} is only for a Monitor source; a tensor is plotted as it is")
    return source.detach().cpu(), None


def only_layer(mon: Monitor, layer: str | None, fn: str) -> str:
    names = list(mon.layers)
    if layer is None:
        if len(names) != 1:
            raise ValueError(f"{fn}: layer must name one of the monitored layers {names}")
        return names[0]
    if layer not in names:
        raise KeyError(f"{fn}: layer {layer!r} is not monitored; monitored: {names}")
    return layer


_INTEGER = (torch.bool, torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)


def check_real(t: Tensor, name: str) -> Tensor:
    """``t`` as float64 on the CPU; bool, integer and floating tensors only, finite values."""
    if not (t.is_floating_point() or t.dtype in _INTEGER):
        raise TypeError(f"{name} must hold real numbers (bool, integer or floating dtype), got {t.dtype}")
    t = t.detach().cpu().to(torch.float64)
    if not bool(torch.isfinite(t).all()):
        raise ValueError(f"{name} holds NaN or inf")
    return t


def check_dims(t: Tensor, name: str, dims: Iterable[int], expected: str) -> None:
    if t.dim() not in tuple(dims):
        raise ValueError(f"{name} must have shape {expected}, got {tuple(t.shape)}")


def check_spikes(t: Tensor, name: str) -> Tensor:
    """``t`` (any shape) as float64 spikes: whole numbers (0/1 spikes, -1 for negative
    spikes, or spike counts per step, e.g. binned event times)."""
    t = check_real(t, name)
    bad = t != t.round()
    if bool(bad.any()):
        raise ValueError(f"{name} must hold spikes or spike counts (whole numbers), found {t[bad][0].item():g}; "
                         f"a membrane or other state goes to membrane()")
    return t


def pick(t: Tensor, index, name: str, dim: int, what: str) -> Tensor:
    """``t.select(dim, index)`` with an error naming ``name`` when ``index`` is out of range."""
    size = t.shape[dim]
    if isinstance(index, bool) or not isinstance(index, int) or not -size <= index < size:
        raise IndexError(f"{name} must be an integer {what} index in [0, {size}), got {index!r}")
    return t.select(dim, index)


def int_in(value, name: str, low: int, high: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise ValueError(f"{name} must be an integer in [{low}, {high}], got {value!r}")
    return value
