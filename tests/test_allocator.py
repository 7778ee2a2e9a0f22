"""allocator: the kernels' buffer pool (reuse only what nothing references; bounded;
thread-safe; can be turned off), huge-page advice for fresh large outputs, and the opt-in
glibc tuning."""
from __future__ import annotations

import os
import subprocess
import sys
import threading

import pytest
import torch

import spikeforge as sf
from spikeforge import allocator
from spikeforge.allocator import PoolConfig

CPU = sf.backends()["cpu"] is None
needs_cpu = pytest.mark.skipif(not CPU, reason="the cpu backend is unavailable")


@pytest.fixture
def pool():
    """Every kernel buffer pooled (min_bytes=1, so small test tensors exercise it), from empty."""
    old = allocator.set_buffer_pool(PoolConfig(min_bytes=1))
    yield
    allocator.set_buffer_pool(old)


def _record(monkeypatch, fresh=True):
    calls = []
    monkeypatch.setattr(allocator, "_fresh_mappings", fresh)
    monkeypatch.setattr(allocator, "_madvise", lambda start, length, advice: calls.append(
        (start.value, length.value, advice)))
    return calls


@pytest.mark.parametrize("enabled", [False, True])
def test_empty_advises_the_aligned_interior_of_a_large_output(monkeypatch, enabled):
    old = allocator.set_buffer_pool(PoolConfig(enabled=enabled))
    calls = _record(monkeypatch)
    t = allocator.empty((3, 1 << 20), torch.float32)  # 12 MB
    assert t.shape == (3, 1 << 20) and t.dtype == torch.float32
    (start, length, advice), = calls
    huge = 1 << 21
    assert advice == 14 and start % huge == 0 and length % huge == 0 and length > 0
    assert t.data_ptr() <= start and start + length <= t.data_ptr() + t.numel() * 4
    del t
    allocator.empty((3, 1 << 20), torch.float32)   # reused (pool) or fresh and advised again
    assert len(calls) == 1 + (not enabled)
    allocator.set_buffer_pool(old)


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


# -- the pool --------------------------------------------------------------------------------

def test_a_buffer_comes_back_only_when_nothing_references_it(pool):
    s0 = allocator.pool_stats()
    a = allocator.empty((4, 5), torch.float32)
    b = allocator.empty((4, 5), torch.float32)
    assert a.data_ptr() != b.data_ptr()
    ptr = a.data_ptr()
    del a
    c = allocator.empty((20,), torch.int32)   # same byte size, any shape and dtype
    assert c.data_ptr() == ptr and c.shape == (20,) and c.dtype == torch.int32 and c.is_contiguous()
    assert c._base is None                    # a tensor of its own, not a view
    s = allocator.pool_stats()
    assert (s.hits - s0.hits, s.misses - s0.misses, s.buffers, s.held_bytes, s.idle_bytes) == (1, 2, 2, 160, 0)


@pytest.mark.parametrize("keep", ["view", "numpy", "storage", "saved"])
def test_anything_sharing_the_storage_keeps_it_out_of_the_pool(pool, keep):
    a = allocator.empty((4, 5), torch.float32).fill_(7.0)
    ref = {"view": lambda: a[1:, 2:], "numpy": a.numpy, "storage": a.untyped_storage,
           "saved": lambda: torch.ones(4, 5, requires_grad=True).mul(a).grad_fn}[keep]()
    ptr = a.data_ptr()
    del a
    b = allocator.empty((4, 5), torch.float32)
    assert b.data_ptr() != ptr
    del ref
    assert allocator.empty((4, 5), torch.float32).data_ptr() == ptr


def test_a_resized_or_shared_buffer_is_dropped_not_reused(pool):
    a = allocator.empty((1000,), torch.float32)
    a.resize_(5000)                      # its storage now holds other memory
    ptr = a.data_ptr()
    del a
    b = allocator.empty((1000,), torch.float32)
    assert b.data_ptr() != ptr and allocator.pool_stats().buffers == 1
    b.share_memory_()
    del b
    assert allocator.empty((1000,), torch.float32).untyped_storage().is_shared() is False


def test_the_pool_is_bounded(pool):
    allocator.set_buffer_pool(PoolConfig(min_bytes=1, per_size=2, max_bytes=1000, max_age=3))
    live = [allocator.empty((100,), torch.float32) for _ in range(3)]   # 400 B each
    s = allocator.pool_stats()
    assert (s.buffers, s.held_bytes) == (2, 800)                         # per_size
    big = allocator.empty((60,), torch.float32)                          # 240 B: over max_bytes
    assert allocator.pool_stats().unpooled == s.unpooled + 1
    del live[:2]
    mid = allocator.empty((60,), torch.float32)   # room made by dropping an idle buffer, oldest first
    s = allocator.pool_stats()
    assert (s.held_bytes, s.buffers) == (400 + 240, 2)
    for _ in range(4):                            # max_age: the other idle 400 B buffer ages out
        allocator.empty((1,), torch.float64)
    assert allocator.pool_stats().held_bytes == 240 + 8
    assert allocator.release_buffers() == 8 and allocator.pool_stats().held_bytes == 240
    del mid, big


