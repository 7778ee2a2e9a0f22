"""The sparse spiking backward against the dense one (spikeforge's reference backend with the
reset detached and the surrogate truncated to the same support): weight, bias and input
gradients equal where the surrogate is nonzero, for every reset and input form of the
single-state neurons it takes; the neurons and surrogates it refuses, by name."""
from __future__ import annotations

import os

import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

import spikeforge as sf
from spikeforge.kernels import sparse_backward as K
from spikeforge.neurons import IF, LIF, PLIF, CubaLIF, QIF, Reset
from spikeforge.nn.sparse import SparseMode, spike_linear
from spikeforge.nn.sparse_backward import WeightGrad, active_fraction, sparse_spiking_conv2d, sparse_spiking_linear
from spikeforge.nn.spiking_linear import Backward, SpikingLinear
from spikeforge.surrogate import Custom, PiecewiseQuadratic, Sigmoid, Triangle

T, B, IN, H, OUT = 24, 3, 40, 20, 12


def data(dtype=torch.float64, seed=0, density=0.15):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, IN, generator=g, dtype=torch.float64) < density).to(dtype)
    w = lambda o, i: (torch.randn(o, i, generator=g, dtype=torch.float64) * 5.0 / i ** 0.5).to(dtype)  # noqa: E731
    return x, [w(H, IN).requires_grad_(), (torch.randn(H, generator=g, dtype=torch.float64) * 0.1).to(dtype)
               .requires_grad_(), w(OUT, H).requires_grad_()]


def dense_reference(spec, params, sur, x, ws):
    """Two Linear + neuron layers on the reference backend, the reset detached."""
    d = type(spec)(**{**{f: getattr(spec, f) for f in spec.options()}, "detach_reset": True})
    z1, *_ = sf.functional.run(d, F.linear(x, ws[0], ws[1]), params=params, surrogate=sur, backend="reference")
    z2, *_ = sf.functional.run(d, F.linear(z1, ws[2]), params=params, surrogate=sur, backend="reference")
    return z1, z2


def sparse_pair(spec, params, sur, x, ws, cutoff=None, how=WeightGrad.AUTO):
    z1 = sparse_spiking_linear(x, ws[0], ws[1], spec, params, surrogate=sur, cutoff=cutoff, weight_grad=how)
    return z1, sparse_spiking_linear(z1, ws[2], None, spec, params, surrogate=sur, cutoff=cutoff, weight_grad=how)


def grads(z1, z2, ws, g1, g2):
    z1.retain_grad()
    ((z1 * g1).sum() + (z2 * g2).sum()).backward()
    out = [w.grad.clone() for w in ws] + [z1.grad.clone()]
    for w in ws:
        w.grad = None
    return out


SPECS = [(LIF(), {"tau": 2.0}), (LIF(reset=Reset.SOFT), {"tau": 3.0}), (LIF(decay_input=False), {"tau": 4.0}),
         (IF(), {"v_threshold": 1.5}), (IF(reset=Reset.SOFT), {}), (LIF(reset=Reset.NONE), {"tau": 2.0})]


@pytest.mark.parametrize("spec,params", SPECS, ids=lambda v: getattr(v, "key", lambda: str(v))())
@pytest.mark.parametrize("sur,cutoff", [(Triangle(2.0), None), (PiecewiseQuadratic(3.0), None)])
@pytest.mark.parametrize("how", list(WeightGrad))
def test_gradients_equal_dense_where_surrogate_nonzero(spec, params, sur, cutoff, how):
    x, ws = data()
    r1, r2 = dense_reference(spec, params, sur, x, ws)
    s1, s2 = sparse_pair(spec, params, sur, x, ws, cutoff, how)
    assert torch.equal(r1, s1) and torch.equal(r2, s2)
    assert 0 < active_fraction(s1) < 1 and 0 < active_fraction(s2) < 1
    g = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(r1.shape, generator=g, dtype=x.dtype), torch.randn(r2.shape, generator=g, dtype=x.dtype)
    ref, got = grads(r1, r2, ws, g1, g2), grads(s1, s2, ws, g1, g2)
    for a, b in zip(ref[:3], got[:3]):   # weights and bias: exact (up to rounding) everywhere
        assert b.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    # the first layer's output gradient: equal where that layer's surrogate is nonzero, 0 elsewhere
    off, idx = s1._sf_active_set
    rows = torch.repeat_interleave(torch.arange(T * B), off.diff())
    mask = torch.zeros(T * B, H, dtype=torch.bool)
    mask[rows, idx.long()] = True
    mask = mask.view(T, B, H)
    torch.testing.assert_close(got[3][mask], ref[3][mask], rtol=1e-10, atol=1e-12)
    assert torch.equal(got[3][~mask], g1[~mask])   # only the direct term where inactive


def test_unbounded_surrogate_with_cutoff_equals_the_truncated_dense_one():
    base, cut = Sigmoid(4.0), 0.4
    trunc = Custom(lambda u, a: torch.where(u.abs() < cut, base.grad(u), torch.zeros_like(u)))
    x, ws = data(seed=3)
    spec, params = LIF(), {"tau": 2.0}
    r1, r2 = dense_reference(spec, params, trunc, x, ws)
    s1, s2 = sparse_pair(spec, params, base, x, ws, cutoff=cut)
    g = torch.Generator().manual_seed(2)
    g1, g2 = torch.randn(r1.shape, generator=g, dtype=x.dtype), torch.randn(r2.shape, generator=g, dtype=x.dtype)
    for a, b in zip(grads(r1, r2, ws, g1, g2)[:3], grads(s1, s2, ws, g1, g2)[:3]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)


