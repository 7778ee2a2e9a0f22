"""SpikeLinear against nn.Linear with the same weights: values and gradients on both paths,
the AUTO switch and its report, and the errors of the sparse path."""
from __future__ import annotations

import ctypes
import logging
import os

import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from torch import nn

from spikeforge.nn import SparseMode, SpikeLinear
from spikeforge.nn import sparse

MODES = [SparseMode.SPARSE, SparseMode.DENSE, SparseMode.AUTO]


def spikes(shape, density, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) < density).to(dtype)


def pair(in_features, out_features, bias=True, mode=SparseMode.SPARSE, dtype=torch.float64, seed=0):
    torch.manual_seed(seed)
    ref = nn.Linear(in_features, out_features, bias=bias, dtype=dtype)
    m = SpikeLinear(in_features, out_features, bias=bias, mode=mode, dtype=dtype)
    m.load_state_dict(ref.state_dict())
    return ref, m


def run(module, x, gy):
    """Output and gradients (input, weight, bias) of ``sum(gy * module(x))``."""
    x = x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    (gy * y).sum().backward()
    b = module.bias.grad if module.bias is not None else None
    return y.detach(), x.grad, module.weight.grad, b


def assert_same(ref, m, x, dtype):
    gy = torch.randn(*x.shape[:-1], ref.out_features, dtype=dtype)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(run(ref, x, gy), run(m, x, gy)):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, **tol)


@settings(max_examples=60, deadline=None, derandomize=True)
@given(t=st.integers(1, 4), b=st.integers(1, 3), k=st.integers(1, 40), out=st.integers(1, 80),
       density=st.floats(0.0, 1.0), bias=st.booleans(), mode=st.sampled_from(MODES),
       dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 1000))
def test_matches_linear(t, b, k, out, density, bias, mode, dtype, seed):
    ref, m = pair(k, out, bias, mode, dtype, seed)
    x = spikes((t, b, k), density, dtype, seed)
    assert_same(ref, m, x, dtype)
    if mode is SparseMode.DENSE:
        assert m.last_path == "dense"
    if mode is SparseMode.SPARSE:
        assert m.last_path == "sparse"
        assert m.last_density == pytest.approx(x.mean().item())


@pytest.mark.filterwarnings("ignore:Initializing zero-element tensors")
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("shape", [(1100, 70), (3, 700, 40), (5,), (0, 6), (4, 0)])
def test_matches_linear_blocks_threads_and_edges(shape, dtype):
    # 1100 rows: several row blocks of the kernel, and enough elements for several threads
    k = shape[-1]
    ref, m = pair(k, 75, dtype=dtype)
    x = spikes(shape, 0.07, dtype)
    assert_same(ref, m, x, dtype)
    assert m.last_path == "sparse"


def bits(t):
    """The tensor's bit patterns (-0.0 and NaN payloads compare exactly)."""
    return t.view(torch.int64 if t.dtype == torch.float64 else torch.int32)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("k", [24, 37])
