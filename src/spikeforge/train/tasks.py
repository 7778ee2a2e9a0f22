"""The data sets the trainer knows: the embedded ones loaded whole into tensors (they are small),
those on disk streamed a batch at a time (``recorded.py``); ``splits.py`` has both kinds of split."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from .. import data
from .config import DataSet, Frames, TrainConfig
from .splits import Streamed, Tensors

__all__ = ["Task", "load_task", "batch_input"]

Split = Tensors | Streamed


@dataclass(frozen=True)
class Task:
    """Each split gives features (B, F) for static data, (B, T, F) for sequences, and labels (B,)."""

    classes: tuple[str, ...]
    n_in: int
    train: Split
    val: Split
    test: Split

    def split(self, name: str) -> Split:
        return {"train": self.train, "val": self.val, "test": self.test}[name]

    @property
    def streamed(self) -> bool:
        return isinstance(self.train, Streamed)


def _static(cls, device, **train) -> Task:
    parts = [cls("train", **train), cls("val"), cls("test")]
    tensors = [Tensors(d.data.to(device), d.targets.to(device)) for d in parts]
    return Task(tuple(cls.classes), parts[0].data.shape[1], *tensors)


def _events(cfg: TrainConfig, device) -> Task:
    out = []
    for s in ("train", "val", "test"):
        d = data.EventDigits(s)
        to_frame = dataclasses.replace(d.frame_transform(cfg.steps), binary=cfg.frames is Frames.BINARY)
        frames = np.stack([to_frame(ev).numpy() for ev in d.events]).reshape(len(d), cfg.steps, -1)
        out.append(Tensors(torch.from_numpy(frames).to(device), d.targets.to(device)))
    return Task(tuple(data.EventDigits.classes), out[0].x.shape[-1], *out)


def load_task(cfg: TrainConfig, device: str | torch.device | None = None) -> Task:
    """The data of ``cfg`` on ``device`` (default ``cfg.device``): in memory for the embedded
    data sets, streamed from ``cfg.data_root`` for the others."""
    device = torch.device(cfg.device if device is None else device)
    if cfg.dataset is DataSet.YINYANG:
        return _static(data.YinYang, device, size=cfg.train_size)
    if cfg.dataset is DataSet.DIGITS:
        return _static(data.Digits, device)
    if cfg.dataset is DataSet.EVENT_DIGITS:
        return _events(cfg, device)
    from .recorded import load_recorded

    return load_recorded(cfg, device)


def batch_input(x: Tensor) -> Tensor:
    """A batch as the model wants it: static (B, F) unchanged, sequences (B, T, F) -> (T, B, F)."""
    return x.transpose(0, 1) if x.dim() == 3 else x