def test_input_gradient_is_dense_when_the_input_is_not_a_sparse_layer_output():
    x, ws = data(seed=4)
    xr = x.clone().requires_grad_()
    xs = x.clone().requires_grad_()
    spec, sur = LIF(), Triangle(1.0)
    d = LIF(detach_reset=True)
    r, *_ = sf.functional.run(d, F.linear(xr, ws[0], ws[1]), params={"tau": 2.0}, surrogate=sur, backend="reference")
    s = sparse_spiking_linear(xs, ws[0], ws[1], spec, {"tau": 2.0}, surrogate=sur)
    g = torch.randn(r.shape, generator=torch.Generator().manual_seed(5), dtype=x.dtype)
    (r * g).sum().backward()
    (s * g).sum().backward()
    torch.testing.assert_close(xs.grad, xr.grad, rtol=1e-10, atol=1e-12)


def test_arguments_refused_by_name():
    x = torch.rand(4, 2, 16, dtype=torch.float64)
    w = torch.rand(8, 16, dtype=torch.float64)
    spec = LIF()
    with pytest.raises(ValueError, match="weight must be a .out, 16. tensor"):
        sparse_spiking_linear(x, w.tolist(), None, spec)
    with pytest.raises(ValueError, match="bias must be a .8,. tensor"):
        sparse_spiking_linear(x, w, [0.0] * 8, spec)
    for f in (lambda: sparse_spiking_linear(x, w, None, sf.nn.LIF(), (2.0, 0.0, 1.0, 1.0, 0.0)),
              lambda: sparse_spiking_conv2d(torch.rand(3, 2, 2, 4, 4), torch.rand(6, 2, 3, 3), None, sf.nn.LIF())):
        with pytest.raises(TypeError, match="spec must be a NeuronSpec instance .* pass its .spec"):
            f()
    xc = torch.rand(3, 2, 2, 4, 4)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3, H, W\) .* got \(3, 2, 2, 4, 4\)"):
        sparse_spiking_conv2d(xc, torch.rand(6, 3, 3, 3), None, spec)
    with pytest.raises(ValueError, match=r"x \(3, 2, 2, 4, 4\): .*smaller than the dilated kernel"):
        sparse_spiking_conv2d(xc, torch.rand(6, 2, 5, 5), None, spec)