@pytest.mark.parametrize("out", [1, 20, 32, 64, 130, 256])
def test_packed_weight_layout_and_round_trip(out, k, dtype):
    # the kernels read W^T in column tiles of kernels.sparse.tile(dtype) outputs, each tile (in, tile) contiguous,
    # then the narrower last tile (in, rest) with its rows zero-padded to whole 32-byte vectors
    from spikeforge.kernels import sparse as K
    w = torch.randn(out, k, dtype=dtype)
    w[0, 0] = -0.0
    p, tw, vl = K.packed(w), K.tile(dtype), 32 // w.element_size()
    assert tw * w.element_size() == 256
    full = out // tw * tw
    pad = -(-(out - full) // vl) * vl
    assert p.shape == ((full + pad) * k,)
    for j0 in range(0, full, tw):
        assert torch.equal(bits(p[j0 * k:(j0 + tw) * k].view(k, tw)), bits(w[j0:j0 + tw].t()))
    last = p[full * k:].view(k, pad)
    assert torch.equal(bits(last[:, :out - full]), bits(w[full:].t())) and not last[:, out - full:].any()
    assert torch.equal(bits(K.unpacked(p, out, k)), bits(w))


@pytest.mark.parametrize("width", [0, 8, 16])
def test_transpose_at_every_register_block_width(width):
    # the machine picks one (16 with AVX-512, 8 with AVX, 0 without __builtin_shufflevector: 8 x 8
    # element blocks, as double); each is generic C, so all three are built and checked here
    import ctypes
    from spikeforge.kernels import sparse as K
    from spikeforge.kernels.cpu import build
    lib = build(K._HEADER + K._SOURCE.replace("scalar_t", "float").replace("_SUF", "_f32"), [f"-DSF_TB={width}"])
    for r, c in [(1, 1), (16, 16), (37, 70), (700, 256)]:
        w = torch.randn(r, c)
        w[0, 0] = -0.0
        out = torch.empty(c, r)
        lib.sf_spl_transpose_f32(ctypes.c_int64(r), ctypes.c_int64(c), ctypes.c_int(1), ctypes.c_void_p(w.data_ptr()),
                                 ctypes.c_void_p(out.data_ptr()))
        assert torch.equal(bits(out), bits(w.t().contiguous()))


@settings(max_examples=60, deadline=None, derandomize=True)
@given(r=st.integers(0, 70), c=st.integers(0, 70), dtype=st.sampled_from([torch.float64, torch.float32]),
       strided=st.booleans(), seed=st.integers(0, 1000))
def test_transpose_is_bit_exact(r, c, dtype, strided, seed):
    # 16 x 16 register blocks (float), 8 x 8 blocks and the edges: every bit kept (-0.0, NaN, inf)
    from spikeforge.kernels import sparse as K
    g = torch.Generator().manual_seed(seed)
    base = torch.randn((c, r) if strided else (r, c), generator=g, dtype=dtype)
    specials = torch.tensor([-0.0, float("nan"), float("inf"), -float("inf")], dtype=dtype)
    n = min(4, base.numel())
    base.view(-1)[torch.randperm(base.numel(), generator=g)[:n]] = specials[:n]
    w = base.t() if strided else base   # a transposed view: transpose() makes it contiguous first
    out = K.transpose(w)
    assert out.shape == (c, r) and out.is_contiguous()
    assert torch.equal(bits(out), bits(w.t().contiguous()))


@settings(max_examples=40, deadline=None, derandomize=True)
@given(n=st.integers(0, 5), k=st.integers(0, 200), density=st.floats(0.0, 1.0), seed=st.integers(0, 1000),
       dtype=st.sampled_from([torch.float64, torch.float32]))
@example(n=3, k=200, density=0.3, seed=35, dtype=torch.float32)
@example(n=3, k=200, density=0.3, seed=35, dtype=torch.float64)
def test_count_pass_bit_masks_and_the_forward_from_them(n, k, density, seed, dtype):
    # bit i % 64 of word i // 64 of row r is x[r, i] != 0; forward from the masks equals forward from x
    _check_count_and_forward(n, k, density, seed, dtype)


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "amd64", "AMD64"), reason="-mno-avx is an x86 flag")
def test_count_and_forward_built_without_avx(monkeypatch):
    # the bit masks' AVX sign-bit path and their plain loop (every machine without AVX) are both built
    # and checked on an AVX machine: here the kernels are compiled with -mno-avx
    from spikeforge.kernels import cpu
    from spikeforge.kernels import sparse as K
    monkeypatch.setattr(cpu, "WIDE", [*cpu.WIDE, "-mno-avx"])
    lib = K.load(K._HEADER, K._SOURCE, {"sf_spl_count": ctypes.c_int64, "sf_spl_forward": None,
                                        "sf_spl_grad_weight": None, "sf_spl_transpose": None, "sf_spl_pack": None})
    assert not isinstance(lib, str), lib
    monkeypatch.setattr(K, "build", lambda: lib)
    for dtype in (torch.float32, torch.float64):
        for n, k, density, seed in [(3, 200, 0.3, 35), (4, 128, 0.5, 10), (2, 64, 0.9, 14), (5, 77, 0.2, 3)]:
            _check_count_and_forward(n, k, density, seed, dtype)