def test_the_pool_can_be_turned_off(pool):
    allocator.set_buffer_pool(PoolConfig(enabled=False))
    a = allocator.empty((4, 5), torch.float32)
    assert allocator.pool_stats().buffers == 0 and a.shape == (4, 5)
    with pytest.raises(TypeError, match="PoolConfig"):
        allocator.set_buffer_pool(False)
    with pytest.raises(ValueError, match="per_size"):
        PoolConfig(per_size=-1)
    with pytest.raises(ValueError, match="enabled"):
        PoolConfig(enabled="no")
    env = {**os.environ, "SPIKEFORGE_BUFFER_POOL": "0"}
    code = "import spikeforge.allocator as a; print(a.buffer_pool().enabled)"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
    env["SPIKEFORGE_BUFFER_POOL"] = "maybe"
    bad = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert bad.returncode != 0 and "SPIKEFORGE_BUFFER_POOL must be 0 or 1" in bad.stderr


def _pass(mod, x, g):
    x = x.detach().requires_grad_()
    z = mod(x)
    z.backward(g)
    return z, x.grad


@needs_cpu
def test_kernel_outputs_kept_by_the_user_are_not_overwritten(pool):
    mod = sf.nn.LIF(backend="cpu")
    gen = torch.Generator().manual_seed(0)
    x1, x2 = (0.8 + torch.randn(20, 3, 64, generator=gen) for _ in range(2))
    g = torch.rand(20, 3, 64, generator=gen)
    z1, gx1 = _pass(mod, x1, g)
    v1 = z1[5:]                               # a view of z1 outlives z1
    ref = (z1.clone(), gx1.clone())
    del z1
    for _ in range(3):
        z2, gx2 = _pass(mod, x2, g)
    assert torch.equal(v1, ref[0][5:]) and torch.equal(gx1, ref[1])
    assert allocator.pool_stats().hits > 0    # the passes after the first reused buffers
    allocator.set_buffer_pool(PoolConfig(enabled=False))
    z3, gx3 = _pass(mod, x2, g)
    assert torch.equal(z2, z3) and torch.equal(gx2, gx3)


@needs_cpu
def test_retained_graphs_keep_their_checkpoints(pool):
    """A graph kept for a second backward keeps its saved checkpoints out of the pool while
    other passes run (T > K, so the forward saves checkpoints)."""
    mod = sf.nn.CubaLIF(backend="cpu")
    gen = torch.Generator().manual_seed(1)
    xs = [(1.2 + torch.randn(40, 2, 32, generator=gen)).requires_grad_() for _ in range(2)]
    g = torch.rand(40, 2, 32, generator=gen)
    z0 = mod(xs[0])
    first = torch.autograd.grad(z0, xs[0], g, retain_graph=True)[0].clone()
    for _ in range(3):                        # other passes in between, their buffers pooled
        _pass(mod, xs[1], g)
    (again,) = torch.autograd.grad(z0, xs[0], g)
    assert torch.equal(first, again)


@needs_cpu
def test_threads_share_the_pool_safely(pool):
    mod = sf.nn.LIF(backend="cpu")
    gen = torch.Generator().manual_seed(2)
    xs = [0.8 + torch.randn(30, 2, 48, generator=gen) for _ in range(4)]
    g = torch.rand(30, 2, 48, generator=gen)
    expect = [tuple(t.clone() for t in _pass(mod, x, g)) for x in xs]
    got, errors = [None] * 4, []

    def work(i):
        try:
            for _ in range(5):
                z, gx = _pass(mod, xs[i], g)
                if not (torch.equal(z, expect[i][0]) and torch.equal(gx, expect[i][1])):
                    errors.append(i)
            got[i] = z
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and all(torch.equal(z, e[0]) for z, e in zip(got, expect))


@needs_cpu
def test_compiled_graphs_get_fresh_outputs_while_old_ones_live(pool):
    """Under torch.compile (aot_eager runs the real op) a kept output is not reused."""
    net = torch.nn.Sequential(torch.nn.Linear(8, 16), sf.nn.LIF(backend="cpu"))
    compiled = torch.compile(net, backend="aot_eager", fullgraph=True)
    gen = torch.Generator().manual_seed(3)
    xs = [torch.randn(12, 2, 8, generator=gen).requires_grad_() for _ in range(2)]
    kept = compiled(xs[0])
    expect = kept.detach().clone()
    kept.sum().backward()
    for _ in range(2):
        other = compiled(xs[1])
        other.sum().backward()
    assert torch.equal(kept, expect) and torch.equal(other, net(xs[1]))
    assert allocator.pool_stats().hits > 0


@pytest.mark.parametrize("bad", [-5, True, 1.5, "1"])
def test_tune_allocator_refuses_a_bad_threshold(bad):
    # refused before any mallopt call (no process-wide setting changed)
    with pytest.raises(ValueError, match="trim_threshold must be a non-negative int"):
        sf.tune_allocator(bad)
