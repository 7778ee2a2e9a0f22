"""SpikeConv2d against nn.Conv2d with the same weights: values and gradients (input, weight,
bias) on the sparse path across stride/padding/dilation/groups, the AUTO switch and its
report, errors, TimeDistributed and pickling."""
from __future__ import annotations

import pickle
from contextlib import contextmanager

import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn

import spikeforge as sf
from spikeforge.nn import SparseMode, SpikeConv2d
from spikeforge.nn import sparse_conv


@contextmanager
def one_thread():
    """torch on one thread for tiny shapes: waking a second OpenMP thread for each small dense
    convolution costs 20-50x the work on a busy machine (the sparse kernels run one thread
    below 2**16 elements anyway)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(n)


def spikes(shape, density, dtype=torch.float64, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(shape, generator=g, dtype=torch.float64) < density).to(dtype)


def pair(*args, mode=SparseMode.SPARSE, dtype=torch.float64, seed=0, **kw):
    torch.manual_seed(seed)
    ref = nn.Conv2d(*args, dtype=dtype, **kw)
    return ref, SpikeConv2d.from_conv(ref, mode=mode)


def run(module, x, gy):
    """Output and gradients (input, weight, bias) of ``sum(gy * module(x))``."""
    conv = getattr(module, "module", module)   # the convolution inside a TimeDistributed
    x = x.detach().requires_grad_()
    module.zero_grad()
    y = module(x)
    (gy * y).sum().backward()
    return y.detach(), x.grad, conv.weight.grad, None if conv.bias is None else conv.bias.grad


def assert_same(ref, m, x):
    with torch.no_grad():
        gy = torch.randn_like(ref(x))
    tol = dict(rtol=1e-10, atol=1e-12) if x.dtype == torch.float64 else dict(rtol=1e-5, atol=1e-5)
    for a, b in zip(run(ref, x, gy), run(m, x, gy)):
        if a is None:
            assert b is None
        else:
            torch.testing.assert_close(b, a, **tol)


@settings(max_examples=100, deadline=None, derandomize=True)
@given(n=st.integers(1, 3), cg=st.integers(1, 3), groups=st.integers(1, 3), og=st.integers(1, 4),
       h=st.integers(1, 9), w=st.integers(1, 9), k=st.tuples(st.integers(1, 3), st.integers(1, 3)),
       stride=st.tuples(st.integers(1, 3), st.integers(1, 3)), pad=st.tuples(st.integers(0, 2), st.integers(0, 2)),
       dil=st.tuples(st.integers(1, 2), st.integers(1, 2)), bias=st.booleans(), density=st.floats(0.0, 1.0),
       dtype=st.sampled_from([torch.float64, torch.float32]), seed=st.integers(0, 1000))
def test_matches_conv2d(n, cg, groups, og, h, w, k, stride, pad, dil, bias, density, dtype, seed):
    assume(h + 2 * pad[0] >= dil[0] * (k[0] - 1) + 1 and w + 2 * pad[1] >= dil[1] * (k[1] - 1) + 1)
    ref, m = pair(cg * groups, og * groups, k, stride, pad, dil, groups, bias, dtype=dtype, seed=seed)
    x = spikes((n, cg * groups, h, w), density, dtype, seed)
    with one_thread():
        assert_same(ref, m, x)
    assert m.last_path == "sparse"
    assert m.last_density == pytest.approx(x.mean().item())


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")
@pytest.mark.parametrize("kw", [dict(padding="same"), dict(padding="valid"), dict(padding=1, padding_mode="reflect"),
                                dict(padding=(2, 1), padding_mode="circular"), dict(padding="same", dilation=2)])
def test_padding_forms(kw):
    ref, m = pair(3, 5, (2, 3), **kw)   # an even kernel: 'same' pads asymmetrically
    x = spikes((2, 3, 7, 6), 0.3)
    assert_same(ref, m, x)
    assert m.last_path == "sparse"
    if "padding_mode" not in kw:        # zero padding is not counted in the density
        assert m.last_density == pytest.approx(x.mean().item())


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_several_threads_and_unbatched(dtype):
    ref, m = pair(8, 12, 3, padding=1, groups=2, dtype=dtype)
    assert_same(ref, m, spikes((7, 8, 40, 33), 0.05, dtype))   # > 2**16 elements: parallel kernels
    assert_same(ref, m, spikes((8, 11, 10), 0.2, dtype))       # (C, H, W), as nn.Conv2d takes it
    assert m.last_path == "sparse"


@pytest.mark.parametrize("formulation", list(sparse_conv._kernel.Formulation))
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_forward_formulations_wide_outputs(monkeypatch, formulation, dtype):
    # 64 outputs per group: whole register tiles (64 float32 / 32 float64 values, the vector
    # loops); 70: one full tile and a rest (the scalar loops)
    monkeypatch.setattr(sparse_conv._kernel, "FORMULATION", formulation)
    for groups, og in ((1, 64), (2, 64), (1, 70), (2, 70)):
        ref, m = pair(2 * groups, og * groups, 3, stride=(1, 2), padding=1, groups=groups, dtype=dtype)
        assert_same(ref, m, spikes((3, 2 * groups, 7, 8), 0.2, dtype))
        assert m.last_path == "sparse"


def test_empty_batch_and_no_spikes():
    ref, m = pair(2, 3, 3, padding=1)
    assert_same(ref, m, torch.zeros(2, 2, 5, 5, dtype=torch.float64))
    assert m.last_density == 0.0
    x = torch.zeros(0, 2, 5, 5, dtype=torch.float64)
    assert m(x).shape == ref(x).shape == (0, 3, 5, 5)
    m.mode = SparseMode.SPARSE   # and backward from an empty batch: zero gradients of the right shapes
    m.zero_grad()
    xg = x.clone().requires_grad_()
    m(xg).sum().backward()
    assert torch.equal(m.weight.grad, torch.zeros_like(m.weight)) and xg.grad.shape == x.shape


def test_gradcheck_weight_and_bias():
    x = spikes((2, 4, 5, 6), 0.3)
    w = torch.randn(6, 2, 3, 2, dtype=torch.float64, requires_grad=True)
    b = torch.randn(6, dtype=torch.float64, requires_grad=True)
    f = lambda w, b: sparse_conv.spike_conv2d(x, w, b, 2, 1, 1, 2, SparseMode.SPARSE)[0]  # noqa: E731
    assert torch.autograd.gradcheck(f, (w, b))


def test_weight_gradient_accumulates_and_frozen_weight():
    ref, m = pair(3, 4, 3, padding=1)
    x = spikes((2, 3, 6, 6), 0.2)
    gy = torch.randn(2, 4, 6, 6, dtype=torch.float64)
    for mod in (ref, m):
        mod.zero_grad()
        for _ in range(2):
            (gy * mod(x)).sum().backward()
    torch.testing.assert_close(m.weight.grad, ref.weight.grad)
    m.weight.requires_grad_(False)
    m.bias.requires_grad_(False)
    xg, xr = x.clone().requires_grad_(), x.clone().requires_grad_()
    (gy * m(xg)).sum().backward()
    (gy * ref(xr)).sum().backward()
    torch.testing.assert_close(xg.grad, xr.grad)


def test_drop_in_for_conv2d_and_pickles():
    ref, m = pair(4, 6, 3, stride=2, padding=1, groups=2, bias=False)
    assert isinstance(m, nn.Conv2d)
    assert set(m.state_dict()) == set(ref.state_dict())
    assert (m.stride, m.padding, m.groups, m.bias) == ((2, 2), (1, 1), 2, None)
    assert "mode=SPARSE" in repr(m)
    assert SpikeConv2d(3, 2, 3).mode is SparseMode.AUTO
    m2 = pickle.loads(pickle.dumps(m))
    x = spikes((2, 4, 9, 9), 0.2)
    torch.testing.assert_close(m2(x), ref(x))
    assert m2.mode is SparseMode.SPARSE and m2.last_path == "sparse"


def test_inside_time_distributed():
    ref, m = pair(3, 5, 3, padding=1)
    x = spikes((4, 2, 3, 8, 8), 0.1)   # (T, B, C, H, W)
    assert_same(sf.nn.TimeDistributed(ref), sf.nn.TimeDistributed(m), x)
    assert m.last_path == "sparse"


@pytest.mark.parametrize("grad", [True, False])
def test_auto_switches_at_the_crossover(monkeypatch, grad):
    name = "CROSSOVER_TRAIN" if grad else "CROSSOVER_FORWARD"
    other = "CROSSOVER_FORWARD" if grad else "CROSSOVER_TRAIN"
    monkeypatch.setattr(sparse_conv, name, 0.3)
    monkeypatch.setattr(sparse_conv, other, 0.0 if grad else 1.0)  # must not be the one consulted
    monkeypatch.setattr(sparse_conv, "MIN_WORK", 0)
    monkeypatch.setattr(sparse_conv, "NARROW_OUT", 0)   # few outputs: their own test
    monkeypatch.setattr(sparse_conv, "MIN_WORK_FORWARD", 0)
    ref, m = pair(2, 3, 3, padding=1, mode=SparseMode.AUTO)
    for dens, path in ((0.2, "sparse"), (0.4, "dense")):
        x = torch.zeros(4, 2, 5, 5, dtype=torch.float64)
        x.view(-1)[: int(dens * x.numel())] = 1.0
        with torch.set_grad_enabled(grad):
            y = m(x)
        assert m.last_path == path
        assert m.last_density == pytest.approx(dens)
        torch.testing.assert_close(y.detach(), ref(x).detach())


def test_auto_measured_crossover_is_used():
    _, m = pair(16, 32, 3, padding=1, mode=SparseMode.AUTO, dtype=torch.float32)
    assert sparse_conv.MIN_WORK <= 8 * 32 * 16 * 9 * 24 * 24 < sparse_conv.MIN_WORK_FORWARD
    low = 0.5 * sparse_conv.crossover(True, 32)
    assert low > 0.01
    m(spikes((8, 16, 24, 24), low, torch.float32))
    assert m.last_path == "sparse"
    high = min(1.0, 2 * max(sparse_conv.CROSSOVER_TRAIN, sparse_conv.CROSSOVER_FORWARD))
    m(spikes((8, 16, 24, 24), high, torch.float32))
    assert m.last_path == "dense"
    with torch.no_grad():   # forward only: this layer is below MIN_WORK_FORWARD, not counted
        m(spikes((8, 16, 24, 24), low, torch.float32))
    assert (m.last_path, m.last_density) == ("dense", None)


def test_crossover_is_lower_for_few_outputs_per_group():
    for train, base in ((True, sparse_conv.CROSSOVER_TRAIN), (False, sparse_conv.CROSSOVER_FORWARD)):
        assert sparse_conv.crossover(train, sparse_conv.NARROW_OUT) == 0.0
        assert sparse_conv.crossover(train, 2 * sparse_conv.NARROW_OUT) == pytest.approx(base / 2)
        assert 0.9 * base < sparse_conv.crossover(train, 512) < base
    # 16 outputs per group stay dense (not even counted) where 64 go sparse, at the same density
    x = spikes((8, 32, 24, 24), 0.03, torch.float32)
    for out, groups, path in ((16, 1, "dense"), (64, 1, "sparse"), (64, 4, "dense")):
        _, m = pair(32, out, 3, padding=1, groups=groups, mode=SparseMode.AUTO, dtype=torch.float32)
        m(x)
        assert (m.last_path, m.last_density is None) == (path, path == "dense")


def test_auto_stays_dense_for_tiny_convolutions_and_other_dtypes(monkeypatch):
    _, m = pair(2, 3, 3, mode=SparseMode.AUTO)
    m(spikes((1, 2, 6, 6), 0.01))
    assert (m.last_path, m.last_density) == ("dense", None)
    monkeypatch.setattr(sparse_conv, "MIN_WORK", 0)
    monkeypatch.setattr(sparse_conv, "NARROW_OUT", 0)   # few outputs: their own test
    monkeypatch.setattr(sparse_conv, "MIN_WORK_FORWARD", 0)
    ref, m = pair(2, 3, 3, mode=SparseMode.AUTO, dtype=torch.bfloat16)
    x = spikes((1, 2, 6, 6), 0.05, torch.bfloat16)
    torch.testing.assert_close(m(x), ref(x))
    assert (m.last_path, m.last_density) == ("dense", None)


def test_non_cpu_tensors_dense_in_auto_error_in_sparse(monkeypatch):
    # the meta device stands in for CUDA here: the same "not a CPU tensor" branch
    monkeypatch.setattr(sparse_conv, "MIN_WORK", 0)
    monkeypatch.setattr(sparse_conv, "NARROW_OUT", 0)   # few outputs: their own test
    m = SpikeConv2d(2, 3, 3, mode=SparseMode.AUTO, device="meta")
    x = torch.empty(2, 2, 6, 6, device="meta")
    assert m(x).shape == (2, 3, 4, 4) and m.last_path == "dense"
    m.mode = SparseMode.SPARSE
    with pytest.raises(ValueError, match="CPU tensors only, got meta"):
        m(x)


def test_non_binary_input_dense_in_auto_error_in_sparse(monkeypatch):
    monkeypatch.setattr(sparse_conv, "MIN_WORK", 0)
    monkeypatch.setattr(sparse_conv, "NARROW_OUT", 0)   # few outputs: their own test
    ref, m = pair(2, 3, 3, mode=SparseMode.AUTO)
    x = spikes((3, 2, 6, 6), 0.05) * 0.5
    assert x.count_nonzero() > 0
    torch.testing.assert_close(m(x), ref(x))
    assert m.last_path == "dense"
    m.mode = SparseMode.SPARSE
    with pytest.raises(ValueError, match="binary input"):
        m(x)


def test_errors():
    _, m = pair(2, 3, 3)
    for shape in ((2, 6), (1, 1, 2, 6, 6)):
        with pytest.raises(ValueError, match=r"input must have shape \(N, 2, H, W\)"):
            m(torch.zeros(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"input must have shape \(N, 2, H, W\), got \(1, 3, 6, 6\)"):
        m(torch.zeros(1, 3, 6, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="smaller than the dilated kernel"):
        m(torch.zeros(1, 2, 2, 6, dtype=torch.float64))
    with pytest.raises(ValueError, match="float32 or float64"):
        half = SpikeConv2d(2, 3, 3, mode=SparseMode.SPARSE, dtype=torch.bfloat16)
        half(torch.zeros(1, 2, 6, 6, dtype=torch.bfloat16))
    with pytest.raises(ValueError, match="padding='same' needs stride 1"):
        sparse_conv.spike_conv2d(torch.zeros(1, 2, 6, 6), torch.zeros(3, 2, 3, 3), None, 2, "same")
    with pytest.raises(ValueError, match="groups must be"):
        sparse_conv.spike_conv2d(torch.zeros(1, 2, 6, 6), torch.zeros(3, 1, 3, 3), None, groups=2)
    x, w = torch.zeros(1, 2, 6, 6), torch.zeros(3, 2, 3, 3)
    for name, bad in (("stride", (1, 1, 2)), ("dilation", (1, 2, 3)), ("padding", (1, 2, 3)), ("stride", 1.5),
                      ("stride", 0), ("padding", -1)):     # three values reached the C kernel (a segfault)
        with pytest.raises(ValueError, match=f"{name} must be an int"):
            sparse_conv.spike_conv2d(x, w, None, mode=SparseMode.SPARSE, **{name: bad})
    with pytest.raises(ValueError, match="groups must be"):
        sparse_conv.spike_conv2d(x, w, None, groups=True)
    for bias in (torch.zeros(4), torch.zeros(3, 1)):            # was read as its first 3 values
        with pytest.raises(ValueError, match=r"bias must have shape \(3,\)"):
            sparse_conv.spike_conv2d(x, w, bias, mode=SparseMode.SPARSE)
    with pytest.raises(TypeError, match="mode must be a SparseMode"):
        SpikeConv2d(2, 3, 3, mode="sparse")
    with pytest.raises(TypeError, match="conv must be a torch.nn.Conv2d"):
        SpikeConv2d.from_conv(nn.Linear(2, 3))