def _check_count_and_forward(n, k, density, seed, dtype):
    from spikeforge.kernels import sparse as K
    x = spikes((n, k), density, dtype, seed)
    if n and k and seed % 7 == 0:
        x[0, 0] = float("nan")   # not 0 or 1: counted as nonzero and as bad
    if n and k and seed % 5 == 0:   # -0.0 is a zero; 2, inf and NaN are nonzero and bad (full words and tails)
        flat = x.view(-1)
        pos = torch.randperm(flat.numel(), generator=torch.Generator().manual_seed(seed))[:4]
        flat[pos] = torch.tensor([-0.0, 2.0, float("inf"), float("nan")], dtype=dtype)[:pos.numel()]
    off, bad = K.count_active(x)
    off2, bad2, mask = K.count_active(x, mask=True)
    assert torch.equal(off, off2) and bad == bad2 and mask.shape == (n, -(-k // 64))
    nz = x != 0
    assert torch.equal(off[1:], nz.sum(1).cumsum(0)) and bad == int((nz & (x != 1)).sum())
    bits = torch.zeros(n, mask.shape[1] * 64, dtype=torch.bool)
    for r in range(n):
        for q in range(mask.shape[1]):
            w = int(mask[r, q]) & (2 ** 64 - 1)
            bits[r, q * 64:(q + 1) * 64] = torch.tensor([(w >> i) & 1 == 1 for i in range(64)])
    assert torch.equal(bits[:, :k], x != 0) and not bits[:, k:].any()
    if bad == 0 and k:
        w = torch.randn(70, k, dtype=dtype)
        y1, i1 = K.forward(x, off, w, None)
        y2, i2 = K.forward(x, off, w, None, mask)
        assert torch.equal(i1, i2) and torch.equal(y1, y2)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_power_of_two_layer_with_several_tiles(dtype):
    # in and out powers of two (the rows of W^T a power of two apart), several column tiles and a
    # narrower last one
    for out in (256, 200):
        ref, m = pair(128, out, dtype=dtype)
        assert_same(ref, m, spikes((3, 40, 128), 0.1, dtype), dtype)


def test_weight_gradient_accumulates_and_frozen_weight():
    ref, m = pair(30, 20)
    x = spikes((6, 30), 0.2)
    gy = torch.randn(6, 20, dtype=torch.float64)
    for mod in (ref, m):
        mod.zero_grad()
        for _ in range(2):
            (gy * mod(x)).sum().backward()
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)
    m.weight.requires_grad_(False)
    m.bias.requires_grad_(False)
    xg = x.clone().requires_grad_()
    (gy * m(xg)).sum().backward()
    torch.testing.assert_close(xg.grad, gy @ ref.weight.detach())


def test_gradcheck_weight_and_bias():
    x = spikes((5, 7), 0.3)
    w = torch.randn(9, 7, dtype=torch.float64, requires_grad=True)
    b = torch.randn(9, dtype=torch.float64, requires_grad=True)
    f = lambda w, b: sparse.spike_linear(x, w, b, SparseMode.SPARSE)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (w, b))


def test_drop_in_for_linear():
    ref, m = pair(12, 5)
    assert isinstance(m, nn.Linear)
    assert set(m.state_dict()) == set(ref.state_dict())
    assert "mode=SPARSE" in repr(m)
    assert SpikeLinear(3, 2).mode is SparseMode.AUTO


@pytest.mark.parametrize("grad", [True, False])
def test_auto_switches_at_the_crossover(monkeypatch, grad):
    name = "CROSSOVER_TRAIN" if grad else "CROSSOVER_FORWARD"
    other = "CROSSOVER_FORWARD" if grad else "CROSSOVER_TRAIN"
    monkeypatch.setattr(sparse, name, 0.3)
    monkeypatch.setattr(sparse, other, 0.0 if grad else 1.0)  # must not be the one consulted
    monkeypatch.setattr(sparse, "MIN_WORK", 0)
    monkeypatch.setattr(sparse, "NARROW_OUT", 0)   # the narrow-layer scaling: its own test
    ref, m = pair(10, 8, mode=SparseMode.AUTO)
    for dens, path in ((0.2, "sparse"), (0.4, "dense")):
        x = torch.zeros(4, 5, 10, dtype=torch.float64)
        x.view(-1)[: int(dens * x.numel())] = 1.0
        with torch.set_grad_enabled(grad):
            y = m(x)
        assert m.last_path == path
        assert m.last_density == pytest.approx(dens)
        torch.testing.assert_close(y.detach(), ref(x).detach())


def test_auto_measured_crossover_is_used():
    _, m = pair(256, 256, mode=SparseMode.AUTO, dtype=torch.float32)
    assert 256 ** 3 >= sparse.MIN_WORK
    m(spikes((256, 256), 0.5 * min(sparse.CROSSOVER_TRAIN, sparse.CROSSOVER_FORWARD), torch.float32))
    assert m.last_path == "sparse"
    m(spikes((256, 256), min(1.0, 2 * max(sparse.CROSSOVER_TRAIN, sparse.CROSSOVER_FORWARD)), torch.float32))
    assert m.last_path == "dense"


def test_crossover_is_lower_for_narrow_layers():
    for train, base in ((True, sparse.CROSSOVER_TRAIN), (False, sparse.CROSSOVER_FORWARD)):
        assert sparse.crossover(train, sparse.NARROW_OUT) == 0.0 == sparse.crossover(train, 1)
        assert sparse.crossover(train, 2 * sparse.NARROW_OUT) == pytest.approx(base / 2)
        assert 0.9 * base < sparse.crossover(train, 4096) < base


