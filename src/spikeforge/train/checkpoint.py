"""Checkpoints: written atomically, read without unpickling arbitrary objects.

A checkpoint is a ``torch.save`` file holding only tensors and plain Python values:
``{"format": FORMAT, "version": VERSION, "epoch", "config", "model", "optimizer",
"history", "best"}``. Writing goes to a temporary file in the same folder, is flushed to
disk, then renamed over the old file, so a crash (even ``kill -9``) leaves either the
old or the new checkpoint, never half of one. Reading uses ``weights_only=True``; a
truncated, corrupted or foreign file raises ``CheckpointError`` saying what is wrong.
"""
from __future__ import annotations

import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import torch

__all__ = ["CheckpointError", "save_checkpoint", "load_checkpoint", "atomic_write_bytes", "write_json", "FORMAT",
           "VERSION"]

FORMAT = "spikeforge-train-checkpoint"
VERSION = 1
REQUIRED = ("epoch", "config", "model", "optimizer", "history", "best")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used."""


def _atomic(path: Path, write) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:   # not supported on every platform
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so that readers see the old or the new content, never a mix."""
    _atomic(Path(path), lambda f: f.write(data))


def write_json(path: str | Path, obj) -> None:
    """``obj`` as indented JSON, written atomically (``config.json``, ``metrics.json``)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=2) + "\n").encode())


def save_checkpoint(path: str | Path, **content: Any) -> None:
    missing = [k for k in REQUIRED if k not in content]
    if missing:
        raise ValueError(f"checkpoint content lacks {missing}")
    payload = {"format": FORMAT, "version": VERSION, **content}
    _atomic(Path(path), lambda f: torch.save(payload, f))


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """The checkpoint's content; ``CheckpointError`` if it is missing, damaged or not ours."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {path}")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(
            f"{path} is not a readable spikeforge checkpoint (corrupted, truncated, or it holds objects "
            f"that are not loaded for safety): {type(e).__name__}: {_first_line(e)}") from e
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CheckpointError(f"{path} is a torch file but not a spikeforge training checkpoint")
    if data.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint version {data.get('version')!r}; this spikeforge reads {VERSION}")
    missing = [k for k in REQUIRED if k not in data]
    if missing:
        raise CheckpointError(f"{path} lacks {missing}")
    return data


# Sentences of torch's load errors that advise loading unsafely or point elsewhere: dropped.
_ADVICE = ("weights_only", "safe_globals", "trusted source", "trust the source", "file an issue", "documentation",
           "two options", "recommended steps")


def _first_line(e: Exception) -> str:
    """The reason torch gives for a failed load, on one line, without its advice to retry
    with ``weights_only=False`` (which would unpickle arbitrary code) or to allow-list globals."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(e))
    marker = "WeightsUnpickler error:"
    if marker in text:
        text = text.split(marker, 1)[1]
    sentences = (" ".join(x.split()) for x in re.split(r"\n|(?<=[.!?])\s+", text))
    kept = [x for x in sentences if x and not any(a in x.lower() for a in _ADVICE)]
    return kept[0] if kept else "unknown reason"
