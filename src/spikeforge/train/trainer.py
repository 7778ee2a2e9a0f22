"""The trainer: ``Trainer(cfg, run_dir)`` holds one run's model, optimiser and data, trains
epoch by epoch and evaluates; ``runs.py`` drives it on run folders (``train``, ``resume``,
``evaluate``, ``load_run``).

Run folder: ``config.json`` (the resolved configuration), ``last.pt`` (written atomically
after every epoch, holds everything needed to continue), ``best.pt`` (the epoch with the
lowest validation loss), ``metrics.json`` and, unless ``plots=False``, PNG plots.
Before the folder is created, the configuration is checked and one training step is tried
(``preflight``), so a run that cannot start leaves nothing behind.
Training is deterministic for a given seed (shuffling uses a generator seeded per epoch),
so a resumed run ends with the same weights as one that was never interrupted. The data come
as splits (``splits.py``): whole tensors for the embedded data sets, streamed from files a batch
at a time for the others; the trainer draws the same index batches from either.
On several processes (``spikeforge train --nproc N`` or torchrun; ``distributed``) each
global batch is shared out among the ranks, gradients are averaged by DDP, the metrics are
summed over the ranks, and rank 0 alone prints and writes the run folder.
"""
from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .. import functional
from . import preflight, quantize_step
from .checkpoint import CheckpointError, save_checkpoint, write_json
from .config import Precision, Schedule, TrainConfig
from .distributed import Group
from .model import Classifier, loss_and_logits
from .progress import Progress
from .tasks import Task, batch_input, load_task

__all__ = ["Trainer", "RunResult", "BEST_CRITERION", "run_settings"]

BEST_CRITERION = "lowest validation loss"   # how best.pt is chosen (see Trainer._one_epoch)


@dataclass
class RunResult:
    """The outcome of ``train``/``resume``. ``best_epoch`` is the epoch kept as ``best.pt``
    (the lowest validation loss) and ``best_val_accuracy`` that epoch's validation accuracy."""

    run_dir: Path
    test_accuracy: float
    best_val_accuracy: float
    best_epoch: int
    history: list[dict] = field(default_factory=list)
    seconds: float = 0.0
    plots: list[str] = field(default_factory=list)


