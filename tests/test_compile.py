"""``torch.compile`` sees a fused neuron layer as one op: no graph breaks, same values and gradients."""
from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

import spikeforge as sf


def _net(backend: str) -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 16), sf.nn.LIF(backend=backend), nn.Linear(16, 16),
                        sf.nn.PLIF(backend=backend, record=True), nn.Linear(16, 3), sf.nn.LI(backend=backend))
    with torch.no_grad():
        for m in (net[0], net[2]):
            m.weight.mul_(3.0)
            m.bias.add_(0.5)
    return net


@pytest.mark.parametrize("backend", ["cpu", "reference"])
def test_no_graph_breaks(backend):
    x = torch.rand(8, 4, 6) * 3
    explained = torch._dynamo.explain(_net(backend))(x)
    assert explained.graph_break_count == 0, explained.break_reasons
    assert explained.graph_count == 1


def test_compiled_values_and_gradients_equal_eager():
    eager = _net("cpu")
    compiled_net = copy.deepcopy(eager)
    compiled = torch.compile(compiled_net, backend="aot_eager", fullgraph=True)
    x = torch.rand(8, 4, 6) * 3
    y, yc = eager(x), compiled(x)
    assert y.abs().sum() > 0
    torch.testing.assert_close(yc, y, rtol=0, atol=0)
    y.square().sum().backward()
    yc.square().sum().backward()
    for (name, p), pc in zip(eager.named_parameters(), compiled_net.parameters()):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(pc.grad, p.grad, rtol=1e-6, atol=1e-7)
    torch.testing.assert_close(compiled_net[3].trace.v, eager[3].trace.v, rtol=0, atol=0)
    assert compiled_net[1].last_backend == "cpu"


def test_compiled_forward_still_rejects_nan_input():
    compiled = torch.compile(_net("cpu"), backend="aot_eager", fullgraph=True)
    x = torch.rand(8, 4, 6)
    compiled(x)
    x[2, 1, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN"):
        compiled(x)
