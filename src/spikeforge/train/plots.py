"""PNG plots of a run: learning curves, activity of a few test samples, confusion matrix.

matplotlib is optional (``pip install 'spikeforge[viz]'``) and imported only here, without
pyplot (figures are drawn with the Agg canvas, so no display or global state is touched).
"""
from __future__ import annotations

from pathlib import Path

import torch

__all__ = ["write_all", "curves", "activity", "confusion", "confusion_matrix"]

DPI = 90


def _figure(**kw):
    try:
        from matplotlib.figure import Figure
    except ImportError:
        raise ImportError("plots need matplotlib: pip install 'spikeforge[viz]'") from None
    return Figure(**kw)


def curves(history: list[dict], path: Path) -> None:
    """Training loss and train/validation accuracy per epoch."""
    fig = _figure(figsize=(8, 3.2), layout="constrained")
    ax_loss, ax_acc = fig.subplots(1, 2)
    ep = [h["epoch"] for h in history]
    ax_loss.plot(ep, [h["train_loss"] for h in history], label="train")
    ax_loss.plot(ep, [h["val_loss"] for h in history], label="validation")
    ax_loss.set(xlabel="epoch", ylabel="loss", yscale="log", title="loss")
    ax_acc.plot(ep, [100 * h["train_accuracy"] for h in history], label="train")
    ax_acc.plot(ep, [100 * h["val_accuracy"] for h in history], label="validation")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    ax_acc.set_ylim(max(0.0, min(100 * h["val_accuracy"] for h in history) - 2), 100)
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    fig.savefig(path, dpi=DPI)


def activity(spikes: torch.Tensor, membrane: torch.Tensor, labels, preds, classes, path: Path) -> None:
    """Hidden-layer spike raster (top) and readout membranes (bottom) of a few samples.
    ``spikes`` (T, S, H), ``membrane`` (T, S, C)."""
    n = spikes.shape[1]
    fig = _figure(figsize=(3.2 * n, 5.2), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharex=True, height_ratios=(3, 2))
    for s in range(n):
        t, neuron = torch.nonzero(spikes[:, s], as_tuple=True)
        axes[0, s].scatter(t.numpy(), neuron.numpy(), s=4, marker="|", color="k")
        axes[0, s].set(title=f"label {classes[labels[s]]}, predicted {classes[preds[s]]}",
                       ylim=(-1, spikes.shape[2]), ylabel="hidden neuron" if s == 0 else None)
        for c in range(membrane.shape[2]):
            axes[1, s].plot(membrane[:, s, c].numpy(), label=classes[c], lw=2 if c == labels[s] else 1)
        axes[1, s].set(xlabel="time step", ylabel="readout membrane" if s == 0 else None)
        axes[1, s].grid(alpha=0.3)
    if membrane.shape[2] <= 10:
        axes[1, n - 1].legend(fontsize=7, ncols=2 if membrane.shape[2] > 5 else 1)
    fig.savefig(path, dpi=DPI)


def confusion_matrix(labels: torch.Tensor, preds: torch.Tensor, n: int) -> torch.Tensor:
    return torch.bincount(labels * n + preds, minlength=n * n).reshape(n, n)


def confusion(cm: torch.Tensor, classes, path: Path, title: str = "test set") -> None:
    n = len(classes)
    fig = _figure(figsize=(max(3.6, 1.2 + 0.45 * n), max(3.2, 1.0 + 0.45 * n)), layout="constrained")
    ax = fig.subplots()
    ax.imshow(cm.numpy(), cmap="Blues")
    for i in range(n):
        for j in range(n):
            v = int(cm[i, j])
            ax.text(j, i, str(v), ha="center", va="center", fontsize=8,
                    color="white" if v > cm.max() / 2 else "black")
    ax.set(xticks=range(n), yticks=range(n), xticklabels=classes, yticklabels=classes,
           xlabel="predicted", ylabel="true", title=f"{title}: {int(cm.trace())}/{int(cm.sum())} correct")
    fig.savefig(path, dpi=DPI)


@torch.no_grad()
def write_all(trainer, n_samples: int = 3) -> list[str]:
    """Write the three plots of a finished run into its folder; returns the file names."""
    from .tasks import batch_input

    run_dir, task = Path(trainer.run_dir), trainer.task
    y = task.test.labels
    _, pred = trainer.predict("test")
    idx = _one_per_class(y, n_samples)
    v, z = trainer.model(batch_input(task.test.take(idx)[0]), return_spikes=True)
    curves(trainer.history, run_dir / "curves.png")
    activity(z.cpu(), v.cpu(), y[idx].tolist(), pred[idx].tolist(), task.classes, run_dir / "activity.png")
    confusion(confusion_matrix(y.cpu(), pred.cpu(), len(task.classes)), task.classes, run_dir / "confusion.png")
    return ["curves.png", "activity.png", "confusion.png"]


def _one_per_class(y: torch.Tensor, n: int) -> torch.Tensor:
    picks = [int(torch.nonzero(y == c)[0]) for c in torch.unique(y)[:n]]
    return torch.tensor(picks, device=y.device)
