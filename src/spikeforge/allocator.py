"""Opt-in glibc allocator tuning for large CPU tensors.

glibc serves every allocation above ~32 MB with a fresh ``mmap``, so each new
sequence-sized tensor page-faults on first touch (measured here: ~45 ms for 65 MB,
against ~3 ms when the heap keeps its pages; see shared/PERFORMANCE.md). PyTorch has no
caching allocator on CPU. ``tune_allocator()`` makes glibc keep freed memory in the heap,
which is what ``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` does from the
environment. It changes the whole process, so spikeforge never applies it by itself:
``spikeforge train`` and the benchmarks call it explicitly and say so.

Without it, ``empty`` (used for the fused kernels' large outputs) advises the fresh
mapping as transparent huge pages, so that its first touch takes 2 MB faults instead of
4 KB ones (measured here: 14 ms instead of 73 ms to touch a fresh 131 MB mapping).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import os
import sys

import torch

__all__ = ["tune_allocator"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_MADV_HUGEPAGE, _HUGE = 14, 1 << 21
# Large allocations come from a fresh mmap unless the heap keeps them (tune_allocator or
# its environment form): only then is advising huge pages worth a system call (measured:
# huge-page faults on a growing brk heap were slower than plain ones, 160 vs 73 ms).
_fresh_mappings = sys.platform.startswith("linux") and os.environ.get("MALLOC_MMAP_MAX_") != "0"
_madvise = ctypes.CDLL(None).madvise if _fresh_mappings else None


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
    global _fresh_mappings
    ok = mallopt(_M_MMAP_MAX, 0) == 1
    _fresh_mappings = _fresh_mappings and not ok
    return ok and mallopt(_M_TRIM_THRESHOLD, min(trim_threshold, 2**31 - 1)) == 1


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """``torch.empty`` for a large CPU output; on a fresh mapping its pages are advised as
    transparent huge pages before anything touches them."""
    t = torch.empty(shape, dtype=dtype)
    nbytes = t.numel() * t.element_size()
    if _fresh_mappings and nbytes >= 2 * _HUGE:
        start = -(-t.data_ptr() // _HUGE) * _HUGE
        end = (t.data_ptr() + nbytes) // _HUGE * _HUGE
        _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)
    return t
