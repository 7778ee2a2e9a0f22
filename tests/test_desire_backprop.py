"""Desire backpropagation (spikeforge.learning.DesireBackprop): desires and updates by hand."""
import math

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import Bound, Bounds, DesireBackprop, attach, desire_updates
from spikeforge.learning._rules.desire import desire_error, output_desire, propagate_desire


def test_output_desire_is_plus_one_at_the_label_minus_one_elsewhere():
    d = output_desire(torch.tensor([2, 0]), 3)
    assert d.tolist() == [[-1, -1, 1], [1, -1, -1]]


def test_propagate_desire_ternarises_the_signed_sum_through_the_weights():
    w = torch.tensor([[0.5, -0.2, 0.1], [0.1, 0.3, 0.05]])     # (out=2, in=3)
    d = torch.tensor([[1.0, -1.0]])                             # sums: 0.4, -0.5, 0.05
    assert propagate_desire(d, w, 0.1).tolist() == [[1.0, -1.0, 0.0]]
    assert propagate_desire(d, w, 0.45).tolist() == [[0.0, -1.0, 0.0]]


def test_error_from_desire_and_rate():
    d = torch.tensor([[1.0, 1.0, -1.0, 0.0]])
    r = torch.tensor([[0.5, 0.9, 0.25, 0.7]])
    assert torch.allclose(desire_error(d, r, 0.8), torch.tensor([[0.3, 0.0, -0.25, 0.0]]))


def test_desire_updates_two_layers_by_hand():
    w0, w1 = torch.eye(2), torch.tensor([[2.0, 0.1], [0.0, 2.0]])
    traces = [torch.tensor([[1.0, 0.5]]), torch.tensor([[0.4, 0.2]])]
    rates = [torch.tensor([[1.0, 0.5]]), torch.tensor([[0.5, 0.25]])]
    dws, desires = desire_updates([w0, w1], traces, rates, torch.tensor([1]), [0.0, 0.3], 1.0)
    assert desires[1].tolist() == [[-1.0, 1.0]]
    assert desires[0].tolist() == [[-1.0, 1.0]]                 # sums -2, 1.9
    assert torch.allclose(dws[1], torch.tensor([[-0.2, -0.1], [0.3, 0.15]]))    # e = (-0.5, 0.75)
    assert torch.allclose(dws[0], torch.tensor([[-1.0, -0.5], [0.5, 0.25]]))    # e = (-1, 0.5)
    dws, desires = desire_updates([w0, w1], traces, rates, torch.tensor([1]), [0.0, 2.5], 1.0)
    assert desires[0].tolist() == [[0.0, 0.0]] and dws[0].abs().sum() == 0


def _net():
    lif = dict(tau=4.0, decay_input=False, v_threshold=1.0, v_reset=0.0)
    net = nn.Sequential(nn.Linear(2, 2, bias=False), sf.nn.LIF(**lif), nn.Linear(2, 2, bias=False), sf.nn.LIF(**lif))
    with torch.no_grad():
        net[0].weight.copy_(2 * torch.eye(2))
        net[2].weight.copy_(torch.tensor([[2.0, 0.1], [0.0, 2.0]]))
    return net


@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_teach_after_a_forward_pass_by_hand(mode):
    """Input spikes: channel 0 at t=0,1, channel 1 at t=1; every layer copies them (weight 2 > threshold)."""
    x = torch.tensor([[[1.0, 0.0]], [[1.0, 1.0]]])     # (T=2, B=1, 2)
    net = _net()
    rule = DesireBackprop(hidden_threshold=0.0, output_threshold=0.3, margin=0.0, tau_trace=1 / math.log(2))
    learner = attach(net, rule, bounds=Bounds(Bound.NONE))
    if mode == "sequence":
        out = net(x)
    else:
        out = torch.stack([sf.step(net, x[t]) for t in range(2)])
    assert out[:, 0].tolist() == x[:, 0].tolist()
    learner.teach(torch.tensor([1]))
    # traces (decay 0.5): t0 (1, 0), t1 (1.5, 1): mean (1.25, 0.5) in both layers; rates (1, 0.5)
    # output desire (-1, +1), errors (-1, 0.5); hidden desire sign(-2, 1.9) = (-1, +1), errors (-1, 0.5)
    want = torch.tensor([[-1.25, -0.5], [0.625, 0.25]])
    assert torch.allclose(learner.pending["0"], want) and torch.allclose(learner.pending["2"], want)
    learner.apply(0.1)
    assert torch.allclose(net[0].weight, torch.tensor([[2 - 0.125, -0.05], [0.0625, 2.025]]))


def test_teach_errors():
    net = _net()
    learner = attach(net, DesireBackprop())
    with pytest.raises(RuntimeError, match="run the network on a batch first"):
        learner.teach(torch.tensor([0]))
    net(torch.ones(3, 2, 2))
    with pytest.raises(ValueError, match="labels has 1 entries but the forward pass had 2 samples"):
        learner.teach(torch.tensor([0]))
    with pytest.raises(ValueError, match=r"labels must be in \[0, 1\]"):
        learner.teach(torch.tensor([0, 5]))
    for labels in ([0, 1], torch.tensor([0.0, 1.0])):       # a list raised AttributeError
        with pytest.raises(ValueError, match=r"labels must be a \(B,\) integer tensor"):
            learner.teach(labels)
    with pytest.raises(ValueError, match="margin must be a non-negative finite number"):
        DesireBackprop(margin=-1.0)
    from spikeforge.learning import PairSTDP
    with pytest.raises(TypeError, match="takes no labels"):
        attach(_net(), PairSTDP()).teach(torch.tensor([0]))


def test_teach_refuses_layers_that_do_not_chain():
    net = nn.Sequential(nn.Linear(2, 3, bias=False), sf.nn.LIF(), nn.Linear(2, 2, bias=False), sf.nn.LIF())
    learner = attach(net, DesireBackprop())
    with pytest.raises(ValueError, match="must take the 3 neurons of layer '0'"):
        learner.teach(torch.tensor([0]))
