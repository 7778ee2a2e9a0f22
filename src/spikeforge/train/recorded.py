"""Data sets on disk as streamed splits: spikeforge's readers (``--dataset nmnist``, ``shd``, ...)
and tonic's datasets (``--dataset tonic:<Name>``), never downloaded.

Every sample is binned by ``ToFrame(sensor_size, n_time_bins=cfg.steps)`` over its own duration
(counts, or 0/1 with ``cfg.frames`` binary) and flattened to ``(T, P*H*W)``; for SHD/SSC that is
``(T, 700)``. Splits: the data set's own test split (and SSC's validation split); elsewhere the
validation set is a fixed random tenth of the train split (seed 0, whatever ``cfg.seed``), and a
data set published without a split (N-Caltech101, CIFAR10-DVS) gives a fixed random tenth (seed 1)
as the test set first. Only the file listing and the labels are read up front.
"""
from __future__ import annotations

import inspect

import torch

from .. import data
from ..data.readers import DatasetError
from .config import ConfigError, DataSet, Frames, TrainConfig
from .splits import Framed, Streamed
from .tasks import Task

__all__ = ["load_recorded", "holdout", "READERS"]

_TWO = {"train": {"train": True}, "test": {"train": False}}
_THREE = {"train": {"split": "train"}, "val": {"split": "valid"}, "test": {"split": "test"}}
_ONE = {"all": {}}

# data set -> its reader class and the keyword arguments that open each of its published splits
READERS = {
    DataSet.NMNIST: (data.NMNIST, _TWO),
    DataSet.NCALTECH101: (data.NCaltech101, _ONE),
    DataSet.DVSGESTURE: (data.DVSGesture, _TWO),
    DataSet.CIFAR10DVS: (data.CIFAR10DVS, _ONE),
    DataSet.SHD: (data.SHD, _TWO),
    DataSet.SSC: (data.SSC, _THREE),
}


def holdout(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(rest, held)``: a fixed random tenth of ``range(n)`` (at least one sample, none when
    ``n < 2``) and the rest, in the order of a permutation seeded with ``seed``."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    n_held = max(n // 10, 1) if n > 1 else 0
    return order[n_held:], order[:n_held]


def _frame(cfg: TrainConfig, sensor_size) -> data.ToFrame:
    return data.ToFrame(tuple(sensor_size), n_time_bins=cfg.steps, binary=cfg.frames is Frames.BINARY)


def _open_readers(cfg: TrainConfig) -> tuple[dict, tuple]:
    cls, splits = READERS[cfg.dataset]
    frame = _frame(cfg, cls.sensor_size)
    return {name: cls(cfg.data_root, transform=frame, cache=cfg.cache, **kw) for name, kw in splits.items()}, \
        cls.sensor_size


def _open_tonic(cfg: TrainConfig) -> tuple[dict, tuple]:
    from ..data.tonic_interop import open_tonic, tonic_class, tonic_sensor_size

    try:
        cls = tonic_class(cfg.tonic_dataset)
        size = tonic_sensor_size(cls)
    except ValueError as e:
        raise ConfigError(str(e)) from None
    params = inspect.signature(cls.__init__).parameters
    splits = _TWO if "train" in params else _THREE if "split" in params else _ONE
    frame = _frame(cfg, size)
    return {name: open_tonic(cfg.tonic_dataset, cfg.data_root, transform=frame, **kw)
            for name, kw in splits.items()}, size


def _labels(source, tonic: bool) -> torch.Tensor:
    """The labels of a data set from its listing (``targets``; for tonic see ``tonic_labels``)."""
    if tonic:
        from ..data.tonic_interop import tonic_labels

        return torch.as_tensor(tonic_labels(source), dtype=torch.int64)
    return torch.as_tensor([int(t) for t in source.targets], dtype=torch.int64)


def _classes(source, tonic: bool, n_classes: int) -> tuple[str, ...]:
    if tonic:
        from ..data.tonic_interop import tonic_classes

        names = tonic_classes(source)
    else:
        names = list(getattr(source, "classes", None) or [])
    return tuple(str(c) for c in names or range(n_classes))


def _assign(opened: dict) -> dict[str, tuple[object, torch.Tensor]]:
    """Each of train/val/test as (source, indices into it)."""
    if "all" in opened:
        src = opened["all"]
        rest, test = holdout(len(src), seed=1)
        keep, val = holdout(len(rest), seed=0)
        return {"train": (src, rest[keep]), "val": (src, rest[val] if len(val) else rest[keep]), "test": (src, test)}
    out = {name: (src, torch.arange(len(src))) for name, src in opened.items()}
    if "val" not in out:
        src = opened["train"]
        keep, val = holdout(len(src), seed=0)
        out["train"], out["val"] = (src, keep), (src, val if len(val) else keep)
    return out


def load_recorded(cfg: TrainConfig, device) -> Task:
    """The train/val/test splits of ``cfg``'s data set on disk, streamed to ``device``."""
    name = cfg.data_name
    opened, size = _open_tonic(cfg) if cfg.dataset is DataSet.TONIC else _open_readers(cfg)
    for split, src in opened.items():
        if len(src) == 0:
            raise DatasetError(None, f"{name}: the {split} split under {cfg.data_root} holds no samples")
    tonic = cfg.dataset is DataSet.TONIC
    labels = {id(src): _labels(src, tonic) for src in opened.values()}
    splits = {split: Streamed(Framed(src, idx.tolist()), labels[id(src)][idx], device, cfg.workers, cfg.batch_size)
              for split, (src, idx) in _assign(opened).items()}
    first = next(iter(opened.values()))
    n_classes = int(max(int(s.labels.max()) for s in splits.values())) + 1
    classes = _classes(first, tonic, n_classes)
    if len(classes) < n_classes:
        raise DatasetError(None, f"{name}: labels go up to {n_classes - 1} but the data set names "
                                 f"{len(classes)} classes")
    return Task(classes, size[0] * size[1] * size[2], splits["train"], splits["val"], splits["test"])
