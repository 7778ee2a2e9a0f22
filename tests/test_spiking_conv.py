"""SpikingConv2d: the dense form equals TimeDistributed(Conv2d) -> neuron (values, gradients,
state dict, streaming); the sparse form gives the same spikes and the gradients of the pair
with the reset detached (bounded surrogate); bad arguments are named."""
from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge.nn import SpikingConv2d
from spikeforge.nn.spiking_linear import Backward
from spikeforge.surrogate import Triangle

T, B, C, O, S = 6, 2, 3, 5, 7


def data(seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, C, S, S, generator=g, dtype=torch.float64) < 0.3).double()


def layer(backward=Backward.DENSE, detach_reset=False, seed=0, **neuron):
    torch.manual_seed(seed)
    nrn = sf.nn.LIF(tau=2.0, surrogate=Triangle(1.5), detach_reset=detach_reset, **neuron)
    m = SpikingConv2d(C, O, 3, nrn, padding=1, stride=1, backward=backward).double()
    with torch.no_grad():
        m.conv.weight.mul_(4.0)
    return m


def pair(m):
    """The unfused twin of ``m``: TimeDistributed(Conv2d) and the same neuron."""
    return lambda x: m.neuron(sf.nn.TimeDistributed(m.conv)(x))


def grads(f, x, params, gz):
    x = x.detach().requires_grad_()
    z = f(x)
    return (z.detach(), *torch.autograd.grad((z * gz).sum(), (x, *params)))


def test_dense_form_is_the_pair():
    m, x = layer(), data()
    gz = torch.randn(T, B, O, S, S, dtype=torch.float64)
    params = (m.conv.weight, m.conv.bias)
    got, want = grads(m, x, params, gz), grads(pair(m), x, params, gz)
    assert 0 < got[0].mean() < 0.5
    for a, b in zip(got, want):
        assert torch.equal(a, b)


@pytest.mark.parametrize("v_threshold", [1.0, torch.tensor([0.8, 1.0, 1.2, 0.9, 1.1]).view(O, 1, 1)],
                         ids=["scalar", "per-channel"])
def test_sparse_form_gives_the_same_spikes_and_the_detached_gradient(v_threshold):
    x = data(1)
    sparse = layer(Backward.SPARSE, v_threshold=v_threshold)
    dense = layer(Backward.DENSE, detach_reset=True, v_threshold=v_threshold)
    dense.load_state_dict(sparse.state_dict())
    gz = torch.randn(T, B, O, S, S, dtype=torch.float64)
    got = grads(sparse, x, (sparse.conv.weight, sparse.conv.bias), gz)
    want = grads(dense, x, (dense.conv.weight, dense.conv.bias), gz)
    assert torch.equal(got[0], want[0]) and got[0].any()
    for a, b in zip(got[1:], want[1:]):
        assert b.abs().max() > 0
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


def test_batch_first_state_dict_and_step():
    m = layer()
    m.neuron.batch_first = True
    x = data(2)
    z = m(x.transpose(0, 1))
    m.neuron.batch_first = False
    assert torch.equal(z, m(x).transpose(0, 1))
    sparse = layer(Backward.SPARSE, seed=3)
    assert set(sparse.state_dict()) == set(m.state_dict()) >= {"conv.weight", "conv.bias"}
    sparse.load_state_dict(m.state_dict())
    assert torch.equal(sparse(x), m(x))
    m.reset()
    steps = torch.stack([m.step(x[t]) for t in range(T)])
    assert torch.equal(steps, m(x))


def test_bad_arguments_are_named():
    with pytest.raises(TypeError, match="neuron must be a spikeforge neuron module"):
        SpikingConv2d(C, O, 3, torch.nn.ReLU())
    with pytest.raises(ValueError, match="backward must be"):
        SpikingConv2d(C, O, 3, sf.nn.LIF(), backward="sparse")
    m = layer()
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3, H, W\)"):
        m(torch.zeros(B, C, S, S, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, 3, H, W\)"):
        m(torch.zeros(T, B, C + 1, S, S, dtype=torch.float64))
    carry = SpikingConv2d(C, O, 3, sf.nn.LIF(carry_state=True), backward=Backward.SPARSE).double()
    with pytest.raises(ValueError, match="carry_state=True"):
        carry(data())
    rec = SpikingConv2d(C, O, 3, sf.nn.LIF(record=True), backward=Backward.SPARSE).double()
    with pytest.raises(ValueError, match="record=True is not supported"):
        rec(data())
    reflect = layer(Backward.SPARSE)
    reflect.conv.padding_mode = "reflect"
    with pytest.raises(ValueError, match="padding_mode='zeros'"):
        reflect(data())


@pytest.mark.parametrize("backward", list(Backward))
def test_empty_batch(backward):
    m = SpikingConv2d(3, 6, 3, sf.nn.LIF(surrogate=Triangle(1.0)), backward=backward)
    x = torch.rand(5, 0, 3, 8, 8, requires_grad=True)
    z = m(x)
    assert z.shape == (5, 0, 6, 6, 6)
    z.sum().backward()
    assert x.grad.shape == x.shape and torch.equal(m.conv.weight.grad, torch.zeros_like(m.conv.weight))


@pytest.mark.parametrize("shape", [(6,), (6, 1, 1), (6, 6, 6)])
def test_sparse_takes_the_neuron_parameters_as_the_pair_does(shape):
    # a tensor parameter broadcasts to the output's (out, OH, OW) by the same rule on both paths
    # (trailing dimensions first), and one that does not is refused by name on both
    x = torch.rand(3, 2, 2, 8, 8, generator=torch.Generator().manual_seed(0)) * 3
    tau = 1.5 + torch.rand(shape, generator=torch.Generator().manual_seed(1))
    out = {}
    for bw in Backward:
        torch.manual_seed(0)
        m = SpikingConv2d(2, 6, 3, sf.nn.LIF(tau=tau, surrogate=Triangle(1.0)), backward=bw, cutoff=None)
        out[bw] = m(x)
        assert m.last_backend == "cpu"
    assert torch.equal(out[Backward.DENSE], out[Backward.SPARSE])
    for bw in Backward:
        with pytest.raises(ValueError, match="tau"):
            SpikingConv2d(2, 6, 3, sf.nn.LIF(tau=torch.full((216,), 2.0), surrogate=Triangle(1.0)), backward=bw)(x)


def test_sparse_cutoff():
    m = SpikingConv2d(2, 6, 3, sf.nn.LIF(), backward=Backward.SPARSE, cutoff=0.5)   # ATan: unbounded
    x = (torch.rand(3, 2, 2, 8, 8) * 3).requires_grad_()
    m(x).sum().backward()
    assert x.grad is not None and "cutoff=0.5" in repr(m)
    with pytest.raises(ValueError, match="Backward.SPARSE"):
        SpikingConv2d(2, 6, 3, sf.nn.LIF(), cutoff=0.5)

