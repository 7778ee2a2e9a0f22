"""PNG plots of a run: learning curves, activity of a few test samples, confusion matrix, and
for Yin-Yang the decision map; all drawn by ``spikeforge.viz``.

matplotlib is optional (``pip install 'spikeforge[viz]'``) and imported only when a plot is
drawn, without pyplot (Agg canvas: no display or global state is touched).
"""
from __future__ import annotations

from pathlib import Path

import torch

from .. import viz
from ..viz._common import figure
from .config import DataSet, Loss

__all__ = ["write_all", "curves", "activity", "confusion", "confusion_matrix", "decision"]

DPI = 90
confusion_matrix = viz.confusion_matrix


def curves(history: list[dict], path: Path) -> None:
    """Training loss and train/validation accuracy per epoch."""
    viz.learning_curves(history).savefig(path, dpi=DPI)


def activity(spikes: torch.Tensor, membrane: torch.Tensor, labels, preds, classes, path: Path,
             v_th: float | None = None) -> None:
    """Hidden-layer spike raster (top) and readout membranes (bottom, the true class drawn
    thicker; ``v_th``: the readout's firing level, if it has one) of a few samples.
    ``spikes`` (T, S, H), ``membrane`` (T, S, C)."""
    n, n_classes = spikes.shape[1], membrane.shape[2]
    fig = figure(figsize=(3.2 * n, 5.2), layout="constrained")
    axes = fig.subplots(2, n, squeeze=False, sharex=True, height_ratios=(3, 2))
    for s in range(n):
        title = f"label {classes[labels[s]]}, predicted {classes[preds[s]]}"
        viz.raster(spikes, sample=s, ax=axes[0, s], title=title)
        viz.membrane(membrane, sample=s, neurons=range(n_classes), labels=list(classes), v_th=v_th,
                     ax=axes[1, s], title="readout")
        axes[1, s].get_lines()[labels[s]].set_linewidth(2.2)
        axes[0, s].set(xlabel="", ylabel="hidden neuron" if s == 0 else None)
        axes[1, s].set(ylabel="readout membrane" if s == 0 else None)
        legend = axes[1, s].get_legend()         # membrane() gives one up to 10 traces; keep the last
        if legend is not None and s != n - 1:
            legend.remove()
    fig.savefig(path, dpi=DPI)


def confusion(cm: torch.Tensor, classes, path: Path, title: str = "test set") -> None:
    viz.confusion(cm, classes, title=title).savefig(path, dpi=DPI)


def decision(trainer, path: Path) -> None:
    """The Yin-Yang decision map of the trained model, with the test points."""
    split = trainer.task.test
    model = trainer.model
    device = next(model.parameters()).device
    fig = viz.decision_map(lambda f: model.predict(f.to(device)), data=(split.x.cpu(), split.y.cpu()),
                           classes=trainer.task.classes, resolution=50, title="decision map (test points)")
    fig.savefig(path, dpi=DPI)


@torch.no_grad()
def write_all(trainer, n_samples: int = 3) -> list[str]:
    """Write the plots of a finished run into its folder; returns the file names."""
    from .tasks import batch_input

    run_dir, task = Path(trainer.run_dir), trainer.task
    y = task.test.labels
    _, pred = trainer.predict("test")
    idx = _one_per_class(y, n_samples)
    v, z = trainer.model(batch_input(task.test.take(idx)[0]), return_spikes=True)
    v_th = 1.0 if trainer.cfg.loss is Loss.FIRST_SPIKE else None     # a first-spike readout "fires" at 1
    curves(trainer.history, run_dir / "curves.png")
    activity(z.cpu(), v.cpu(), y[idx].tolist(), pred[idx].tolist(), task.classes, run_dir / "activity.png", v_th)
    confusion(confusion_matrix(y.cpu(), pred.cpu(), len(task.classes)), task.classes, run_dir / "confusion.png")
    names = ["curves.png", "activity.png", "confusion.png"]
    if trainer.cfg.dataset is DataSet.YINYANG:
        decision(trainer, run_dir / "decision_map.png")
        names.append("decision_map.png")
    return names


def _one_per_class(y: torch.Tensor, n: int) -> torch.Tensor:
    picks = [int(torch.nonzero(y == c)[0]) for c in torch.unique(y)[:n]]
    return torch.tensor(picks, device=y.device)
