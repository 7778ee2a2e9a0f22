"""Large CPU buffers: a small reuse pool (on by default), huge-page advice, and the opt-in
glibc tuning.

glibc serves every allocation above ~32 MB with a fresh ``mmap``, so each new
sequence-sized tensor page-faults on first touch (measured here: ~45 ms for 65 MB,
against ~3 ms when the heap keeps its pages; see shared/PERFORMANCE.md). PyTorch has no
caching allocator on CPU. So the fused kernels take their large outputs and workspaces
(``z``, the recorded trace, the checkpoints, ``gx``) from ``empty``, which reuses a buffer
of the same byte size that nothing references any more:

* a pooled buffer is handed out again only when its storage's reference count says that
  the pool's own reference is the last one (no tensor, view, autograd saved tensor or numpy
  array uses it); each hand-out is a new tensor on that storage, not a view of anything;
* the pool is bounded (``PoolConfig``: buffers per byte size, total bytes held, and an age
  after which an idle buffer is dropped) and thread-safe; ``release_buffers()`` drops the
  idle ones now. Disable it with ``SPIKEFORGE_BUFFER_POOL=0`` in the environment or
  ``set_buffer_pool(PoolConfig(enabled=False))``.

``tune_allocator()`` makes glibc keep freed memory in the heap, which is what
``MALLOC_MMAP_MAX_=0 MALLOC_TRIM_THRESHOLD_=<large>`` does from the environment: it also
speeds up the large tensors that are not the kernels' (autograd's, the user's). It changes
the whole process, so spikeforge never applies it by itself.

Fresh large mappings (the pool's first buffers, or everything with the pool off) are
advised as transparent huge pages, so that their first touch takes 2 MB faults instead of
4 KB ones (measured here: 14 ms instead of 73 ms to touch a fresh 131 MB mapping).
"""
from __future__ import annotations

import ctypes
import ctypes.util
import math
import os
import sys
import threading
from dataclasses import dataclass

import torch

__all__ = ["tune_allocator", "PoolConfig", "PoolStats", "set_buffer_pool", "buffer_pool", "pool_stats",
           "release_buffers"]

_M_TRIM_THRESHOLD, _M_MMAP_MAX = -1, -4
_MADV_HUGEPAGE, _HUGE = 14, 1 << 21
# Large allocations come from a fresh mmap unless the heap keeps them (tune_allocator or
# its environment form): only then is advising huge pages worth a system call (measured:
# huge-page faults on a growing brk heap were slower than plain ones, 160 vs 73 ms).
_fresh_mappings = sys.platform.startswith("linux") and os.environ.get("MALLOC_MMAP_MAX_") != "0"
_madvise = ctypes.CDLL(None).madvise if _fresh_mappings else None
# The storage reference count: torch has no public accessor (inductor's cudagraph trees use
# this one). Without it the pool cannot prove a buffer free, so it stays off.
_use_count = getattr(torch._C, "_storage_Use_Count", None)


def tune_allocator(trim_threshold: int = 1 << 40) -> bool:
    """Keep large allocations in the glibc heap: no mmap for them (``M_MMAP_MAX`` 0) and memory
    returned to the system only above ``trim_threshold`` free bytes at the heap's top
    (``M_TRIM_THRESHOLD``, a C int in glibc: at most 2**31 - 1, which larger values, such as the
    default, mean). Returns False where glibc is absent."""
    if isinstance(trim_threshold, bool) or not isinstance(trim_threshold, int) or trim_threshold < 0:
        raise ValueError(f"trim_threshold must be a non-negative int (bytes), got {trim_threshold!r}")
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


# -- the pool ----------------------------------------------------------------------------------

