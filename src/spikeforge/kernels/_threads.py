"""How many OpenMP threads a compiled kernel call gets: the one rule every CPU kernel uses."""
from __future__ import annotations

import ctypes

import torch


def threads(numel: int, parallel_min: int) -> ctypes.c_int:
    """One thread for a call over fewer than ``parallel_min`` elements (waking a team costs
    more than such a call takes), else ``torch.get_num_threads()``. ``numel`` counts the
    elements the call works through, which the caller names (the fused CPU kernels: the
    (T, B, N) sequence, not a gradient that may be one broadcast row)."""
    return ctypes.c_int(1 if numel < parallel_min else torch.get_num_threads())
