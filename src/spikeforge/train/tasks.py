"""The data sets the trainer knows, loaded whole into tensors (they are small)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import data
from .config import DataSet, TrainConfig

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


def load_task(cfg: TrainConfig) -> Task:
    device = torch.device(cfg.device)
    if cfg.dataset is DataSet.YINYANG:
        return _static(data.YinYang, device)
    if cfg.dataset is DataSet.DIGITS:
        return _static(data.Digits, device)
    return _events(cfg.steps, device)


def batch_input(x: Tensor) -> Tensor:
    """A batch as the model wants it: static (B, F) unchanged, sequences (B, T, F) -> (T, B, F)."""
    return x.transpose(0, 1) if x.dim() == 3 else x
