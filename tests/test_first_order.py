"""The fused and sparse paths compute first-order gradients in kernels autograd does not see:
``create_graph=True`` is refused with an error that says what to use, never answered with
gradients that silently count as constants (their first-order gradients: the other test files)."""
from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from spikeforge.nn import SparseMode, SpikeConv2d, SpikeLinear, SpikingConv2d
from spikeforge.nn.spiking_linear import Backward, SpikingLinear

TRI = sf.surrogate.Triangle(1.0)


def _spikes(*shape):
    return (torch.rand(*shape, generator=torch.Generator().manual_seed(0)) < 0.3).float()


CASES = {
    "neuron": (lambda: sf.nn.LIF(backend="cpu"), lambda: torch.randn(6, 2, 16), "backend='reference'"),
    "spiking_linear": (lambda: SpikingLinear(16, 8, sf.nn.LIF()), lambda: torch.randn(6, 2, 16), "unfused pair"),
    "spiking_linear_sparse": (lambda: SpikingLinear(16, 8, sf.nn.LIF(surrogate=TRI), backward=Backward.SPARSE),
                              lambda: torch.rand(6, 2, 16) * 3, "Backward.DENSE"),
    "spiking_conv_sparse": (lambda: SpikingConv2d(2, 4, 3, sf.nn.LIF(surrogate=TRI), backward=Backward.SPARSE),
                            lambda: torch.rand(4, 2, 2, 6, 6) * 3, "Backward.DENSE"),
    "spike_linear": (lambda: SpikeLinear(16, 8, mode=SparseMode.SPARSE), lambda: _spikes(6, 16), "SparseMode.DENSE"),
    "spike_conv": (lambda: SpikeConv2d(2, 4, 3, mode=SparseMode.SPARSE), lambda: _spikes(2, 2, 6, 6),
                   "SparseMode.DENSE"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_create_graph_is_refused_by_name(case):
    make, data, advice = CASES[case]
    m = make()
    x = data().requires_grad_()
    out = m(x).sum()
    with pytest.raises(RuntimeError, match="first-order gradients only") as e:
        torch.autograd.grad(out, x, create_graph=True)
    assert advice in str(e.value)