@pytest.mark.parametrize("grad", [True, False])
def test_auto_keeps_narrow_layers_dense_without_counting(grad):
    # 20 outputs: slower sparse at every density measured; a wide layer at the same density goes sparse
    x = spikes((3, 1000, 512), 0.02, torch.float32)
    for out, path in ((20, "dense"), (256, "sparse")):
        ref, m = pair(512, out, mode=SparseMode.AUTO, dtype=torch.float32)
        assert x.shape[0] * x.shape[1] * 512 * out >= sparse.MIN_WORK
        with torch.set_grad_enabled(grad):
            y = m(x)
        assert m.last_path == path
        assert (m.last_density is None) == (path == "dense")
        torch.testing.assert_close(y.detach(), ref(x).detach(), rtol=1e-5, atol=1e-5)


def test_auto_after_a_sparse_spiking_layer_keeps_the_wide_threshold():
    # the sparse path then also computes the input gradient only where that layer reads it
    from spikeforge.neurons import LIF
    from spikeforge.nn.sparse_backward import sparse_spiking_linear
    torch.manual_seed(0)
    w1 = (torch.randn(256, 64) * 0.4).requires_grad_()
    z = sparse_spiking_linear(spikes((40, 64, 64), 0.05, torch.float32), w1, None, LIF(), {"tau": 2.0})
    assert 0 < z.mean() < sparse.CROSSOVER_TRAIN
    ref, m = pair(256, 20, mode=SparseMode.AUTO, dtype=torch.float32)
    assert z.numel() * 20 >= sparse.MIN_WORK and sparse.crossover(True, 20) == 0
    m(z)
    assert m.last_path == "sparse"
    m(z.detach())   # no active set: the narrow rule applies
    assert m.last_path == "dense"


def test_auto_stays_dense_for_tiny_products():
    _, m = pair(10, 8, mode=SparseMode.AUTO)
    m(spikes((4, 10), 0.01))
    assert (m.last_path, m.last_density) == ("dense", None)


def test_auto_takes_dense_for_non_binary_input(monkeypatch):
    monkeypatch.setattr(sparse, "MIN_WORK", 0)
    ref, m = pair(10, 8, mode=SparseMode.AUTO)
    x = spikes((40, 10), 0.02) * 0.5
    assert x.count_nonzero() > 0
    torch.testing.assert_close(m(x), ref(x))
    assert m.last_path == "dense"


def test_dense_mode_reports_dense():
    _, m = pair(10, 8, mode=SparseMode.DENSE)
    m(spikes((4, 10), 0.01))
    assert (m.last_path, m.last_density) == ("dense", None)


@pytest.mark.parametrize("bad", [0.5, 2.0, -1.0, float("nan"), float("inf")])
def test_sparse_rejects_non_binary_input(bad):
    _, m = pair(10, 8)
    x = spikes((3, 4, 10), 0.1)
    x[1, 2, 3] = bad
    with pytest.raises(ValueError, match="binary input"):
        m(x)


def test_sparse_rejects_what_it_cannot_run(monkeypatch, caplog):
    _, m = pair(10, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match="float32 or float64"):
        m.half()(spikes((2, 10), 0.1, torch.float16))
    with pytest.raises(ValueError, match=r"shape \(\.\.\., 10\)"):
        SpikeLinear(10, 8, mode=SparseMode.SPARSE)(torch.zeros(2, 11))
    with pytest.raises(TypeError, match="SparseMode"):
        SpikeLinear(10, 8, mode="sparse")
    monkeypatch.setattr(sparse, "_build", lambda: "its kernel cannot be built: no compiler (test)")
    monkeypatch.setattr(sparse, "_ERRORS", set())
    x = spikes((2, 10), 0.1, torch.float32)
    _, m = pair(10, 8, dtype=torch.float32)
    with pytest.raises(ValueError, match="no compiler"):
        m(x)
    m.mode = SparseMode.AUTO
    monkeypatch.setattr(sparse, "MIN_WORK", 0)
    monkeypatch.setattr(sparse, "NARROW_OUT", 0)
    with caplog.at_level(logging.WARNING, logger="spikeforge"):
        m(x)
    assert m.last_path == "dense" and "no compiler" in caplog.text


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_auto_is_dense_on_gpu():
    _, m = pair(10, 8, mode=SparseMode.AUTO, dtype=torch.float32)
    m.cuda()(spikes((2, 10), 0.01, torch.float32).cuda())
    assert m.last_path == "dense"
