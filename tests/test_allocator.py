"""allocator: huge-page advice for fresh large outputs, and the opt-in glibc tuning."""
from __future__ import annotations

import subprocess
import sys

import torch

from spikeforge import allocator


def _record(monkeypatch, fresh=True):
    calls = []
    monkeypatch.setattr(allocator, "_fresh_mappings", fresh)
    monkeypatch.setattr(allocator, "_madvise", lambda start, length, advice: calls.append(
        (start.value, length.value, advice)))
    return calls


def test_empty_advises_the_aligned_interior_of_a_large_output(monkeypatch):
    calls = _record(monkeypatch)
    t = allocator.empty((3, 1 << 20), torch.float32)  # 12 MB
    assert t.shape == (3, 1 << 20) and t.dtype == torch.float32
    (start, length, advice), = calls
    huge = 1 << 21
    assert advice == 14 and start % huge == 0 and length % huge == 0 and length > 0
    assert t.data_ptr() <= start and start + length <= t.data_ptr() + t.numel() * 4


def test_empty_leaves_small_outputs_and_a_tuned_heap_alone(monkeypatch):
    calls = _record(monkeypatch)
    allocator.empty((1000,), torch.float64)
    assert calls == []
    calls = _record(monkeypatch, fresh=False)
    allocator.empty((3, 1 << 20), torch.float32)
    assert calls == []


def test_tune_allocator_stops_the_huge_page_advice():
    """In a child process: it changes the whole process's allocator."""
    code = ("import spikeforge.allocator as a; fresh = a._fresh_mappings; ok = a.tune_allocator(); "
            "print(ok, fresh, a._fresh_mappings)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    if out[0] == "True":  # glibc
        assert out[2] == "False"