@pytest.mark.parametrize("head", ["spike_linear", "sparse"])
@pytest.mark.parametrize("how", ["no_grad", "in_place"])
def test_a_sparse_layers_output_outside_its_graph_gets_its_whole_gradient(head, how):
    """The active set holds only while the output is the sparse layer's, in the graph: made under
    no_grad and then given requires_grad (a leaf), or changed in place (there by a {0, 1} mask that
    wants its own gradient), the next layer's input gradient is the whole dense one."""
    x, ws = data(seed=11)
    spec, params, sur = LIF(), {"tau": 2.0}, Triangle(1.0)
    w2 = ws[2].detach()
    mask = (torch.rand(T, B, H, generator=torch.Generator().manual_seed(3)) < 0.7).to(x.dtype)
    if how == "no_grad":
        with torch.no_grad():
            z = sparse_spiking_linear(x, ws[0], ws[1], spec, params, surrogate=sur)
        assert active_fraction(z) is not None   # still reported
        src, ref = z.requires_grad_(), z.detach().clone().requires_grad_()
        zr = ref
    else:
        z = sparse_spiking_linear(x, ws[0].detach().requires_grad_(), ws[1], spec, params, surrogate=sur)
        z0 = z.detach().clone()
        src, ref = mask.clone().requires_grad_(), mask.clone().requires_grad_()
        z.mul_(src)
        zr = z0 * ref
    g = torch.randn(T, B, OUT, generator=torch.Generator().manual_seed(4), dtype=x.dtype)
    if head == "spike_linear":
        y = spike_linear(z, w2, None, SparseMode.SPARSE)[0]
        yr = F.linear(zr, w2)
    else:
        y = sparse_spiking_linear(z, w2, None, spec, params, surrogate=sur)
        yr, *_ = sf.functional.run(LIF(detach_reset=True), F.linear(zr, w2), params=params, surrogate=sur,
                                   backend="reference")
    (y * g).sum().backward()
    (yr * g).sum().backward()
    got = src.grad.to_dense() if src.grad.is_sparse else src.grad
    assert ref.grad.abs().max() > 0
    torch.testing.assert_close(got, ref.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("compact_below", [1, 10 ** 6])   # COO always / never
@pytest.mark.parametrize("mode", [SparseMode.SPARSE, SparseMode.DENSE])
def test_a_spike_linear_readout_reads_the_gradient_only_where_the_sparse_layer_does(monkeypatch, mode, compact_below):
    """A SpikeLinear after a sparse layer computes its input gradient only at that layer's
    active entries (0 elsewhere: that layer reads no other), as a sparse COO tensor on them when
    they are few enough (``COMPACT_BELOW``): every weight gradient equals the one through a plain
    F.linear readout; with mode DENSE (F.linear) the input gradient is dense."""
    monkeypatch.setattr(sf.nn.sparse, "COMPACT_BELOW", compact_below)
    x, ws = data(seed=7)
    spec, params, sur = LIF(), {"tau": 2.0}, Triangle(2.0)
    w3 = (torch.randn(5, OUT, generator=torch.Generator().manual_seed(8), dtype=x.dtype)).requires_grad_()
    g = torch.randn(T, B, 5, generator=torch.Generator().manual_seed(9), dtype=x.dtype)
    out = {}
    for readout in ("linear", "spike_linear"):
        z1, z2 = sparse_pair(spec, params, sur, x, ws)
        z2.retain_grad()
        y = F.linear(z2, w3) if readout == "linear" else spike_linear(z2, w3, None, mode)[0]
        (y * g).sum().backward()
        out[readout] = [w.grad.clone() for w in (*ws, w3)] + [z2.grad.clone()]
        for w in (*ws, w3):
            w.grad = None
    for a, b in zip(out["linear"][:4], out["spike_linear"][:4]):
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    full, got = out["linear"][4], out["spike_linear"][4]
    if mode is SparseMode.DENSE:
        assert torch.equal(got, full)
        return
    off, idx = z2._sf_active_set
    # the readout hands the sparse layer its input gradient as a sparse COO tensor on that layer's
    # active set (nothing written elsewhere), which the layer reads in place
    assert got.is_sparse == (compact_below == 1) and (not got.is_sparse or got._nnz() == idx.numel())
    got = got.to_dense()
    mask = torch.zeros(T * B, OUT, dtype=torch.bool)
    mask[torch.repeat_interleave(torch.arange(T * B), off.diff()), idx.long()] = True
    mask = mask.view(T, B, OUT)
    assert 0 < mask.sum() < mask.numel() / 2
    torch.testing.assert_close(got[mask], full[mask], rtol=1e-10, atol=1e-12)
    assert not got[~mask].any()


def test_sparse_layers_pass_their_input_gradients_compactly(monkeypatch):
    """Between sparse layers (and into a SpikeLinear readout) the input gradient travels as a sparse
    COO tensor on the producing layer's active set, which that layer reads in place (never made
    dense); a dense gradient from another use of the same output is added to it (autograd makes
    the sum dense), and the gradients stay the reference's."""
    monkeypatch.setattr(sf.nn.sparse, "COMPACT_BELOW", 1)   # COO at any activity
    x, ws = data(seed=3)
    spec, params, sur = LIF(), {"tau": 2.0}, Triangle(2.0)
    w3 = (torch.randn(5, OUT, generator=torch.Generator().manual_seed(4), dtype=x.dtype)).requires_grad_()
    g = torch.randn(T, B, 5, generator=torch.Generator().manual_seed(6), dtype=x.dtype)
    r1, r2 = dense_reference(spec, params, sur, x, ws)
    ((F.linear(r2, w3)) * g).sum().backward()
    want = [w.grad.clone() for w in (*ws, w3)]
    for w in (*ws, w3):
        w.grad = None
    seen = []
    to_dense = torch.Tensor.to_dense
    monkeypatch.setattr(torch.Tensor, "to_dense", lambda t, *a, **k: seen.append(t.shape) or to_dense(t, *a, **k))
    s1, s2 = sparse_pair(spec, params, sur, x, ws)
    (spike_linear(s2, w3, None, SparseMode.SPARSE)[0] * g).sum().backward()
    assert seen == []
    for got, exp in zip((w.grad for w in (*ws, w3)), want):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    for w in (*ws, w3):
        w.grad = None
    # the first layer's output also feeds a dense term: its gradient arrives dense (the sum)
    g1 = torch.randn(T, B, H, generator=torch.Generator().manual_seed(7), dtype=x.dtype)
    s1, s2 = sparse_pair(spec, params, sur, x, ws)
    ((spike_linear(s2, w3, None, SparseMode.SPARSE)[0] * g).sum() + (s1 * g1).sum()).backward()
    r1, r2 = dense_reference(spec, params, sur, x, ws)
    want = torch.autograd.grad((F.linear(r2, w3) * g).sum() + (r1 * g1).sum(), (*ws, w3))
    for got, exp in zip((w.grad for w in (*ws, w3)), want):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)
    for w in (*ws, w3):
        w.grad = None
    # two sparse layers read the first one's output: autograd sums their two COO gradients (no longer
    # on the layer's own indices), which that layer makes dense
    w4 = (torch.randn(5, H, generator=torch.Generator().manual_seed(9), dtype=x.dtype)).requires_grad_()
    g4 = torch.randn(T, B, 5, generator=torch.Generator().manual_seed(10), dtype=x.dtype)
    seen.clear()
    s1, s2 = sparse_pair(spec, params, sur, x, ws)
    ((spike_linear(s2, w3, None, SparseMode.SPARSE)[0] * g).sum()
     + (spike_linear(s1, w4, None, SparseMode.SPARSE)[0] * g4).sum()).backward()
    assert seen == [s1.shape]
    r1, r2 = dense_reference(spec, params, sur, x, ws)
    want = torch.autograd.grad((F.linear(r2, w3) * g).sum() + (F.linear(r1, w4) * g4).sum(), (*ws, w3, w4))
    for got, exp in zip((w.grad for w in (*ws, w3, w4)), want):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(T=st.integers(1, 12), B=st.integers(1, 4), IN=st.integers(1, 70), N=st.integers(1, 300),
       density=st.floats(0.0, 0.6), rows=st.integers(1, 9), spikes=st.integers(0, 40), seed=st.integers(0, 99))
