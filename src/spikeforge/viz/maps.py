"""2-D feature maps of spikes over time: a grid of images (one per time bin) and an animated GIF."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from . import _common as c

__all__ = ["feature_maps", "feature_map_gif"]

MAX_FRAMES = 8        # feature_maps(): time bins when none are asked for
MAX_COLUMNS = 8


def _binned(source, layer, sample: int, channel, frames, default: int, fn: str):
    """Spike counts (n, H, W) of one sample in ``n`` time bins, their step ranges, and the layer name."""
    spikes, layer = c.from_source(source, layer, "spikes", fn)
    c.check_dims(spikes, "spikes", (4, 5), "(T, B, H, W) or (T, B, C, H, W)")
    s = c.check_spikes(c.pick(spikes, sample, "sample", 1, "batch"), "spikes")
    if s.dim() == 4:                                   # (T, C, H, W)
        s = s.sum(1) if channel is None else c.pick(s, channel, "channel", 1, "channel")
    elif channel is not None:
        raise ValueError(f"channel={channel!r}: spikes of shape (T, B, H, W) have no channel dim")
    steps = s.shape[0]
    n = min(steps, default) if frames is None else c.int_in(frames, "frames", 1, steps)
    chunks = torch.tensor_split(torch.arange(steps), n)
    counts = torch.stack([s[idx].sum(0) for idx in chunks])
    ranges = [(int(idx[0]), int(idx[-1])) for idx in chunks]
    return counts, ranges, layer


def _style(counts: Tensor) -> dict:
    """Shared colour scale: counts from 0 (``magma``), or symmetric for signed spikes (``RdBu_r``)."""
    top = max(float(counts.abs().max()), 1.0)
    if float(counts.min()) < 0:
        return dict(cmap="RdBu_r", vmin=-top, vmax=top)
    return dict(cmap="magma", vmin=0.0, vmax=top)


def _label(lo: int, hi: int) -> str:
    return f"t = {lo}" if lo == hi else f"t = {lo}-{hi}"


def feature_maps(source, layer: str | None = None, *, sample: int = 0, channel: int | None = None,
                 frames: int | None = None, fig=None, title: str | None = None):
    """Spikes of one sample as a grid of 2-D images, one per time bin.

    ``source``: spikes ``(T, B, H, W)`` or ``(T, B, C, H, W)`` (e.g. event frames, a conv
    layer's output) or a ``Monitor`` that recorded ``"spikes"`` of such a layer. ``channel``:
    the channel to show (default: all channels summed). ``frames``: number of time bins, each
    showing the spikes summed over its steps (1..T; default ``min(T, MAX_FRAMES)``; bins
    differ in length by at most one step when T does not divide). One colour scale for all
    bins, with a colour bar. ``fig``: a matplotlib ``Figure`` or ``SubFigure`` to draw into
    (default: a new figure). Returns the ``Figure``."""
    counts, ranges, layer = _binned(source, layer, sample, channel, frames, MAX_FRAMES, "feature_maps")
    n = counts.shape[0]
    cols = min(n, MAX_COLUMNS)
    rows = math.ceil(n / cols)
    root, fig = c.panels(fig, (1.6 * cols + 1.0, 1.7 * rows + 0.5))
    panels = fig.subplots(rows, cols, squeeze=False).reshape(-1)
    style = _style(counts)
    for k, ax in enumerate(panels):
        ax.set_axis_off()
        if k < n:
            image = ax.imshow(counts[k].numpy(), interpolation="nearest", **style)
            ax.set_title(_label(*ranges[k]), fontsize=8)
    fig.colorbar(image, ax=list(panels), label="spikes per bin", shrink=0.8)
    what = "" if channel is None else f", channel {channel}"
    fig.suptitle(title or f"{layer or 'spikes'}, sample {sample}{what}: spikes over time")
    return root


def feature_map_gif(source, path, layer: str | None = None, *, sample: int = 0, channel: int | None = None,
                    frames: int | None = None, fps: float = 5.0, title: str | None = None):
    """The same images as ``feature_maps``, as an animated GIF written to ``path`` (``.gif``),
    one frame per time bin (default: every step). Uses matplotlib's ``PillowWriter``, so it
    needs Pillow (a dependency of matplotlib). Returns the ``Figure`` (showing the last frame)."""
    path = Path(path)
    if path.suffix.lower() != ".gif":
        raise ValueError(f"path must end in .gif, got {str(path)!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not 0 < fps <= 100:
        raise ValueError(f"fps must be a number of frames per second in (0, 100], got {fps!r}")
    counts, ranges, layer = _binned(source, layer, sample, channel, frames, 10**9, "feature_map_gif")
    writer = _pillow_writer(fps)
    from matplotlib.animation import FuncAnimation

    fig = c.figure(figsize=(3.6, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.set_axis_off()
    image = ax.imshow(counts[0].numpy(), interpolation="nearest", **_style(counts))
    fig.colorbar(image, ax=ax, label="spikes per bin", shrink=0.8)
    head = title or f"{layer or 'spikes'}, sample {sample}"

    def show(k: int):
        image.set_data(counts[k].numpy())
        ax.set_title(f"{head}\n{_label(*ranges[k])}", fontsize=9)
        return (image,)

    animation = FuncAnimation(fig, show, frames=counts.shape[0], blit=False, repeat=False)
    animation.save(str(path), writer=writer)
    return fig


def _pillow_writer(fps: float):
    try:
        import PIL  # noqa: F401
        from matplotlib.animation import PillowWriter
    except ImportError as e:
        raise ImportError(f"feature_map_gif writes GIFs with Pillow, which is missing ({e}): "
                          f"pip install pillow (or {c.EXTRA})") from None
    return PillowWriter(fps=fps)
