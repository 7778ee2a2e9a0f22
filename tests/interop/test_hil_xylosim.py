"""Hardware in the loop on SynSense's simulator itself: ``hil.XyloSimSubstrate`` (xylosim 0.1.3
through Rockpool 3.1) observes what spikeforge's integer Xylo mode (``hil.XyloInteger``)
computes, and the straight-through gradient reaches the software weights."""
from __future__ import annotations

import torch
from torch import nn

import spikeforge as sf
from spikeforge.losses import max_membrane_ce
from spikeforge.quant import hil


def _net() -> nn.Sequential:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 16), sf.nn.LIF(reset="soft", tau=4.0), nn.Linear(16, 3), sf.nn.LI(tau=8.0))
    with torch.no_grad():
        net[0].weight.mul_(3.0)
    return net


EVENTS = torch.randint(0, 4, (20, 6, 4), generator=torch.Generator().manual_seed(2)).float()


def test_xylosim_substrate_observes_what_the_integer_mode_computes():
    net = _net()
    a, b = hil.InTheLoop(net, hil.XyloInteger()), hil.InTheLoop(net, hil.XyloSimSubstrate())
    out_a, out_b = a(EVENTS), b(EVENTS)
    assert torch.equal(out_a, out_b)
    assert torch.equal(a.observations[1].output, b.observations[1].output)
    assert a.observations[1].output.sum() > 0
    max_membrane_ce(out_b, torch.tensor([0, 1, 2, 0, 1, 2])).backward()
    assert net[0].weight.grad.abs().sum() > 0
