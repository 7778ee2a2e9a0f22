"""Pieces of the competitive STDP network: sf.nn.LateralInhibition and AdaptiveThreshold."""
import copy
import math
import pickle

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import AdaptiveThreshold, Bound, Bounds, PairSTDP, VDSP, attach


def _if():
    return sf.nn.IF(v_threshold=1.0, v_reset=0.0)


def test_inhibition_by_hand():
    """IF neurons, inputs 1.0 and 0.6 every step: neuron 0 fires at t=0 and then every step;
    neuron 1 is inhibited by 0.5 per spike of neuron 0 one step later: 0.6, 0.7, 0.8 -> never fires."""
    x = torch.tensor([[1.0, 0.6]]).expand(3, 1, 2)
    z = sf.nn.LateralInhibition(_if(), 0.5)(x)
    assert z[:, 0].tolist() == [[1.0, 0.0], [1.0, 0.0], [1.0, 0.0]]
    free = _if()(x)   # without inhibition neuron 1 fires at t=1
    assert free[:, 0, 1].tolist() == [0.0, 1.0, 0.0]


def test_self_inhibition_and_strength_zero():
    x = torch.rand(6, 3, 4, generator=torch.Generator().manual_seed(0)) * 1.5
    assert torch.equal(sf.nn.LateralInhibition(_if(), 0.0)(x), _if()(x))
    z = sf.nn.LateralInhibition(_if(), 0.5, self_inhibition=True)(torch.tensor([[1.0]]).expand(3, 1, 1))
    assert z[:, 0, 0].tolist() == [1.0, 0.0, 1.0]    # 1 fires, then 1 - 0.5 = 0.5, then 1.5 fires


def test_step_mode_equals_sequence_and_reset():
    x = (torch.rand(8, 2, 5, generator=torch.Generator().manual_seed(1)) < 0.6).float() * 0.8
    layer = sf.nn.LateralInhibition(sf.nn.LIF(tau=3.0), 0.3)
    seq = layer(x)
    sf.reset(layer)
    assert torch.equal(torch.stack([sf.step(layer, x[t]) for t in range(8)]), seq)
    assert torch.equal(layer(x), seq)   # a sequence call starts from rest


def test_attach_learns_the_synapse_before_lateral_inhibition_in_both_modes():
    g = torch.Generator().manual_seed(2)
    x = (torch.rand(12, 3, 6, generator=g) < 0.4).float()
    rule = PairSTDP(a_plus=0.1, a_minus=0.05, tau_pre=3.0, tau_post=4.0)

    def make():
        lin = nn.Linear(6, 4, bias=False)
        with torch.no_grad():
            lin.weight.copy_(torch.rand(4, 6, generator=torch.Generator().manual_seed(0)) * 2)
        return nn.Sequential(lin, sf.nn.LateralInhibition(sf.nn.LIF(tau=2.0), 0.4))

    net = make()
    learner = attach(net, rule)
    z = net(x)
    z = z.detach()
    s, want = rule.run(rule.init(x[0], z[0]), x, z)
    assert 0 < z.sum() < 0.5 * z.numel() and torch.allclose(learner.pending["0"], want)
    net2 = make()
    learner2 = attach(net2, rule)
    sf.reset(net2)
    z2 = torch.stack([sf.step(net2, x[t]) for t in range(12)])
    assert torch.equal(z2, z) and torch.allclose(learner2.pending["0"], want)
    learner2.remove()
    assert not net2[1]._step_hooks


def test_vdsp_reads_the_wrapped_neurons_membrane():
    net = nn.Sequential(nn.Linear(1, 1, bias=False), sf.nn.LateralInhibition(_if(), 1.0))
    with torch.no_grad():
        net[0].weight.fill_(0.4)
    learner = attach(net, VDSP(a_plus=1.0, a_minus=1.0, v_rest=0.1))
    net(torch.ones(3, 1, 1))          # v before each step: 0, 0.4, 0.8 -> dw = -0.1 + 0.3 + 0.7
    assert learner.pending["0"].item() == pytest.approx(0.9)


