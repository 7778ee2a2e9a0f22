"""VDSP in the published orientation (Garg et al. 2022): ``trigger=Trigger.POST`` updates at a
postsynaptic spike from the presynaptic neurons' membrane. Hand-computed values."""
import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import VDSP, Bound, Bounds, RewardSTDP, Trigger, attach


def _net():
    """Input LIF neurons (tau 2, reset to -1, rest 0) -> Linear(3 -> 1) -> LIF. Input channel 2 is
    a teacher with weight 5 that makes the post neuron fire in the step it fires."""
    lin = nn.Linear(3, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[0.0, 0.0, 5.0]]))
    return nn.Sequential(sf.nn.LIF(tau=2.0, v_reset=-1.0, decay_input=False), lin, sf.nn.LIF(tau=2.0, v_reset=0.0))


def _input():
    """4 steps: channel 0 gets 1.0 at t=0 (fires at once: membrane -1, -0.5, -0.25 after),
    channel 1 gets 0.4 every step (0.4, 0.6, 0.7: never fires), the teacher fires at t=2."""
    x = torch.zeros(4, 1, 3)
    x[0, 0, 0] = 1.0
    x[:, 0, 1] = 0.4
    x[2, 0, 2] = 1.0
    return x


def _run(net, x, mode):
    if mode == "sequence":
        return net(x)
    sf.reset(net)
    return torch.stack([sf.step(net, x[t]) for t in range(x.shape[0])])


@pytest.mark.parametrize("mode", ["sequence", "step"])
def test_post_trigger_reads_the_pre_membrane_at_the_post_spike(mode):
    net = _net()
    learner = attach(net, VDSP(a_plus=0.2, a_minus=0.3, v_rest=0.0, trigger=Trigger.POST), bounds=Bounds(Bound.NONE))
    z = _run(net, _input(), mode)
    assert z[:, 0, 0].tolist() == [0.0, 0.0, 1.0, 0.0]              # one post spike, at t=2
    dw = learner.pending["1"][0]
    # at t=2: pre 0 recovering from its reset (u = -0.25, below rest): potentiation 0.2 * 0.25;
    # pre 1 charged above rest without firing (u = 0.7): depression -0.3 * 0.7; the teacher
    # fired in this very step (u = -1): 0.2 * 1
    assert dw.tolist() == pytest.approx([0.2 * 0.25, -0.3 * 0.7, 0.2 * 1.0], rel=1e-6)


def test_post_trigger_needs_no_post_spike_and_no_pre_layer_errors():
    net = _net()
    x = _input()
    x[2, 0, 2] = 0.0                                                # no teacher: the post neuron never fires
    learner = attach(net, VDSP(trigger=Trigger.POST))
    net(x)
    assert learner.pending["1"].abs().sum() == 0                    # only the post spike triggers an update
    bare = nn.Sequential(nn.Linear(3, 1), sf.nn.LIF())
    with pytest.raises(ValueError, match="presynaptic neurons' membrane"):
        attach(bare, VDSP(trigger=Trigger.POST))
    with pytest.raises(TypeError, match="trigger"):
        VDSP(trigger="post")


def test_pre_trigger_is_still_the_default_and_reward_forwards_the_orientation():
    assert VDSP().trigger is Trigger.PRE and not VDSP().reads_pre
    assert RewardSTDP(VDSP(trigger=Trigger.POST)).reads_pre
    net = _net()
    learner = attach(net, RewardSTDP(VDSP(a_plus=0.2, a_minus=0.3, trigger=Trigger.POST), tau_e=1e9))
    net(_input())
    learner.reward(1.0)
    assert learner.pending["1"][0].tolist() == pytest.approx([0.05, -0.21, 0.2], rel=1e-5)


def test_vdsp_benchmark_post_mode_runs(capsys):
    import os
    import sys
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
    vdsp_digits = pytest.importorskip("vdsp_digits")
    vdsp_digits.main(["--mode", "post", "--seeds", "0", "--neurons", "5", "--epochs", "1", "--train-limit", "32",
                      "--steps", "10", "--eval-steps", "10", "--a-plus", "0.05"])
    out = capsys.readouterr().out
    assert "# post," in out and "trigger=<Trigger.POST" in out and "mean test accuracy over 1 seed(s)" in out
