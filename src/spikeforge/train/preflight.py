"""Checks that a run can start, made before its run folder is created: the device exists on
this machine, the requested backend runs there, and one training step of the model works.

A configuration that cannot run therefore fails with a one-line ``ConfigError`` and leaves
no folder behind that would block the next ``spikeforge train --out`` of the same name.
"""
from __future__ import annotations

import torch

from ..kernels import BackendError, backends
from .config import ConfigError, TrainConfig

__all__ = ["check_device", "check_backend", "dry_run", "one_line"]


def check_device(device: str) -> torch.device:
    """``device`` as a ``torch.device`` that this machine has, else ``ConfigError``."""
    try:
        d = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}") from None
    if d.type == "cpu":
        return d
    if d.type != "cuda":
        raise ConfigError(f"device {device!r} is not supported; use cpu or cuda[:N]")
    if torch.version.cuda is None and getattr(torch.version, "hip", None) is None:
        raise ConfigError(f"device {device!r}: this torch build ({torch.__version__}) has no CUDA support; "
                          f"use --device cpu or install a CUDA build of torch")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise ConfigError(f"device {device!r}: torch sees no CUDA GPU on this machine; use --device cpu")
    if d.index is not None and d.index >= count:
        raise ConfigError(f"device {device!r}: this machine has {count} CUDA device(s), cuda:0 to cuda:{count - 1}")
    return d


def check_backend(cfg: TrainConfig) -> None:
    """A backend given explicitly must be able to run on the run's device."""
    if cfg.backend is None:
        return
    reason = backends(cfg.device)[cfg.backend]
    if reason is not None:
        raise ConfigError(f"backend {cfg.backend} cannot run on device {cfg.device}: {one_line(reason)}")


def dry_run(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, loss) -> None:
    """One forward and backward pass of ``model`` on the batch ``(x, y)`` (a few samples);
    the gradients are dropped again, nothing else changes (no random numbers are drawn)."""
    from .model import loss_and_logits

    try:
        value, _ = loss_and_logits(model(x), y, loss)
        value.backward()
    except BackendError as e:
        raise ConfigError(one_line(e)) from e
    except (RuntimeError, ValueError, TypeError) as e:
        raise ConfigError(f"this configuration cannot run (one training step on {len(y)} samples failed): "
                          f"{type(e).__name__}: {one_line(e)}") from e
    finally:
        model.zero_grad(set_to_none=True)


def one_line(e, limit: int | None = None) -> str:
    """An exception's (or a text's) message on one line; cut after ``limit`` characters (marked
    `` ...``) when given."""
    text = " ".join(str(e).split())
    return text if limit is None or len(text) <= limit else text[:limit] + " ..."
