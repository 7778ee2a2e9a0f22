"""The switch for per-call input checks, shared by the functional API and the fused kernels
(the CPU kernels check that x is finite inside their forward pass instead of in a separate
pass over it)."""
from __future__ import annotations

import torch
from torch import Tensor

_ON = {"on": True}


def enabled() -> bool:
    return _ON["on"]


def set_enabled(on: bool) -> bool:
    previous, _ON["on"] = _ON["on"], bool(on)
    return previous


def all_finite(t: Tensor) -> bool:
    """No NaN or inf in ``t``. A sum is one cheap pass with no allocation (``isfinite(t)``
    writes a full bool tensor: ~10x slower on sequence-sized tensors); only if the sum is
    not finite — NaN, inf, or an overflow of finite values — is the exact test run."""
    if t.numel() == 0 or bool(torch.isfinite(t.sum())):
        return True
    return bool(torch.isfinite(t).all())


class NotFiniteError(ValueError):
    """An input or parameter holds NaN or inf."""


def not_finite(name: str) -> NotFiniteError:
    return NotFiniteError(f"{name} contains NaN or inf values (spikeforge.functional.set_validation(False) "
                          f"turns this check off)")


def checking() -> bool:
    """Value checks run now: enabled, and not while ``torch.compile`` traces (a check that
    reads values would break the graph; the fused kernels still check x as they run)."""
    return _ON["on"] and not torch.compiler.is_compiling()
