"""Run folders: ``train(cfg, out)`` runs a whole training into one; ``resume(run_dir)`` continues
one after an interruption; ``evaluate(run_dir)`` re-evaluates a checkpoint; ``load_run(run_dir)``
returns the trained model for inference. The work of each epoch is the ``Trainer``'s.
"""
from __future__ import annotations

import contextlib
import json
from datetime import datetime
from pathlib import Path

import torch

from . import preflight
from .checkpoint import CheckpointError, load_checkpoint, write_json
from .config import Frames, TrainConfig
from .distributed import from_env
from .model import Classifier
from .splits import Tensors
from .tasks import Task
from .trainer import BEST_CRITERION, RunResult, Trainer, run_settings

__all__ = ["train", "resume", "evaluate", "load_run", "read_config", "default_run_dir", "RunError"]


class RunError(RuntimeError):
    """A run folder that cannot be used as asked."""


def _data_note(trainer: Trainer) -> str:
    """How the data reach the model, for the start message: streamed or not, and what the
    input layer does with the frames."""
    cfg = trainer.cfg
    if not trainer.task.streamed:
        return ""
    workers = f"{cfg.workers} DataLoader worker{'s' if cfg.workers > 1 else ''}" if cfg.workers else "no workers"
    frames = ("0/1 frames: fc_in is a SpikeLinear (sparse where the input is sparse enough)"
              if cfg.frames is Frames.BINARY else
              "frames of counts: fc_in is dense (--frames binary clamps to 0/1 for SpikeLinear)")
    return f" streamed from {cfg.data_root} ({workers}; {frames})"


def _check_finite(task: Task) -> None:
    """Data held in memory are checked once here; streamed frames are event counts (finite)."""
    for name in ("train", "val", "test"):
        split = task.split(name)
        if isinstance(split, Tensors) and not bool(torch.isfinite(split.x).all()):
            raise RunError(f"the {name} data contain NaN or inf")


def default_run_dir(cfg: TrainConfig, root: str | Path = "runs") -> Path:
    return Path(root) / f"{cfg.dataset.value}-{datetime.now().strftime('%Y%m%d-%H%M%S')}-s{cfg.seed}"


def train(cfg: TrainConfig, out: str | Path | None = None, *, quiet: bool = False, plots: bool = True) -> RunResult:
    """Train ``cfg`` into the folder ``out`` (default ``runs/<dataset>-<time>-s<seed>``).
    The configuration is checked (and one training step tried) before the folder is created."""
    with _group(cfg) as group:
        run_dir = Path(out) if out is not None else default_run_dir(cfg)
        if group is not None:
            run_dir = Path(group.broadcast(str(run_dir)))      # rank 0's time stamp
        if (run_dir / "last.pt").exists() or (run_dir / "config.json").exists():
            raise RunError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another "
                           f"--out")
        trainer = _trainer(cfg)(cfg, run_dir, quiet=quiet, plots=plots, group=group)   # (DDP: all ranks meet here)
        _check_finite(trainer.task)
        trainer.check()
        if trainer.main:
            run_dir.mkdir(parents=True, exist_ok=True)
            write_json(run_dir / "config.json", cfg.to_dict())
        procs = "" if group is None else f" on {group.world} processes"
        trainer.progress.message(f"training {cfg.data_name}: {len(trainer.task.train.labels)} samples"
                                 f"{_data_note(trainer)}, {cfg.epochs} epochs{procs}; run folder {run_dir}")
        return trainer.fit()


def _trainer(cfg: TrainConfig) -> type[Trainer]:
    """The trainer of ``cfg.method``: local rules (stdp, desire) have their own (``local_model``)."""
    from .local_model import METHODS, LocalTrainer

    return LocalTrainer if cfg.method in METHODS else Trainer


@contextlib.contextmanager
def _group(cfg: TrainConfig):
    """The process group when this process is one of several workers (else ``None``)."""
    group = from_env(cfg.device)
    try:
        yield group
    finally:
        if group is not None:
            group.close()


def read_config(run_dir: str | Path) -> TrainConfig:
    path = Path(run_dir) / "config.json"
    if not path.is_file():
        raise RunError(f"{run_dir} is not a run folder (no config.json)")
    try:
        return TrainConfig.from_dict(json.loads(path.read_text()))
    except (ValueError, TypeError) as e:
        raise RunError(f"{path} is not a valid run configuration: {preflight.one_line(e)}") from e