@dataclass(frozen=True)
class PoolConfig:
    """How the kernels' large buffers are reused.

    ``enabled``: reuse at all. ``min_bytes``: smaller requests are plain ``torch.empty``.
    ``per_size``: buffers kept per byte size. ``max_bytes``: bytes the pool holds in all
    (in use or idle); past it a request gets an unpooled buffer. ``max_age``: an idle
    buffer not reused during this many pooled requests is dropped (a changed batch size
    does not keep the old size's buffers alive)."""

    enabled: bool = True
    min_bytes: int = 1 << 20
    per_size: int = 4
    max_bytes: int = 2 << 30
    max_age: int = 64

    def __post_init__(self):
        if not isinstance(self.enabled, bool):
            raise ValueError(f"PoolConfig.enabled must be True or False, got {self.enabled!r}")
        for name in ("min_bytes", "per_size", "max_bytes", "max_age"):
            v = getattr(self, name)
            if not isinstance(v, int) or isinstance(v, bool) or v < 0:
                raise ValueError(f"PoolConfig.{name} must be an int >= 0, got {v!r}")


@dataclass(frozen=True)
class PoolStats:
    """``held_bytes``/``buffers``: what the pool keeps (in use or idle); ``idle_bytes``: the
    part nothing else references; ``hits``/``misses``: pooled requests served by reuse or by
    a new buffer; ``unpooled``: requests at or above ``min_bytes`` the caps turned away."""

    held_bytes: int
    idle_bytes: int
    buffers: int
    hits: int
    misses: int
    unpooled: int


class _Slot:
    __slots__ = ("storage", "cdata", "ptr", "nbytes", "last")

    def __init__(self, storage, nbytes: int, now: int):
        self.storage, self.cdata, self.ptr = storage, storage._cdata, storage.data_ptr()
        self.nbytes, self.last = nbytes, now

    def counts(self) -> tuple[int, int]:
        """(references to the storage from C++: tensors, views, saved tensors, numpy arrays;
        references to its Python object, which torch keeps alive with the storage and hands
        out again from ``untyped_storage()``)."""
        return _use_count(self.cdata), sys.getrefcount(self.storage)

    def idle(self) -> bool:
        return self.counts() == _IDLE

    def intact(self) -> bool:
        """Still the memory handed out (``resize_`` or ``share_memory_`` replace it)."""
        s = self.storage
        return s.data_ptr() == self.ptr and s.nbytes() == self.nbytes and not s.is_shared()


class _Pool:
    def __init__(self, config: PoolConfig):
        self.config, self.lock = config, threading.Lock()
        self.reset()

    def reset(self) -> None:
        self.slots: dict[int, list[_Slot]] = {}
        self.held = self.clock = self.hits = self.misses = self.unpooled = 0

    def take(self, nbytes: int):
        """An idle storage of ``nbytes`` bytes, a new pooled one, or ``None`` (caps reached)."""
        with self.lock:
            self.clock += 1
            self._age()
            for slot in self.slots.get(nbytes, ()):
                if slot.idle():
                    if slot.intact():
                        slot.last = self.clock
                        self.hits += 1
                        return slot.storage
                    self._drop(slot)
                    break
            if len(self.slots.get(nbytes, ())) >= self.config.per_size or not self._room(nbytes):
                self.unpooled += 1
                return None
            storage = _fresh(nbytes)
            self.slots.setdefault(nbytes, []).append(_Slot(storage, nbytes, self.clock))
            self.held += nbytes
            self.misses += 1
            return storage

    def _room(self, nbytes: int) -> bool:
        """Whether ``nbytes`` more fit under ``max_bytes``, dropping idle buffers (oldest first)."""
        if self.held + nbytes <= self.config.max_bytes:
            return True
        for slot in sorted((s for ss in self.slots.values() for s in ss if s.idle()), key=lambda s: s.last):
            self._drop(slot)
            if self.held + nbytes <= self.config.max_bytes:
                return True
        return False

    def _age(self) -> None:
        old = self.clock - self.config.max_age
        for slot in [s for ss in self.slots.values() for s in ss if s.last < old and s.idle()]:
            self._drop(slot)

    def _drop(self, slot: _Slot) -> None:
        self.slots[slot.nbytes].remove(slot)
        if not self.slots[slot.nbytes]:
            del self.slots[slot.nbytes]
        self.held -= slot.nbytes

    def release(self) -> int:
        with self.lock:
            idle = [s for ss in self.slots.values() for s in ss if s.idle()]
            for slot in idle:
                self._drop(slot)
            return sum(s.nbytes for s in idle)

    def stats(self) -> PoolStats:
        with self.lock:
            slots = [s for ss in self.slots.values() for s in ss]
            return PoolStats(self.held, sum(s.nbytes for s in slots if s.idle()), len(slots), self.hits,
                             self.misses, self.unpooled)


