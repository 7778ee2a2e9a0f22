"""The decision map of a trained Yin-Yang model: its predicted class over the unit square."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from torch import Tensor, nn

from ..data.yinyang import CLASSES, R_BIG
from . import _common as c

__all__ = ["decision_map", "yinyang_grid"]

_INTEGER = (torch.uint8, torch.int8, torch.int16, torch.int32, torch.int64)
COLORS = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple", "tab:brown")


def yinyang_grid(resolution: int) -> tuple[Tensor, Tensor]:
    """Yin-Yang features ``(x, y, 1 - x, 1 - y)`` of the centres of a ``resolution`` x
    ``resolution`` grid on the unit square, row by row from ``y`` near 0 (shape
    ``(resolution ** 2, 4)``), and the mask (same order) of those inside the big circle."""
    resolution = c.int_in(resolution, "resolution", 2, 2000)
    centres = (torch.arange(resolution, dtype=torch.float64) + 0.5) / resolution
    y, x = torch.meshgrid(centres, centres, indexing="ij")
    xy = torch.stack([x.reshape(-1), y.reshape(-1)], dim=1)
    inside = ((xy - R_BIG) ** 2).sum(1) <= R_BIG ** 2
    return torch.cat([xy, 1.0 - xy], dim=1).to(torch.get_default_dtype()), inside


def _predictions(out, n: int, n_classes: int) -> Tensor:
    """Classes (n,) from a model (or readout) output: classes (n,) of an integer dtype,
    scores (n, C) (largest wins) or time-first readouts (T, n, C) (summed over time)."""
    if not isinstance(out, Tensor):
        raise TypeError(f"decision_map: the model (or readout) must return a tensor, got {type(out).__name__}; "
                        f"pass readout= to turn its output into classes or scores")
    out = out.detach().cpu()
    if out.dim() == 1 and out.dtype in _INTEGER and out.shape[0] == n:
        pred = out.long()
    elif out.dim() in (2, 3) and out.is_floating_point() and out.shape[-2:] == (n, n_classes):
        if not bool(torch.isfinite(out).all()):
            raise ValueError("decision_map: the model (or readout) output holds NaN or inf")
        pred = (out.sum(0) if out.dim() == 3 else out).argmax(1)
    else:
        raise ValueError(f"decision_map: the model (or readout) output for {n} inputs must be integer classes "
                         f"({n},), scores ({n}, {n_classes}) or time-first (T, {n}, {n_classes}); got "
                         f"{tuple(out.shape)} {out.dtype} (pass readout= to convert it)")
    if n and not 0 <= int(pred.min()) <= int(pred.max()) < n_classes:
        raise ValueError(f"decision_map: predicted classes must lie in [0, {n_classes}), got "
                         f"{int(pred.min())}..{int(pred.max())}")
    return pred


def _device(model) -> torch.device:
    """Where a module's parameters (or buffers) are; the CPU for a plain function."""
    if isinstance(model, nn.Module):
        for t in (*model.parameters(), *model.buffers()):
            return t.device
    return torch.device("cpu")


@torch.no_grad()
def _classify(model, features: Tensor, encode, readout, n_classes: int, batch_size: int) -> Tensor:
    preds, device = [], _device(model)
    for chunk in torch.split(features.to(device), batch_size):
        out = model(encode(chunk) if encode is not None else chunk)
        preds.append(_predictions(readout(out) if readout is not None else out, len(chunk), n_classes))
    return torch.cat(preds)


def _data(data, n_classes: int) -> tuple[Tensor, Tensor]:
    x, y = (data.data, data.targets) if hasattr(data, "targets") else data
    if not (isinstance(x, Tensor) and isinstance(y, Tensor) and x.dim() == 2 and x.shape[1] >= 2
            and y.shape == (x.shape[0],) and not y.is_floating_point()):
        raise ValueError("data must be a YinYang split or (features (M, 4), integer labels (M,)), got "
                         f"{tuple(getattr(x, 'shape', ()))} and {tuple(getattr(y, 'shape', ()))}")
    y = y.detach().cpu().long()
    if len(y) and not 0 <= int(y.min()) <= int(y.max()) < n_classes:   # -1 was drawn in the last class's colour
        raise ValueError(f"data: labels must lie in [0, {n_classes}) (one per name in classes), got "
                         f"{int(y.min())}..{int(y.max())}")
    return x.detach().cpu().to(torch.get_default_dtype()), y


