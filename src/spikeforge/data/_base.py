"""What every embedded dataset shares: ``(sample, label)`` items, an optional transform."""
from __future__ import annotations

import torch


class Labelled(torch.utils.data.Dataset):
    """Items ``(transform(samples[i]), targets[i])``; subclasses set ``split``,
    ``transform``, ``targets`` and ``samples`` (what ``__getitem__`` indexes)."""

    split: str
    transform = None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i):
        x = self.samples[i]
        return (x if self.transform is None else self.transform(x)), self.targets[i]

    def __repr__(self) -> str:
        return f"{type(self).__name__}(split={self.split!r}, n={len(self)}{self._repr_extra()})"

    def _repr_extra(self) -> str:
        return ""