def test_grouped_scatter_equals_the_per_spike_scatter(T, B, IN, N, density, rows, spikes, seed):
    """For any shape, density and buffer size (in rows of gI, and in spikes: at least IN), the
    kernel's grouped weight-gradient scatter equals the one that adds gI to the weight-gradient
    row of each input spike, and the bias gradient and the (compact) input gradient are
    unchanged; ``coo_indices`` gives each entry's (t, b, column)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, B, IN, generator=g, dtype=torch.float64) < density).double()
    w = torch.randn(N, IN, generator=g, dtype=torch.float64)
    # leak a, input coefficient c, reset slope 1 (no spikes' CSR: the adjoint is not gated)
    coef = (torch.rand(N, generator=g, dtype=torch.float64), torch.rand(N, generator=g, dtype=torch.float64) + 0.5,
            torch.ones(N, dtype=torch.float64))
    # an arbitrary active set (CSR over the T B rows) with surrogate values, and the input's CSR
    act = torch.rand(T * B, N, generator=g) < 0.2
    off = torch.zeros(T * B + 1, dtype=torch.int64)
    off[1:] = act.sum(1).cumsum(0)
    idx = act.nonzero()[:, 1].to(torch.int32)
    sg = torch.rand(idx.numel(), generator=g, dtype=torch.float64)
    pm = torch.rand(T * B, IN, generator=g) < 0.3      # the previous layer's active set (over the inputs)
    poff = torch.zeros(T * B + 1, dtype=torch.int64)
    poff[1:] = pm.sum(1).cumsum(0)
    pidx = pm.nonzero()[:, 1].to(torch.int32)
    xm = x.view(T * B, IN) != 0
    xoff = torch.zeros(T * B + 1, dtype=torch.int64)
    xoff[1:] = xm.sum(1).cumsum(0)
    xidx = xm.nonzero()[:, 1].to(torch.int32)
    gz = torch.randn(T, B, N, generator=g, dtype=torch.float64)

    def run(group_bytes, group_spikes, group_max):
        saved = K.GROUP_BYTES, K.GROUP_SPIKES, K.BLOCK
        K.GROUP_BYTES, K.GROUP_SPIKES, K.BLOCK = group_bytes, group_spikes, group_max
        try:
            return K.backward(gz, None, (off, idx, sg), coef, w, (xoff, xidx), (poff, pidx), False,
                              compact_gx=True)
        finally:
            K.GROUP_BYTES, K.GROUP_SPIKES, K.BLOCK = saved

    _, gw0, gb0, gx0 = run(1, 1, 0)                           # per spike
    _, gw1, gb1, gx1 = run(rows * N * 8, spikes, 8192)         # grouped, small buffers
    torch.testing.assert_close(gw1, gw0, rtol=1e-12, atol=1e-12)
    assert torch.equal(gb1, gb0) and torch.equal(gx1, gx0)
    assert gw1.shape == (N, IN) and gw1.is_contiguous()
    # the COO indices of a CSR set: (t, b, column) of each entry, in its order
    rows_ = torch.repeat_interleave(torch.arange(T * B), poff.diff())
    assert torch.equal(K.coo_indices(poff, pidx, B), torch.stack([rows_ // B, rows_ % B, pidx.long()]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_scattered_weight_gradient_on_two_threads(dtype):
    """The weight gradient that scatters the input's spikes, on 2 threads (each adds into its own
    copy; the copies are summed), equals the dense reference's."""
    g = torch.Generator().manual_seed(13)
    x = (torch.rand(30, 4, 200, generator=g, dtype=torch.float64) < 0.3).to(dtype)
    w = (torch.randn(70, 200, generator=g, dtype=torch.float64) * 0.3).to(dtype).requires_grad_()
    gz = torch.randn(30, 4, 70, generator=g, dtype=torch.float64).to(dtype)
    ref, *_ = sf.functional.run(LIF(detach_reset=True), F.linear(x, w), params={"tau": 2.0}, surrogate=Triangle(1.0),
                                backend="reference")
    want = torch.autograd.grad((ref * gz).sum(), w)[0]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        z = sparse_spiking_linear(x, w, None, LIF(), {"tau": 2.0}, surrogate=Triangle(1.0),
                                  weight_grad=WeightGrad.SCATTER)
        got = torch.autograd.grad((z * gz).sum(), w)[0]
    finally:
        torch.set_num_threads(threads)
    assert torch.equal(z, ref) and want.abs().max() > 0
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(got, want, **tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("out", [70, 300])
def test_grouped_scatter_flushes_by_rows_and_by_spikes(monkeypatch, dtype, threads, out):
    """The scatter buffers rows of the current's gradient and adds them up by input spike: with
    buffers of 3 rows, or of as many spikes as inputs, it flushes many times, and the weight
    gradient equals the one scattered spike by spike and the dense reference's (column counts
    that leave vector and scalar tails)."""
    _check_grouped_scatter(monkeypatch, dtype, threads, out)


@pytest.mark.parametrize("width", [16, 32, 64])
def test_grouped_scatter_at_every_vector_width(monkeypatch, width):
    """The flush's accumulators take the machine's vector width (64 bytes with AVX-512, 32 with
    AVX, 16 otherwise); each is generic C, so all three are built and checked on any machine."""
    from spikeforge.kernels import cpu
    monkeypatch.setattr(cpu, "WIDE", [*cpu.WIDE, f"-DSF_VB={width}"])
    lib = K.load(K._HEADER, K._SOURCE, {"sf_sbw_backward": None})
    assert not isinstance(lib, str), lib
    monkeypatch.setattr(K, "build", lambda: lib)
    for dtype in (torch.float64, torch.float32):
        for out in (70, 300):
            _check_grouped_scatter(monkeypatch, dtype, 1, out)


@pytest.mark.skipif(os.uname().machine not in ("x86_64", "amd64", "AMD64"), reason="-mno-avx is an x86 flag")
def test_active_set_and_scatter_built_without_avx(monkeypatch):
    """The active set's bit masks take sign bits with AVX and a plain loop elsewhere (and the flush
    16-byte vectors): the kernels compiled with -mno-avx give the same gradients on an AVX machine."""
    from spikeforge.kernels import cpu
    monkeypatch.setattr(cpu, "WIDE", [*cpu.WIDE, "-mno-avx"])
    lib = K.load(K._HEADER, K._SOURCE, {"sf_sbw_backward": None})
    assert not isinstance(lib, str), lib
    monkeypatch.setattr(K, "build", lambda: lib)
    for dtype in (torch.float64, torch.float32):
        _check_grouped_scatter(monkeypatch, dtype, 1, 300)


def _check_grouped_scatter(monkeypatch, dtype, threads, out):
    g = torch.Generator().manual_seed(5)
    x = (torch.rand(20, 5, 200, generator=g, dtype=torch.float64) < 0.3).to(dtype)
    x[3] = 0   # rows without spikes are not buffered
    w = (torch.randn(out, 200, generator=g, dtype=torch.float64) * 0.3).to(dtype).requires_grad_()
    gz = torch.randn(20, 5, out, generator=g, dtype=torch.float64).to(dtype)
    ref, *_ = sf.functional.run(LIF(detach_reset=True), F.linear(x, w), params={"tau": 2.0}, surrogate=Triangle(1.0),
                                backend="reference")
    want = torch.autograd.grad((ref * gz).sum(), w)[0]

    def grad_w():
        z = sparse_spiking_linear(x, w, None, LIF(), {"tau": 2.0}, surrogate=Triangle(1.0),
                                  weight_grad=WeightGrad.SCATTER)
        assert torch.equal(z, ref)
        return torch.autograd.grad((z * gz).sum(), w)[0]

    n = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        got = {}
        for key, (rows, spikes, group_max) in {"rows": (3, 1 << 16, 8192), "spikes": (1 << 20, 200, 8192),
                                               "default": (K.GROUP_BYTES // (out * x.element_size()), 1 << 16, 8192),
                                               "per spike": (1, 1, 0)}.items():
            monkeypatch.setattr(K, "GROUP_BYTES", rows * out * x.element_size())
            monkeypatch.setattr(K, "GROUP_SPIKES", spikes)
            monkeypatch.setattr(K, "BLOCK", group_max)
            got[key] = grad_w()
    finally:
        torch.set_num_threads(n)
    tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
    assert want.abs().max() > 0
    for key, gw in got.items():
        torch.testing.assert_close(gw, want, **tol, msg=lambda m: f"{key}: {m}")
        torch.testing.assert_close(gw, got["per spike"], **tol)


@pytest.mark.parametrize("how", [WeightGrad.SCATTER, WeightGrad.DENSE])
@pytest.mark.parametrize("spec", [LIF(), LIF(reset=Reset.SOFT)], ids=["hard", "soft"])
def test_wide_layer_runs_the_backward_in_column_blocks(spec, how):
    """More neurons than one column block of the backward kernel (8192): gradients still equal."""
    g = torch.Generator().manual_seed(5)
    n = 2 * 8192 + 100
    x = (torch.rand(4, 3, 7, generator=g, dtype=torch.float64) < 0.4).double()
    w = (torch.randn(n, 7, generator=g, dtype=torch.float64) * 1.5).requires_grad_()
    b = (torch.randn(n, generator=g, dtype=torch.float64) * 0.3).requires_grad_()
    gz = torch.randn(4, 3, n, generator=g, dtype=torch.float64)
    d = type(spec)(**{**{f: getattr(spec, f) for f in spec.options()}, "detach_reset": True})
    ref, *_ = sf.functional.run(d, F.linear(x, w, b), params={"tau": 2.0}, surrogate=Triangle(2.0),
                                backend="reference")
    want = torch.autograd.grad((ref * gz).sum(), (w, b))
    z = sparse_spiking_linear(x, w, b, spec, {"tau": 2.0}, surrogate=Triangle(2.0), weight_grad=how)
    assert torch.equal(z, ref) and 0.05 < active_fraction(z) < 0.95 and z.any()
    for got, exp in zip(torch.autograd.grad((z * gz).sum(), (w, b)), want):
        torch.testing.assert_close(got, exp, rtol=1e-10, atol=1e-12)


def test_float32_and_module():
    torch.manual_seed(0)
    m1 = SpikingLinear(IN, H, sf.nn.LIF(tau=2.0, surrogate=Triangle(1.0)), backward=Backward.SPARSE)
    with torch.no_grad():
        m1.linear.weight.mul_(4.0)
    x, _ = data(torch.float32)
    z = m1(x)
    assert z.dtype == torch.float32 and z.shape == (T, B, H)
    ref, *_ = sf.functional.run(LIF(detach_reset=True), F.linear(x, m1.linear.weight, m1.linear.bias),
                                params={"tau": 2.0}, surrogate=Triangle(1.0), backend="reference")
    g = torch.randn(z.shape, generator=torch.Generator().manual_seed(6))
    gw = torch.autograd.grad((ref * g).sum(), m1.linear.weight)[0]
    (z * g).sum().backward()
    assert torch.equal(z, ref)
    torch.testing.assert_close(m1.linear.weight.grad, gw, rtol=1e-4, atol=1e-5)


def test_per_neuron_parameters_and_the_narrow_probe():
    """A leak and threshold per neuron (probed at every neuron) and scalar ones (probed at
    ``PROBE_POINTS`` neurons and repeated): both give the dense gradient."""
    x, ws = data(seed=9)
    g = torch.Generator().manual_seed(10)
    for params in ({"tau": torch.linspace(1.5, 4.0, H, dtype=torch.float64),
                    "v_threshold": torch.linspace(0.8, 1.2, H, dtype=torch.float64)}, {"tau": 3.0}):
        d = LIF(detach_reset=True)
        r, *_ = sf.functional.run(d, F.linear(x, ws[0], ws[1]), params=params, surrogate=Triangle(2.0),
                                  backend="reference")
        s = sparse_spiking_linear(x, ws[0], ws[1], LIF(), params, surrogate=Triangle(2.0))
        gz = torch.randn(r.shape, generator=g, dtype=x.dtype)
        want, got = torch.autograd.grad((r * gz).sum(), ws[0]), torch.autograd.grad((s * gz).sum(), ws[0])
        assert torch.equal(r, s) and 0 < active_fraction(s) < 1
        torch.testing.assert_close(got[0], want[0], rtol=1e-10, atol=1e-12)
    p = LIF.Params(*(torch.tensor(v, dtype=torch.float64) for v in (4.0, 0.0, 1.0, 1.0, 0.0)))
    a, c, g1 = K.linear_form(LIF(), p, 1000, torch.float64)
    assert a.shape == (1000,) and a.is_contiguous() and bool((a == 0.75).all()) and bool((c == 0.25).all())
    assert K._probe_width(p, 1000) == K.PROBE_POINTS


def test_linear_form_reads_the_leak_and_reset_slope():
    a, c, g1 = K.linear_form(LIF(), LIF.Params(*(torch.tensor(v) for v in (4.0, 0.0, 1.0, 1.0, 0.0))), 3,
                             torch.float64)
    torch.testing.assert_close(a, torch.full((3,), 0.75, dtype=torch.float64))
    torch.testing.assert_close(c, torch.full((3,), 0.25, dtype=torch.float64))
    assert torch.equal(g1, torch.zeros(3, dtype=torch.float64))                       # hard reset
    _, _, g1 = K.linear_form(IF(reset=Reset.SOFT), IF.Params(*(torch.tensor(v) for v in (1.0, 1.0, 0.0))), 2,
                             torch.float64)
    assert torch.equal(g1, torch.ones(2, dtype=torch.float64))                        # soft reset


@pytest.mark.parametrize("spec,match", [(CubaLIF(), "CubaLIF: .*single-state"), (QIF(), "QIF: .*not affine")])
def test_refuses_neurons_it_cannot_take(spec, match):
    x, ws = data()
    with pytest.raises(K.NotSparse, match=match):
        sparse_spiking_linear(x, ws[0], ws[1], spec, None, surrogate=Triangle(1.0))


def test_refuses_learnable_parameters_unbounded_surrogates_and_bad_input():
    x, ws = data()
    tau = torch.full((H,), 2.0, dtype=torch.float64, requires_grad=True)
    with pytest.raises(K.NotSparse, match="PLIF: parameter tau requires a gradient"):
        sparse_spiking_linear(x, ws[0], ws[1], PLIF(), {"tau": tau}, surrogate=Triangle(1.0))
    with pytest.raises(K.NotSparse, match="no bounded support: give cutoff="):
        sparse_spiking_linear(x, ws[0], ws[1], LIF(), None, surrogate=Sigmoid())
    with pytest.raises(ValueError, match="cutoff must be a positive number"):
        sparse_spiking_linear(x, ws[0], ws[1], LIF(), None, surrogate=Sigmoid(), cutoff=0.0)
    with pytest.raises(ValueError, match=r"x must be a \(T, B, in_features\) tensor"):
        sparse_spiking_linear(x[0], ws[0], ws[1], LIF(), None)
    with pytest.raises(ValueError, match="weight must be"):
        sparse_spiking_linear(x, ws[2], None, LIF(), None)


def test_surrogate_support():
    assert Triangle(4.0).support == 0.25 and PiecewiseQuadratic(2.0).support == 0.5
    assert Sigmoid().support is None
    for s in (Triangle(4.0), PiecewiseQuadratic(2.0)):
        u = torch.linspace(-2, 2, 4001, dtype=torch.float64)
        assert bool((s.grad(u)[u.abs() >= s.support] == 0).all())


def test_spiking_linear_backward_sparse_runs_it():
    from spikeforge.nn.spiking_linear import Backward, SpikingLinear

    torch.manual_seed(0)
    layer = SpikingLinear(IN, H, sf.nn.LIF(tau=2.0, surrogate=Triangle(1.0)), backward=Backward.SPARSE)
    with torch.no_grad():
        layer.linear.weight.mul_(4.0)
    x, _ = data(torch.float32)
    z = layer(x)
    w = layer.linear.weight.detach().clone().requires_grad_()
    ref = sparse_spiking_linear(x, w, layer.linear.bias.detach(), LIF(), {"tau": 2.0}, surrogate=Triangle(1.0))
    g = torch.randn(z.shape, generator=torch.Generator().manual_seed(7))
    (z * g).sum().backward()
    (ref * g).sum().backward()
    assert torch.equal(z, ref) and active_fraction(z) > 0
    torch.testing.assert_close(layer.linear.weight.grad, w.grad, rtol=0, atol=0)
    carry = SpikingLinear(IN, H, sf.nn.LIF(carry_state=True, surrogate=Triangle(1.0)), backward=Backward.SPARSE)
    with pytest.raises(ValueError, match="carry_state=True is not supported"):
        carry(x)
    rec = SpikingLinear(IN, H, sf.nn.LIF(record=True, surrogate=Triangle(1.0)), backward=Backward.SPARSE)
    with pytest.raises(ValueError, match="record=True is not supported"):
        rec(x)


@pytest.mark.parametrize("how", [WeightGrad.AUTO, WeightGrad.TRACE, WeightGrad.DENSE])
def test_real_valued_input_and_a_silent_layer(how):
    g = torch.Generator().manual_seed(8)
    x = torch.rand(T, B, IN, generator=g, dtype=torch.float64) * 0.6                 # currents, not spikes
    w = (torch.randn(H, IN, generator=g, dtype=torch.float64) * 0.5).requires_grad_()
    sur, d = Triangle(2.0), LIF(detach_reset=True)
    r, *_ = sf.functional.run(d, F.linear(x, w), params={"tau": 2.0}, surrogate=sur, backend="reference")
    s = sparse_spiking_linear(x, w, None, LIF(), {"tau": 2.0}, surrogate=sur, weight_grad=how)
    gz = torch.randn(r.shape, generator=g, dtype=x.dtype)
    gr = torch.autograd.grad((r * gz).sum(), w)[0]
    gs = torch.autograd.grad((s * gz).sum(), w)[0]
    assert torch.equal(r, s) and gr.abs().max() > 0
    torch.testing.assert_close(gs, gr, rtol=1e-10, atol=1e-12)
    silent = torch.zeros_like(w, requires_grad=True)   # membrane at rest: nothing active, zero gradient
    z = sparse_spiking_linear(x, silent, None, LIF(), {"tau": 2.0}, surrogate=sur, weight_grad=how)
    assert active_fraction(z) == 0
    assert torch.equal(torch.autograd.grad((z * gz).sum(), silent)[0], torch.zeros_like(w))


# -- the convolution synapse ------------------------------------------------------------------

def conv_reference(spec, params, sur, x, w, b, **conv):
    """conv2d at each step + the neuron on the reference backend, the reset detached."""
    d = type(spec)(**{**{f: getattr(spec, f) for f in spec.options()}, "detach_reset": True})
    y = F.conv2d(x.flatten(0, 1), w, b, **conv)
    z, *_ = sf.functional.run(d, y.view(x.shape[0], x.shape[1], -1), params=params, surrogate=sur,
                              backend="reference")
    return z.view(x.shape[0], x.shape[1], *y.shape[1:])


def conv_data(seed, density, c=4, o1=6, o2=4, groups=1, k=3):
    g = torch.Generator().manual_seed(seed)
    x = (torch.rand(6, 2, c, 9, 8, generator=g, dtype=torch.float64) < density).to(torch.float64)
    w = lambda o, i: (torch.randn(o, i, k, k, generator=g, dtype=torch.float64) * 4.0 / (i * k * k) ** 0.5)  # noqa: E731
    return x, [w(o1, c // groups).requires_grad_(), (torch.randn(o1, generator=g, dtype=torch.float64) * 0.1)
               .requires_grad_(), w(o2, o1 // groups).requires_grad_()]


CONVS = [dict(stride=1, padding=1), dict(stride=2, padding=0, groups=2), dict(stride=1, padding=2, dilation=2),
         dict(stride=1, padding="same", k=2)]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")   # torch's, in the reference
@pytest.mark.parametrize("conv", CONVS, ids=lambda c: "-".join(f"{k}{v}" for k, v in c.items()))
@pytest.mark.parametrize("density", [0.08, 0.5])      # the scattering kernels, and F.conv2d above the crossover
@pytest.mark.parametrize("spec,params", [(LIF(), {"tau": 2.0}), (IF(reset=Reset.SOFT), {})],
                         ids=["LIF", "IF-soft"])
def test_conv_gradients_equal_dense_where_surrogate_nonzero(conv, density, spec, params):
    """Two sparse convolution layers against F.conv2d + the reference neuron: spikes equal; weight
    and bias gradients equal; the first layer's output gradient equal at its active entries (the
    second layer computes its input gradient only there) and the direct term elsewhere."""
    conv = dict(conv)
    k, groups = conv.pop("k", 3), conv.get("groups", 1)
    x, ws = conv_data(11, density, groups=groups, k=k)
    sur = Triangle(2.0)
    r1 = conv_reference(spec, params, sur, x, ws[0], ws[1], **conv)
    r2 = conv_reference(spec, params, sur, r1, ws[2], None, **conv)
    s1 = sparse_spiking_conv2d(x, ws[0], ws[1], spec, params, surrogate=sur, **conv)
    s2 = sparse_spiking_conv2d(s1, ws[2], None, spec, params, surrogate=sur, **conv)
    assert torch.equal(r1, s1) and torch.equal(r2, s2)
    assert 0 < active_fraction(s1) < 1 and 0 < active_fraction(s2) < 1
    g = torch.Generator().manual_seed(1)
    g1, g2 = torch.randn(r1.shape, generator=g, dtype=x.dtype), torch.randn(r2.shape, generator=g, dtype=x.dtype)
    ref, got = grads(r1, r2, ws, g1, g2), grads(s1, s2, ws, g1, g2)
    for a, b in zip(ref[:3], got[:3]):
        assert b.abs().max() > 0
        torch.testing.assert_close(b, a, rtol=1e-10, atol=1e-12)
    off, idx = s1._sf_active_set
    rows = torch.repeat_interleave(torch.arange(off.numel() - 1), off.diff())
    mask = torch.zeros(off.numel() - 1, r1[0, 0].numel(), dtype=torch.bool)
    mask[rows, idx.long()] = True
    mask = mask.view(r1.shape)
    padded = conv["padding"] == "same"     # asymmetric padding: the input gradient is computed densely
    torch.testing.assert_close(got[3][mask], ref[3][mask], rtol=1e-10, atol=1e-12)
    if padded:
        torch.testing.assert_close(got[3], ref[3], rtol=1e-10, atol=1e-12)
    else:
        assert torch.equal(got[3][~mask], g1[~mask])


def test_conv_input_gradient_is_dense_for_other_input_and_threads():
    """A real-valued input (not a sparse layer's output): grad x equal to the dense one everywhere;
    float32 on 2 threads (samples split between the threads)."""
    g = torch.Generator().manual_seed(12)
    x = torch.rand(8, 4, 3, 12, 12, generator=g, dtype=torch.float64) * 0.8
    w = (torch.randn(8, 3, 3, 3, generator=g, dtype=torch.float64) * 0.6).requires_grad_()
    gz = torch.randn(8, 4, 8, 12, 12, generator=g, dtype=torch.float64)
    for dtype in (torch.float64, torch.float32):
        xr, xs = (x.to(dtype).requires_grad_() for _ in range(2))
        wd = w.detach().to(dtype).requires_grad_()
        r = conv_reference(LIF(), {"tau": 2.0}, Triangle(1.0), xr, wd, None, padding=1)
        gr = torch.autograd.grad((r * gz.to(dtype)).sum(), (xr, wd))
        threads = torch.get_num_threads()
        torch.set_num_threads(2)
        try:
            s = sparse_spiking_conv2d(xs, wd, None, LIF(), {"tau": 2.0}, surrogate=Triangle(1.0), padding=1)
            gs = torch.autograd.grad((s * gz.to(dtype)).sum(), (xs, wd))
        finally:
            torch.set_num_threads(threads)
        assert torch.equal(r, s) and 0 < active_fraction(s) < 1
        tol = dict(rtol=1e-10, atol=1e-12) if dtype == torch.float64 else dict(rtol=1e-4, atol=1e-5)
        for a, b in zip(gr, gs):
            assert a.abs().max() > 0
            torch.testing.assert_close(b, a, **tol)


def test_conv_refuses_bad_input():
    x, ws = conv_data(3, 0.1)
    with pytest.raises(ValueError, match=r"x must be a \(T, B, C, H, W\) tensor"):
        sparse_spiking_conv2d(x[0], ws[0], ws[1], LIF(), None)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 6, H, W\) for weight \(4, 6, 3, 3\)"):
        sparse_spiking_conv2d(x, ws[2], None, LIF(), None)
    with pytest.raises(ValueError, match=r"bias must be \(6,\)"):
        sparse_spiking_conv2d(x, ws[0], ws[1][:3], LIF(), None)
    with pytest.raises(ValueError, match="weight must be a tensor of x's dtype"):
        sparse_spiking_conv2d(x, ws[0].float(), None, LIF(), None)
    with pytest.raises(K.NotSparse, match="CubaLIF: .*single-state"):
        sparse_spiking_conv2d(x, ws[0], ws[1], CubaLIF(), None, surrogate=Triangle(1.0))
