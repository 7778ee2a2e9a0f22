"""A disk cache for transformed samples: ``cache_dir()/data/<sha256>.pt``.

The key is the SHA-256 of the source file's contents, of what identifies the sample inside it
(empty for one-sample files) and of ``repr(transform)``; so an edited file, another sample or
another transform misses. A transform's repr must therefore describe it (a frozen dataclass, a
``tonic.transforms.Compose`` of dataclasses...): a default ``<function f at 0x...>`` repr
changes every run and is refused. Files are written to a temporary name and renamed, so an
interrupted run never leaves a half-written entry; an unreadable entry is recomputed.
"""
from __future__ import annotations

import hashlib
import os
import re
import tempfile
from pathlib import Path

import torch

from ...kernels._fused import cache_dir

__all__ = ["TensorCache", "file_digest"]

_ADDRESS = re.compile(r" at 0x[0-9a-fA-F]+")
FORMAT = "spikeforge-data-cache-1"


def file_digest(path, _memo: dict = {}) -> str:  # noqa: B006 - a per-process memo on purpose
    """SHA-256 of a file's bytes, remembered per (path, size, mtime) for this process."""
    st = os.stat(path)
    key = (os.fspath(path), st.st_size, st.st_mtime_ns)
    if key not in _memo:
        h = hashlib.sha256()
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        _memo[key] = h.hexdigest()
    return _memo[key]


class TensorCache:
    """``get(source, sample_key, compute)``: the cached tensor, or ``compute()`` stored then returned."""

    def __init__(self, transform, folder=None) -> None:
        if transform is None:
            raise ValueError("cache=True needs a transform (the cache stores transformed tensors)")
        text = repr(transform)
        if _ADDRESS.search(text):
            raise ValueError(f"cache=True needs a transform whose repr describes it, not {text!r} "
                             "(use a dataclass or give it a __repr__)")
        self.transform_repr = text
        self.folder = Path(folder) if folder is not None else cache_dir() / "data"

    def path(self, source, sample_key: str) -> Path:
        h = hashlib.sha256("\0".join([FORMAT, file_digest(source), sample_key, self.transform_repr]).encode())
        return self.folder / f"{h.hexdigest()}.pt"

    def get(self, source, sample_key: str, compute):
        target = self.path(source, sample_key)
        if target.exists():
            try:
                return torch.load(target, weights_only=True)
            except Exception:  # a damaged entry (disk full, foreign file): recompute it
                pass
        value = compute()
        if not isinstance(value, torch.Tensor):
            raise TypeError(f"cache=True stores tensors; the transform returned {type(value).__name__}")
        self.folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.folder, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(value, f)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
        return value