class Trainer:
    """Holds the model, optimiser and data of one run; ``fit()`` trains and finishes it."""

    def __init__(self, cfg: TrainConfig, run_dir: str | Path, *, quiet: bool = False, plots: bool = True,
                 group: Group | None = None) -> None:
        self.cfg, self.run_dir, self.plots, self.group = cfg, Path(run_dir), plots, group
        self.main = group is None or group.main           # prints and writes the run folder
        self.progress = Progress(quiet or not self.main)
        preflight.check_device(cfg.device)
        preflight.check_backend(cfg)
        self.device = group.device if group is not None else torch.device(cfg.device)
        self.task: Task = load_task(cfg, self.device)
        torch.manual_seed(cfg.seed)
        self.model = Classifier(self.task.n_in, len(self.task.classes), cfg).to(self.device)
        self.net = group.wrap(self.model) if group is not None else self.model   # what trains
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=cfg.lr)
        self.history: list[dict] = []
        self.best = {"epoch": 0, "val_accuracy": 0.0, "val_loss": math.inf}
        self.best_model = _copy_state(self.model)
        self.epoch = 0          # epochs completed

    # -- state ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
                "optimizer": self.optimizer.state_dict(), "history": self.history, "best": self.best,
                "best_model": self.best_model}

    def load_state(self, ck: dict, model_only: bool = False) -> None:
        mine, theirs = self.cfg.to_dict(), _with_defaults(ck["config"])
        mine.pop("epochs"), theirs.pop("epochs", None)   # a resumed run may be extended
        if mine != theirs:
            raise CheckpointError("the checkpoint was written with another configuration than this run's config.json")
        try:
            self.model.load_state_dict(ck["model"])
            if not model_only:
                self.optimizer.load_state_dict(ck["optimizer"])
                self.best_model = ck.get("best_model", _copy_state(self.model))
        except (RuntimeError, ValueError, KeyError, TypeError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model: {preflight.one_line(e, 300)}") from e
        if not model_only:
            self.epoch, self.history, self.best = int(ck["epoch"]), list(ck["history"]), dict(ck["best"])

    def check(self) -> None:
        """Try one training step on two samples (``preflight.dry_run``): a configuration that
        cannot run fails here with a ``ConfigError``, before anything is written."""
        x, y = self.task.train.take(torch.arange(min(2, len(self.task.train.labels))))
        preflight.dry_run(self.model, batch_input(x), y, self.cfg.loss)
        if self.cfg.quantize is not None:      # Xylo's design rules, before any training
            quantize_step.preflight(self)

    # -- one epoch ----------------------------------------------------------------------
    def _lr(self, step: int, total: int) -> float:
        if self.cfg.schedule is Schedule.CONSTANT:
            return self.cfg.lr
        if self.cfg.schedule is Schedule.LINEAR:
            return self.cfg.lr * (1.0 - 0.9 * step / max(total - 1, 1))
        warm = max(total // max(self.cfg.epochs, 1), 1)
        if step < warm:
            return self.cfg.lr * (step + 1) / warm
        return self.cfg.lr * 0.5 * (1.0 + math.cos(math.pi * (step - warm) / max(total - warm, 1)))

    def _autocast(self):
        if self.cfg.precision is Precision.BF16:
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _share(self, idx: torch.Tensor) -> tuple[torch.Tensor, float]:
        """This rank's part of the global batch ``idx`` and the weight of its mean loss."""
        return self.group.share(idx) if self.group is not None else (idx, 1.0)

    def _step(self, x: torch.Tensor, y: torch.Tensor, weight: float) -> tuple[float, int]:
        """One optimiser step on this rank's part ``(x, y)`` of a global batch; the batch's loss
        sum and correct count (over all ranks)."""
        with self._autocast():
            loss, logits = loss_and_logits(self.net(batch_input(x)), y, self.cfg.loss)
        self.optimizer.zero_grad(set_to_none=True)
        (loss if self.group is None else loss * weight).backward()
        self.optimizer.step()
        stats = [loss.item() * len(y), int((logits.argmax(1) == y).sum())]
        if self.group is not None:
            stats = self.group.sum([v if weight else 0 for v in stats])
        return stats[0], int(stats[1])

    def train_epoch(self) -> dict:
        cfg, split = self.cfg, self.task.train
        n, e, bs = len(split.labels), self.epoch + 1, cfg.batch_size
        per_epoch = math.ceil(n / bs)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + e))
        shares = [self._share(order[b * bs:(b + 1) * bs]) for b in range(per_epoch)]
        self.model.train()
        loss_sum, correct, t0, c0 = 0.0, 0, time.perf_counter(), time.process_time()
        for b, ((_, weight), (x, y)) in enumerate(zip(shares, split.batches([m for m, _ in shares]))):
            for g in self.optimizer.param_groups:
                g["lr"] = self._lr(self.epoch * per_epoch + b, cfg.epochs * per_epoch)
            batch_loss, batch_correct = self._step(x, y, weight)
            done = min(n, (b + 1) * bs)
            if not math.isfinite(batch_loss):
                raise FloatingPointError(f"the loss became {batch_loss / (done - b * bs)} in epoch {e}; try a "
                                         f"smaller --lr")
            loss_sum += batch_loss
            correct += batch_correct
            self.progress.batch(e, cfg.epochs, b + 1, per_epoch, loss_sum / done, correct / done)
        return {"train_loss": loss_sum / n, "train_accuracy": correct / n, "train_seconds": time.perf_counter() - t0,
                "train_cpu_seconds": time.process_time() - c0}

    @torch.no_grad()
    def predict(self, split: str, part: slice = slice(None)) -> tuple[float, torch.Tensor]:
        """Mean loss and predicted classes on a split (on its ``part``), in batches of the
        split's ``eval_chunk`` samples."""
        data = self.task.split(split)
        start, stop, _ = part.indices(len(data.labels))
        chunks = [torch.arange(i, min(i + data.eval_chunk, stop)) for i in range(start, stop, data.eval_chunk)]
        self.model.eval()
        loss, preds = 0.0, [data.labels[:0]]
        for x, y in data.batches(chunks):
            with self._autocast():
                l, logits = loss_and_logits(self.model(batch_input(x)), y, self.cfg.loss)
            loss += l.item() * len(y)
            preds.append(logits.argmax(1))
        return loss / max(stop - start, 1), torch.cat(preds)

    def accuracy(self, split: str) -> tuple[float, float]:
        """Mean loss and accuracy on a split (each rank evaluates its share, then they are summed)."""
        y = self.task.split(split).labels
        if self.group is None:
            loss, pred = self.predict(split)
            return loss, (pred == y).float().mean().item()
        part = self.group.part(len(y))
        loss, pred = self.predict(split, part=part)
        loss_sum, correct = self.group.sum([loss * len(pred), float((pred == y[part]).sum())])
        return loss_sum / max(len(y), 1), correct / max(len(y), 1)

    # -- the run ------------------------------------------------------------------------
    def fit(self) -> RunResult:
        t0, c0 = time.perf_counter(), time.process_time()
        with run_settings(self.cfg):
            while self.epoch < self.cfg.epochs:
                self._one_epoch()
            self.model.load_state_dict(self.best_model)
            test_loss, test_acc = self.accuracy("test")
            quant = {"quantize": quantize_step.after_training(self, test_acc)} if self.cfg.quantize else {}
        seconds = time.perf_counter() - t0
        plots = self._plots() if self.plots and self.main else []
        metrics = self.metrics(test_acc, test_loss, status="done", train_seconds=seconds,
                               train_cpu_seconds=time.process_time() - c0, plots=plots, **quant)
        if self.main:
            write_json(self.run_dir / "metrics.json", metrics)
        self.progress.message(f"test accuracy {100 * test_acc:.2f}% with best.pt (epoch {self.best['epoch']}, "
                              f"the {BEST_CRITERION}; val accuracy {100 * self.best['val_accuracy']:.2f}%); "
                              f"run folder: {self.run_dir}")
        return RunResult(self.run_dir, test_acc, self.best["val_accuracy"], self.best["epoch"], self.history,
                         seconds, plots)

    def _one_epoch(self) -> None:
        row = self.train_epoch()
        val_loss, val_acc = self.accuracy("val")
        self.epoch += 1
        row = {"epoch": self.epoch, **row, "val_loss": val_loss, "val_accuracy": val_acc}
        self.history.append(row)
        # the best epoch is the one with the lowest validation loss: on 1000 samples the accuracy
        # moves in steps of 0.1 % and picks noisy mid-training epochs more often
        improved = val_loss <= self.best["val_loss"]
        if improved:
            self.best = {"epoch": self.epoch, "val_accuracy": val_acc, "val_loss": val_loss}
            self.best_model = _copy_state(self.model)
            if self.main:
                save_checkpoint(self.run_dir / "best.pt", **self.state())
        if self.main:
            save_checkpoint(self.run_dir / "last.pt", **self.state())
            write_json(self.run_dir / "metrics.json", self.metrics(None, None, status="running"))
        self.progress.epoch(
            f"epoch {self.epoch:3d}/{self.cfg.epochs}  loss {row['train_loss']:.4f}  "
            f"train {100 * row['train_accuracy']:6.2f}%  val {100 * val_acc:6.2f}%  "
            f"{row['train_seconds']:5.2f}s{'  *' if improved else ''}")

    def metrics(self, test_acc, test_loss, status: str, **extra) -> dict:
        """``metrics.json``: the test figures are those of ``best.pt``, the epoch described by
        ``best`` (chosen by ``BEST_CRITERION``)."""
        best = {"epoch": self.best["epoch"], "chosen_by": BEST_CRITERION, "val_loss": _finite(self.best["val_loss"]),
                "val_accuracy": self.best["val_accuracy"]}
        procs = {} if self.group is None else {"processes": self.group.world}
        return {"status": status, "dataset": self.cfg.data_name, "epochs_done": self.epoch,
                "test_accuracy": test_acc, "test_loss": test_loss, "best": best, "history": self.history,
                **procs, **extra}

    def _plots(self) -> list[str]:
        from . import plots

        try:
            return plots.write_all(self)
        except ImportError as e:
            self.progress.message(f"plots skipped: {e}")
            return []


@contextlib.contextmanager
def run_settings(cfg: TrainConfig):
    """Thread count and per-call input checks for the run (the data are checked once)."""
    threads = torch.get_num_threads()
    if cfg.threads:
        torch.set_num_threads(cfg.threads)
    checks = functional.set_validation(False)
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        functional.set_validation(checks)


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None      # JSON has no inf


def _with_defaults(config) -> dict:
    """A checkpoint's configuration with the keys added since it was written at their defaults."""
    if not isinstance(config, dict):
        return {}
    try:
        return TrainConfig.from_dict(config).to_dict()
    except (ValueError, TypeError):
        return dict(config)


def _copy_state(model: torch.nn.Module) -> dict:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}
