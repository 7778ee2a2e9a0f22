"""The data sets the trainer knows, loaded whole into tensors (they are small)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import data
from .config import ConfigError, DataSet, TrainConfig

__all__ = ["Task", "load_task"]


@dataclass(frozen=True)
class Task:
    """Features are (N, F) for static data, (N, T, F) for sequences; labels (N,)."""

    classes: tuple[str, ...]
    n_in: int
    train: tuple[Tensor, Tensor]
    val: tuple[Tensor, Tensor]
    test: tuple[Tensor, Tensor]

    def split(self, name: str) -> tuple[Tensor, Tensor]:
        return {"train": self.train, "val": self.val, "test": self.test}[name]


def _static(cls, device) -> Task:
    parts = [cls(s) for s in ("train", "val", "test")]
    tensors = [(d.data.to(device), d.targets.to(device)) for d in parts]
    return Task(tuple(cls.classes), parts[0].data.shape[1], *tensors)


def _events(steps: int, device) -> Task:
    out = []
    for s in ("train", "val", "test"):
        d = data.EventDigits(s)
        to_frame = d.frame_transform(steps)
        frames = np.stack([to_frame(ev).numpy() for ev in d.events]).reshape(len(d), steps, -1)
        out.append((torch.from_numpy(frames).to(device), d.targets.to(device)))
    return Task(tuple(data.EventDigits.classes), out[0][0].shape[-1], *out)


def _tonic(cfg: TrainConfig, device) -> Task:
    """A tonic camera dataset: its test split, its train split less the last tenth (validation),
    each stream binned into ``cfg.steps`` frames over its own duration and flattened."""
    from ..data.tonic_interop import open_tonic, tonic_sensor_size

    out = []
    for train in (True, False):
        try:
            ds = open_tonic(cfg.tonic_dataset, cfg.data_root, train=train)
        except ValueError as e:
            raise ConfigError(str(e)) from None
        to_frame = data.ToFrame(tonic_sensor_size(ds), n_time_bins=cfg.steps)
        if len(ds) == 0:
            raise FileNotFoundError(f"tonic:{cfg.tonic_dataset}: the {'train' if train else 'test'} split "
                                    f"under {cfg.data_root} holds no samples")
        items = [ds[i] for i in range(len(ds))]
        x = torch.stack([to_frame(ev) for ev, _ in items]).reshape(len(items), cfg.steps, -1)
        out.append((x.to(device), torch.as_tensor([int(y) for _, y in items], device=device)))
        classes = tuple(str(c) for c in getattr(ds, "classes", range(int(out[-1][1].max()) + 1)))
    (x, y), test = out
    n_val = max(len(y) // 10, 1) if len(y) > 1 else 0       # a fixed random tenth (files come sorted by class)
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(0)).to(y.device)
    tr, va = order[n_val:], order[:n_val]
    return Task(classes, x.shape[-1], (x[tr], y[tr]), (x[va], y[va]) if n_val else (x[tr], y[tr]), test)


def load_task(cfg: TrainConfig, device: str | torch.device | None = None) -> Task:
    """The data of ``cfg`` on ``device`` (default ``cfg.device``)."""
    device = torch.device(cfg.device if device is None else device)
    if cfg.dataset is DataSet.YINYANG:
        return _static(data.YinYang, device)
    if cfg.dataset is DataSet.DIGITS:
        return _static(data.Digits, device)
    if cfg.dataset is DataSet.TONIC:
        return _tonic(cfg, device)
    return _events(cfg.steps, device)


def batch_input(x: Tensor) -> Tensor:
    """A batch as the model wants it: static (B, F) unchanged, sequences (B, T, F) -> (T, B, F)."""
    return x.transpose(0, 1) if x.dim() == 3 else x