def test_adaptive_threshold_by_hand():
    """Thresholds move by theta_plus per spike (summed over batch and time) and decay per step."""
    net = nn.Sequential(nn.Linear(2, 2, bias=False), _if())
    with torch.no_grad():
        net[0].weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 0.0]]))
    home = AdaptiveThreshold(theta_plus=0.1, tau_theta=20.0)
    learner = attach(net, PairSTDP(), bounds=Bounds(Bound.NONE), homeostasis=home)
    x = torch.zeros(4, 2, 2)
    x[:, :, 0] = 1.0                       # neuron 0 fires 4 steps x 2 samples = 8 spikes
    net(x)
    learner.apply(0.0)
    assert net[1].v_threshold.tolist() == pytest.approx([1.8, 1.0])
    net(torch.zeros(5, 2, 2))             # no spikes, 5 steps of decay
    learner.apply(0.0)
    theta = 0.8 * math.exp(-5 / 20.0)
    assert net[1].v_threshold.tolist() == pytest.approx([1.0 + theta, 1.0])
    assert learner.thresholds["0"].tolist() == pytest.approx([theta, 0.0])


def test_adaptive_threshold_errors():
    with pytest.raises(ValueError, match="theta_plus must be a non-negative finite number"):
        AdaptiveThreshold(theta_plus=-1.0)
    with pytest.raises(ValueError, match="tau_theta must be a positive number"):
        AdaptiveThreshold(tau_theta=0.0)
    AdaptiveThreshold(tau_theta=math.inf)   # no decay is allowed
    net = nn.Sequential(nn.Linear(2, 2), sf.nn.LIF())
    with pytest.raises(ValueError, match="has no parameter 'theta'"):
        attach(net, PairSTDP(), homeostasis=AdaptiveThreshold(param="theta"))
    with pytest.raises(TypeError, match="homeostasis must be an AdaptiveThreshold"):
        attach(net, PairSTDP(), homeostasis=0.1)
    with pytest.raises(RuntimeError, match="has no homeostasis"):
        attach(net, PairSTDP()).thresholds


def test_lateral_inhibition_errors():
    with pytest.raises(ValueError, match="strength must be a non-negative finite number"):
        sf.nn.LateralInhibition(sf.nn.LIF(), -1.0)
    with pytest.raises(TypeError, match="spiking spikeforge.nn.Neuron"):
        sf.nn.LateralInhibition(sf.nn.LI(), 1.0)
    with pytest.raises(ValueError, match="carry_state=False"):
        sf.nn.LateralInhibition(sf.nn.LIF(carry_state=True), 1.0)
    layer = sf.nn.LateralInhibition(sf.nn.LIF(), 1.0)
    sf.step(layer, torch.ones(2, 3))
    with pytest.raises(ValueError, match="call reset"):
        sf.step(layer, torch.ones(4, 3))


def test_pickles_and_copies_mid_stream():
    net = nn.Sequential(nn.Linear(3, 4), sf.nn.LateralInhibition(sf.nn.LIF(), 0.5))
    attach(net, PairSTDP()).remove()
    x = torch.rand(5, 2, 3) * 2
    sf.step(net, x[0])
    net[1]._step_hooks["probe"] = lambda *a: None          # a hook is not copied
    twin = pickle.loads(pickle.dumps(net))
    assert not twin[1]._step_hooks and torch.equal(twin[1].last_spikes, net[1].last_spikes)
    assert torch.equal(copy.deepcopy(net)(x), net(x))


def test_adaptive_threshold_on_a_conv2d_is_per_channel():
    conv = nn.Conv2d(1, 2, 2, bias=False)
    with torch.no_grad():
        conv.weight.copy_(torch.stack([torch.full((1, 2, 2), 1.0), torch.zeros(1, 2, 2)]))
    net = nn.Sequential(sf.nn.TimeDistributed(conv), _if())
    learner = attach(net, PairSTDP(), bounds=Bounds(Bound.NONE), homeostasis=AdaptiveThreshold(0.01, math.inf))
    net(torch.ones(3, 1, 1, 3, 3))         # channel 0 fires at all 4 positions, 3 steps: 12 spikes
    learner.apply(0.0)
    assert net[1].v_threshold.shape == (2, 1, 1)
    assert net[1].v_threshold.flatten().tolist() == pytest.approx([1.12, 1.0])
