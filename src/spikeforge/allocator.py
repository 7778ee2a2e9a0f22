"""Opt-in glibc allocator tuning for large CPU tensors.

glibc serves every allocation above ~32 MB with a fresh ``mmap``, so each new
sequence-sized tensor page-faults on first touch (measured here: ~45 ms for 65 MB,
against ~3 ms when the heap keeps its pages; see shared/PERFORMANCE.md). PyTorch has no
caching allocator on CPU. ``tune_allocator()`` makes glibc keep freed memory in the heap,
which is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` does from the
environment. It changes the whole process, so spikeforge never applies it by itself:
``spikeforge train`` and the benchmarks call it explicitly and say so.
"""
from __future__ import annotations

import ctypes
import ctypes.util

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4


def tune_allocator(trim_threshold: int = 1 << 40) -> bool:
    """Keep large allocations in the glibc heap. Returns False where glibc is absent."""
    name = ctypes.util.find_library("c")
    if name is None:
        return False
    try:
        libc = ctypes.CDLL(name)
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    return ok and mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) == 1