def resume(run_dir: str | Path, *, epochs: int | None = None, quiet: bool = False, plots: bool = True) -> RunResult:
    """Continue the run in ``run_dir`` from its last completed epoch (``epochs`` may extend it).
    A run folder without a checkpoint (stopped before its first epoch ended) starts from epoch 1."""
    run_dir = Path(run_dir)
    cfg = read_config(run_dir)
    with _group(cfg) as group:
        ck = load_checkpoint(run_dir / "last.pt") if (run_dir / "last.pt").exists() else None
        trainer = _trainer(cfg)(cfg, run_dir, quiet=quiet, plots=plots, group=group)   # (DDP: all ranks meet here)
        if trainer.main:
            for stale in run_dir.glob(".*.tmp"):       # a write cut short by the interruption
                stale.unlink(missing_ok=True)
        trainer.check()
        if ck is not None:
            trainer.load_state(ck)
        if epochs is not None and epochs != cfg.epochs:
            if epochs < trainer.epoch:
                raise RunError(f"--epochs {epochs} is less than the {trainer.epoch} epochs already done")
            trainer.cfg = cfg.replace(epochs=epochs)
            if trainer.main:
                write_json(run_dir / "config.json", trainer.cfg.to_dict())
        if ck is None:
            trainer.progress.message(f"{run_dir} has no checkpoint yet: starting it from epoch 1 of "
                                     f"{trainer.cfg.epochs}")
        else:
            trainer.progress.message(f"resuming {run_dir} after epoch {trainer.epoch} of {trainer.cfg.epochs}")
        return trainer.fit()


_WHICH = ("best", "last")


def _checkpoint_path(run_dir: Path, which: str) -> Path:
    if which not in _WHICH:
        raise ValueError(f"which must be 'best' (best.pt, the {BEST_CRITERION}) or 'last' (last.pt, the last "
                         f"completed epoch), got {which!r}")
    return run_dir / f"{which}.pt"


def evaluate(run_dir: str | Path, split: str = "test", which: str = "best") -> dict:
    """Accuracy and loss of the run's ``which`` checkpoint (``best`` or ``last``) on ``split``."""
    run_dir = Path(run_dir)
    if split not in ("train", "val", "test"):
        raise ValueError(f"split must be 'train', 'val' or 'test', got {split!r}")
    path = _checkpoint_path(run_dir, which)
    cfg = read_config(run_dir)
    ck = load_checkpoint(path)
    trainer = _trainer(cfg)(cfg, run_dir, quiet=True, plots=False)
    trainer.load_state(ck, model_only=True)
    with run_settings(cfg):
        loss, acc = trainer.accuracy(split)
    return {"split": split, "which": which, "accuracy": acc, "loss": loss, "epoch": int(ck["epoch"])}


def load_run(run_dir: str | Path, which: str = "best", *, device: str | torch.device | None = None
             ) -> tuple[Classifier, TrainConfig]:
    """The trained model of a ``spikeforge train`` run folder, in eval mode, and the run's
    configuration.

    ``which``: ``"best"`` (``best.pt``, the epoch with the lowest validation loss, whose test
    accuracy ``metrics.json`` reports) or ``"last"`` (``last.pt``, the last completed epoch).
    ``device``: where the model goes (default: the run's device). ``model(x)`` returns the
    readout membrane (T, B, C) and ``model.predict(x)`` the classes (B,), for static features
    (B, F) or time-first sequences (T, B, F).
    """
    run_dir = Path(run_dir)
    path = _checkpoint_path(run_dir, which)
    cfg = read_config(run_dir)
    dev = preflight.check_device(str(cfg.device if device is None else device))
    ck = load_checkpoint(path, map_location=dev)
    weights = ck["model"]
    if _trainer(cfg) is not Trainer:       # a local-learning run: its LocalNet
        trainer = _trainer(cfg)(cfg, run_dir, quiet=True, plots=False)
        trainer.load_state(ck, model_only=True)
        return trainer.model.to(dev).eval(), cfg
    if not all(isinstance(weights.get(k), torch.Tensor) for k in ("fc_in.weight", "fc_out.weight")):
        raise CheckpointError(f"{path} does not hold the weights of a spikeforge.train.Classifier")
    fixed = Classifier.input_channels(0, cfg)          # fc_in's inputs: fixed + per_feature * features
    n_in = (weights["fc_in.weight"].shape[1] - fixed) // (Classifier.input_channels(1, cfg) - fixed)
    model = Classifier(n_in, weights["fc_out.weight"].shape[0], cfg)
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise CheckpointError(f"{path} does not fit the model of {run_dir / 'config.json'}: "
                              f"{preflight.one_line(e, 300)}") from e
    return model.to(dev).eval(), cfg
