"""The two kinds of data split the trainer iterates.

``Tensors``: a split held whole in memory (the embedded data sets, small). ``Streamed``: a split
read from files a batch at a time through a ``torch.utils.data.DataLoader`` (the recorded data
sets and tonic's), so memory holds a batch (and the workers' prefetched batches), never the split.

Both offer the same three things, so the trainer shuffles, shares batches out among ranks and
evaluates in one way for both, and the two give the same batches on the same data:

- ``labels``: every label of the split, ``(N,)`` on the run's device (read from the file
  listing, without reading the samples);
- ``take(idx)``: one batch ``(x, y)``, ``x`` ``(B, F)`` or ``(B, T, F)``;
- ``batches(index_lists)``: the batches of the given index lists, in order (for ``Streamed``
  read ahead by ``workers`` processes).
"""
from __future__ import annotations

from typing import Iterator, NamedTuple

import torch
from torch import Tensor

from ..data.readers import DatasetError

__all__ = ["Tensors", "Streamed", "Framed", "Failure", "collate"]


class Tensors(NamedTuple):
    """A split held whole: features ``x`` (N, F) or (N, T, F) and labels ``y`` (N,), on the run's device."""

    x: Tensor
    y: Tensor
    eval_chunk = 1000          # samples per evaluation batch

    @property
    def labels(self) -> Tensor:
        return self.y

    def take(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        idx = idx.to(self.y.device)
        return self.x[idx], self.y[idx]

    def batches(self, index_lists: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        return (self.take(idx) for idx in index_lists)


class Failure(NamedTuple):
    """A sample that could not be read, carried out of a DataLoader worker as a value (an exception
    raised there would reach the user wrapped in the worker's traceback)."""

    message: str
    dataset_error: bool        # a ``DatasetError`` (a bad file), else another failure

    def throw(self):
        raise DatasetError(None, self.message) if self.dataset_error else RuntimeError(self.message)


class Framed(torch.utils.data.Dataset):
    """Items ``(frames (T, F) float32, label)``: sample ``indices[k]`` of ``source``, whose items are
    ``(tensor (T, ...), label)`` (a reader or tonic dataset with a frame transform), flattened
    after the time axis. A sample that cannot be read becomes a ``Failure``."""

    def __init__(self, source, indices) -> None:
        self.source, self.indices = source, [int(i) for i in indices]

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, k: int):
        i = self.indices[k]
        try:
            x, y = self.source[i]
            x = torch.as_tensor(x)
            return x.reshape(x.shape[0], -1), int(y)
        except DatasetError as e:
            return Failure(str(e), True)
        except Exception as e:  # a reader or transform failing: named, and raised in the main process
            text = " ".join(str(e).split())
            return Failure(f"sample {i} of {type(self.source).__name__}: {type(e).__name__}: {text}", False)


def collate(items: list) -> tuple[Tensor, Tensor] | Failure:
    """``[(frames (T, F), label), ...]`` -> ``(x (B, T, F), y (B,))``, or the first ``Failure``."""
    for item in items:
        if isinstance(item, Failure):
            return item
    shapes = {tuple(x.shape) for x, _ in items}
    if len(shapes) > 1:
        raise ValueError(f"samples of one batch have different frame shapes {sorted(shapes)}; the trainer bins "
                         f"every sample into the same number of steps")
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items], dtype=torch.int64)


class Streamed:
    """A split read from files: ``items`` (a ``Framed``) batched by a ``DataLoader`` with
    ``workers`` worker processes (0: in this process); batches go to ``device``."""

    def __init__(self, items: Framed, labels: Tensor, device: torch.device, workers: int = 0,
                 eval_chunk: int = 128) -> None:
        if len(labels) != len(items):
            raise ValueError(f"labels: {len(labels)} labels for {len(items)} samples")
        self.items, self.device, self.workers, self.eval_chunk = items, torch.device(device), workers, eval_chunk
        self.labels = labels.to(self.device)

    def take(self, idx: Tensor) -> tuple[Tensor, Tensor]:
        return self._to_device(collate([self.items[int(i)] for i in idx]))

    def batches(self, index_lists: list[Tensor]) -> Iterator[tuple[Tensor, Tensor]]:
        sampler = [[int(i) for i in idx] for idx in index_lists]
        loader = torch.utils.data.DataLoader(self.items, batch_sampler=sampler, collate_fn=collate,
                                             num_workers=self.workers, pin_memory=self.device.type == "cuda")
        return (self._to_device(batch) for batch in loader)

    def _to_device(self, batch) -> tuple[Tensor, Tensor]:
        if isinstance(batch, Failure):
            batch.throw()
        x, y = batch
        return x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)

    def __repr__(self) -> str:
        return f"Streamed(n={len(self.items)}, source={type(self.items.source).__name__}, workers={self.workers})"