def decision_map(model: Callable[[Tensor], Tensor], *, encode: Callable[[Tensor], Tensor] | None = None,
                 readout: Callable | None = None, data=None, resolution: int = 100,
                 classes: Sequence[str] = CLASSES, batch_size: int = 4096, ax=None, title: str | None = None):
    """The class a trained Yin-Yang model predicts at each point of the unit square (inside
    the big circle, the data's domain), with the data points on top.

    ``model`` (an ``nn.Module`` or any callable) is called on ``encode(features)`` for
    batches of at most ``batch_size`` grid points, where ``features`` are the Yin-Yang
    features ``(x, y, 1 - x, 1 - y)`` (B, 4): pass the same ``encode`` the model was trained
    with (e.g. ``lambda f: sf.encoding.rate(f, T)``; ``None``: the features themselves).
    ``readout`` (optional) turns the model's output into classes (B,), scores (B, C) or
    time-first readouts (T, B, C) (summed over time, e.g. spike counts); without it the
    output itself must be one of those. Only the grid points inside the big circle are
    evaluated. A module gets the features on the device of its parameters, is evaluated in
    ``eval()`` mode and put back in its mode afterwards. ``data``: a ``YinYang`` split or
    ``(features, labels)``, drawn coloured by label (the title then gives the accuracy on
    them). Returns the ``Figure``."""
    batch_size = c.int_in(batch_size, "batch_size", 1, 10**9)
    if not callable(model):
        raise TypeError(f"decision_map: model must be callable (a module or a function), got {type(model).__name__}")
    if len(classes) > len(COLORS):
        raise ValueError(f"classes: at most {len(COLORS)} classes can be coloured, got {len(classes)}")
    features, inside = yinyang_grid(resolution)
    was_training = model.training if isinstance(model, nn.Module) else None
    if was_training:
        model.eval()
    try:
        pred = torch.zeros(len(features), dtype=torch.long)
        pred[inside] = _classify(model, features[inside], encode, readout, len(classes), batch_size)
        points = _data(data, len(classes)) if data is not None else None
        hits = None
        if points is not None:
            hits = _classify(model, points[0], encode, readout, len(classes), batch_size) == points[1]
    finally:
        if was_training:
            model.train()
    return _draw(pred, inside, resolution, points, hits, classes, ax, title)


def _draw(pred, inside, resolution, points, hits, classes, ax, title):
    from matplotlib.colors import ListedColormap
    from matplotlib.patches import Patch

    fig, ax = c.axes(ax, (4.6, 4.4))
    colors = COLORS[:len(classes)]
    grid = np.ma.masked_array(pred.numpy().reshape(resolution, resolution),
                              mask=~inside.numpy().reshape(resolution, resolution))
    ax.imshow(grid, origin="lower", extent=(0, 1, 0, 1), cmap=ListedColormap(colors), vmin=-0.5,
              vmax=len(classes) - 0.5, alpha=0.45, interpolation="nearest")
    head = title or "decision map"
    if points is not None:
        x, y = points
        ax.scatter(x[:, 0].numpy(), x[:, 1].numpy(), c=[colors[k] for k in y.tolist()], s=8,
                   edgecolors="k", linewidths=0.3)
        wrong = ~hits
        ax.scatter(x[wrong, 0].numpy(), x[wrong, 1].numpy(), marker="x", color="k", s=14, linewidths=0.8)
        head += f"\n{100 * hits.double().mean().item():.1f} % of {len(y)} points right (x: wrong)"
    ax.legend(handles=[Patch(color=col, alpha=0.6, label=name) for col, name in zip(colors, classes)],
              loc="upper right", fontsize=7)
    ax.set(xlim=(0, 1), ylim=(0, 1), aspect="equal", xlabel="x", ylabel="y", title=head)
    return fig
