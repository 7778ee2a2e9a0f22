"""Plots of a training run: learning curves and a confusion matrix."""
from __future__ import annotations

from typing import Sequence

import torch
from torch import Tensor

from . import _common as c

__all__ = ["learning_curves", "confusion"]

CURVE_KEYS = ("epoch", "train_loss", "val_loss", "train_accuracy", "val_accuracy")


def learning_curves(history: Sequence[dict], *, fig=None, title: str | None = None):
    """Loss (log scale) and accuracy per epoch, train and validation, side by side.
    ``history``: one dict per epoch with the keys ``CURVE_KEYS`` (the trainer's
    ``metrics.json`` ``"history"``; accuracies as fractions). ``fig``: a ``Figure`` or
    ``SubFigure`` to draw into. Returns the ``Figure``."""
    if not history:
        raise ValueError("history must hold at least one epoch")
    missing = [k for k in CURVE_KEYS if any(k not in h for h in history)]
    if missing:
        raise ValueError(f"history: every epoch needs the keys {CURVE_KEYS}; missing {missing}")
    root, fig = c.panels(fig, (8, 3.2))
    ax_loss, ax_acc = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    for split, name in (("train", "train"), ("val", "validation")):
        ax_loss.plot(ep, [h[f"{split}_loss"] for h in history], label=name)
        ax_acc.plot(ep, [100 * h[f"{split}_accuracy"] for h in history], label=name)
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.set_ylim(max(0.0, min(100 * h["val_accuracy"] for h in history) - 2), 100)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    if title:
        fig.suptitle(title)
    return root


def confusion(cm: Tensor, classes: Sequence[str], *, ax=None, title: str = "test set"):
    """A confusion matrix ``cm`` (C, C) of counts (row: true class, column: predicted), each
    cell written out; the title gives the number right. Returns the ``Figure``."""
    n = len(classes)
    if not isinstance(cm, Tensor) or cm.shape != (n, n):
        raise ValueError(f"cm must be a ({n}, {n}) tensor for {n} classes, got "
                         f"{tuple(cm.shape) if isinstance(cm, Tensor) else type(cm).__name__}")
    cm = c.check_real(cm, "cm")
    if bool((cm < 0).any()):
        raise ValueError("cm must hold counts >= 0")
    fig, ax = c.axes(ax, (max(3.6, 1.2 + 0.45 * n), max(3.2, 1.0 + 0.45 * n)))
    ax.imshow(cm.numpy(), cmap="Blues")
    top = float(cm.max())
    for i in range(n):
        for j in range(n):
            v = float(cm[i, j])
            ax.text(j, i, f"{v:g}", ha="center", va="center", fontsize=8, color="white" if v > top / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=f"{title}: {cm.trace():g}/{cm.sum():g} correct")
    return fig


def confusion_matrix(labels: Tensor, preds: Tensor, n: int) -> Tensor:
    """Counts (n, n): row = true class, column = predicted class."""
    return torch.bincount(labels * n + preds, minlength=n * n).reshape(n, n)