def _env_config() -> PoolConfig:
    flag = os.environ.get("SPIKEFORGE_BUFFER_POOL", "1").strip().lower()
    if flag not in ("0", "1", "", "on", "off", "true", "false", "yes", "no"):
        raise ValueError(f"SPIKEFORGE_BUFFER_POOL must be 0 or 1 (or on/off), got {flag!r}")
    return PoolConfig(enabled=flag not in ("0", "off", "false", "no") and _use_count is not None)


# What a slot's counts are when the pool alone holds its buffer (measured: torch's storage
# Python object may itself hold one reference).
_IDLE = _Slot(torch.empty(8, dtype=torch.uint8).untyped_storage(), 8, 0).counts() if _use_count else None
_POOL = _Pool(_env_config())
if hasattr(os, "register_at_fork"):  # a forked child (DataLoader worker) starts with an empty pool
    os.register_at_fork(after_in_child=lambda: _POOL.__init__(_POOL.config))


def set_buffer_pool(config: PoolConfig) -> PoolConfig:
    """Use ``config`` from now on; returns the previous one. Disabling (or shrinking) drops
    the idle buffers now; buffers in use stay with their tensors."""
    if not isinstance(config, PoolConfig):
        raise TypeError(f"config must be a PoolConfig, got {type(config).__name__}")
    if config.enabled and _use_count is None:
        raise RuntimeError("this torch build has no torch._C._storage_Use_Count: the buffer pool cannot tell "
                           "a free buffer from a used one, so it stays off")
    with _POOL.lock:
        old, _POOL.config = _POOL.config, config
    _POOL.release()
    return old


def buffer_pool() -> PoolConfig:
    """The pool's current configuration."""
    return _POOL.config


def pool_stats() -> PoolStats:
    return _POOL.stats()


def release_buffers() -> int:
    """Drop every idle pooled buffer now (its memory goes back to the system); returns bytes."""
    return _POOL.release()


def _fresh(nbytes: int):
    """A new untyped storage of ``nbytes`` (advised as huge pages where fresh)."""
    t = torch.empty(nbytes, dtype=torch.uint8)
    _advise(t.data_ptr(), nbytes)
    return t.untyped_storage()


def _advise(ptr: int, nbytes: int) -> None:
    """Advise the whole huge pages inside a fresh mapping as transparent huge pages."""
    if _fresh_mappings and nbytes >= 2 * _HUGE:
        start = -(-ptr // _HUGE) * _HUGE
        end = (ptr + nbytes) // _HUGE * _HUGE
        _madvise(ctypes.c_void_p(start), ctypes.c_size_t(end - start), _MADV_HUGEPAGE)


def empty(shape, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor for a kernel's large output or workspace:
    a reused pooled buffer when one is free (see the module docstring), else a new one
    (a fresh mapping advised as huge pages)."""
    nbytes = math.prod(shape) * dtype.itemsize
    config = _POOL.config
    if config.enabled and nbytes >= max(config.min_bytes, 1):
        storage = _POOL.take(nbytes)
        if storage is not None:
            return torch.empty(0, dtype=dtype).set_(storage, 0, tuple(shape))
    t = torch.empty(shape, dtype=dtype)
    _advise(t.data_ptr(), nbytes)
    return t
