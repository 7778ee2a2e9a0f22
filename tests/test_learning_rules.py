"""Local plasticity rules (spikeforge.learning.attach): updates equal hand-computed ones."""
import math
import re
from pathlib import Path

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.learning import (VDSP, Bound, Bounds, Normalise, PairSTDP, RewardSTDP, TripletSTDP,
                                 attach)

TEACH = 10.0   # weight of the teacher channel: one teacher spike makes the post neuron fire at once


def _net(w_pre=0.0, w_teach=TEACH, **lif):
    """Linear(2 -> 1): channel 0 is the studied pre neuron, channel 1 a teacher that sets post spikes."""
    lin = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        lin.weight.copy_(torch.tensor([[w_pre, w_teach]]))
    return nn.Sequential(lin, sf.nn.LIF(tau=2.0, **lif))


def _input(T, pre=(), teach=(), teach_value=1.0):
    x = torch.zeros(T, 1, 2)
    for t in pre:
        x[t, 0, 0] = 1.0
    for t in teach:
        x[t, 0, 1] = teach_value
    return x


def _run(net, x, mode):
    if mode == "sequence":
        return net(x)
    sf.reset(net)
    return torch.stack([sf.step(net, x[t]) for t in range(x.shape[0])])


MODES = ["sequence", "step"]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [0, 1, 3])
def test_pair_ltp_at_plus_dt(mode, k):
    rule = PairSTDP(a_plus=0.02, a_minus=0.03, tau_pre=5.0, tau_post=7.0, dt=0.5)
    net = _net()
    learner = attach(net, rule)
    z = _run(net, _input(6, pre=[1], teach=[1 + k]), mode)
    assert z[:, 0, 0].tolist() == [1.0 if t == 1 + k else 0.0 for t in range(6)]
    want = 0.02 * math.exp(-k * 0.5 / 5.0) - (0.03 if k == 0 else 0.0)   # same step: LTP and LTD
    assert learner.pending["0"][0, 0].item() == pytest.approx(want, rel=1e-6)


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("k", [1, 4])
def test_pair_ltd_at_minus_dt(mode, k):
    rule = PairSTDP(a_plus=0.02, a_minus=0.03, tau_pre=5.0, tau_post=7.0, dt=0.5)
    net = _net()
    learner = attach(net, rule)
    _run(net, _input(6, pre=[1 + k], teach=[1]), mode)
    assert learner.pending["0"][0, 0].item() == pytest.approx(-0.03 * math.exp(-k * 0.5 / 7.0), rel=1e-6)


def test_pair_trace_form_equals_all_to_all_sum():
    """On random trains the trace form equals the sum over all pre/post pairs."""
    g = torch.Generator().manual_seed(0)
    T, n_in, n_out = 30, 3, 2
    pre = (torch.rand(T, 1, n_in, generator=g) < 0.3).float()
    post = (torch.rand(T, 1, n_out, generator=g) < 0.3).float()
    rule = PairSTDP(a_plus=0.5, a_minus=0.25, tau_pre=4.0, tau_post=6.0, dt=1.0)
    s, total = rule.init(pre[0], post[0]), torch.zeros(n_out, n_in)
    for t in range(T):
        s, dw = rule.step(s, pre[t], post[t])
        total += dw
    want = torch.zeros(n_out, n_in)
    for tp in range(T):
        for tq in range(T):
            d = tq - tp   # post time - pre time
            if d >= 0:
                want += 0.5 * math.exp(-d / 4.0) * torch.outer(post[tq, 0], pre[tp, 0])
            if d <= 0:
                want -= 0.25 * math.exp(d / 6.0) * torch.outer(post[tq, 0], pre[tp, 0])
    torch.testing.assert_close(total, want)


@pytest.mark.parametrize("mode", MODES)
def test_triplet_pre_post_post(mode):
    rule = TripletSTDP(a2_plus=0.01, a3_plus=0.2, a2_minus=0.0, tau_plus=4.0, tau_minus=6.0, tau_x=8.0, tau_y=10.0)
    net = _net()
    learner = attach(net, rule)
    _run(net, _input(7, pre=[0], teach=[2, 5]), mode)
    want = 0.01 * math.exp(-2 / 4.0) + math.exp(-5 / 4.0) * (0.01 + 0.2 * math.exp(-3 / 10.0))
    assert learner.pending["0"][0, 0].item() == pytest.approx(want, rel=1e-6)


def test_triplet_post_pre_pre_uses_a3_minus():
    rule = TripletSTDP(a2_plus=0.0, a3_plus=0.0, a2_minus=0.01, a3_minus=0.1, tau_plus=4.0, tau_minus=6.0,
                       tau_x=8.0, tau_y=10.0)
    net = _net()
    learner = attach(net, rule)
    net(_input(7, pre=[2, 4], teach=[0]))
    want = -math.exp(-2 / 6.0) * 0.01 - math.exp(-4 / 6.0) * (0.01 + 0.1 * math.exp(-2 / 8.0))
    assert learner.pending["0"][0, 0].item() == pytest.approx(want, rel=1e-6)


def test_triplet_with_no_triplet_terms_is_pair_stdp():
    g = torch.Generator().manual_seed(1)
    pre, post = (torch.rand(20, 2, 3, generator=g) < 0.4).float(), (torch.rand(20, 2, 2, generator=g) < 0.4).float()
    trip = TripletSTDP(a2_plus=0.3, a3_plus=0.0, a2_minus=0.2, a3_minus=0.0, tau_plus=3.0, tau_minus=5.0)
    pair = PairSTDP(a_plus=0.3, a_minus=0.2, tau_pre=3.0, tau_post=5.0)
    st, sp = trip.init(pre[0], post[0]), pair.init(pre[0], post[0])
    for t in range(20):
        st, dt_ = trip.step(st, pre[t], post[t])
        sp, dp = pair.step(sp, pre[t], post[t])
        torch.testing.assert_close(dt_, dp)


@pytest.mark.parametrize("mode", MODES)
def test_reward_sequence(mode):
    rule = RewardSTDP(PairSTDP(a_plus=0.02, a_minus=0.0, tau_pre=5.0), tau_e=10.0)
    net = _net(w_pre=0.0)
    learner = attach(net, rule, bounds=Bounds(Bound.NONE))
    _run(net, _input(5, pre=[0], teach=[2]), mode)
    assert learner.pending["0"].abs().sum() == 0          # no reward yet: nothing to apply
    e = 0.02 * math.exp(-2 / 5.0) * math.exp(-2 / 10.0)   # LTP at t=2, then 2 steps of eligibility decay
    learner.reward(0.5)
    learner.reward(torch.tensor(-0.25))
    assert learner.pending["0"][0, 0].item() == pytest.approx(0.25 * e, rel=1e-6)
    learner.apply(lr=0.1)
    assert net[0].weight[0, 0].item() == pytest.approx(0.1 * 0.25 * e, rel=1e-6)
    assert learner.pending["0"].abs().sum() == 0


@pytest.mark.parametrize("mode", MODES)
def test_vdsp_reads_the_post_membrane_before_the_pre_spike(mode):
    rule = VDSP(a_plus=0.2, a_minus=0.3, v_rest=0.1)
    net = _net(w_teach=1.0)   # a teacher spike charges the post to v = dt/tau * 1 = 0.5 (below threshold)
    learner = attach(net, rule)
    _run(net, _input(3, pre=[1], teach=[0]), mode)
    assert learner.pending["0"][0, 0].item() == pytest.approx(0.2 * (0.5 - 0.1), rel=1e-6)
    net2 = _net(w_teach=TEACH)   # the teacher makes the post fire at t=0: reset to v_reset = 0 < v_rest
    learner2 = attach(net2, rule)
    _run(net2, _input(3, pre=[1], teach=[0]), mode)
    assert learner2.pending["0"][0, 0].item() == pytest.approx(-0.3 * 0.1, rel=1e-6)


@pytest.mark.parametrize("rule", [PairSTDP(), TripletSTDP(a3_minus=0.01), RewardSTDP(PairSTDP()), VDSP(v_rest=0.2),
                                  RewardSTDP(VDSP(v_rest=0.2))],
                         ids=["pair", "triplet", "reward", "vdsp", "reward-vdsp"])
def test_sequence_equals_step_on_a_two_layer_net(rule):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(6, 5), sf.nn.LIF(tau=3.0), nn.Linear(5, 4), sf.nn.LIF(tau=3.0))
    with torch.no_grad():
        for lin in (net[0], net[2]):
            lin.weight.uniform_(0.3, 1.5)
    x = (torch.rand(12, 3, 6) < 0.5).float() * 2
    learner = attach(net, rule)
    net(x)
    if isinstance(rule, RewardSTDP):
        learner.reward(1.0)
    seq = learner.pending
    learner.reset()
    _run(net, x, "step")
    if isinstance(rule, RewardSTDP):
        learner.reward(1.0)
    assert set(seq) == {"0", "2"}
    for name, dw in learner.pending.items():
        torch.testing.assert_close(dw, seq[name])
        assert dw.abs().sum() > 0


@pytest.mark.parametrize("rule", [TripletSTDP(), VDSP(v_rest=0.2)], ids=["triplet", "vdsp"])
def test_carry_state_carries_traces_across_calls(rule):
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(4, 3, bias=False), sf.nn.LIF(tau=3.0, carry_state=True))
    with torch.no_grad():
        net[0].weight.uniform_(0.3, 1.5)
    x = (torch.rand(10, 2, 4) < 0.5).float() * 2
    learner = attach(net, rule)
    net(x)
    whole = learner.pending["0"]
    learner.reset()
    sf.reset(net)
    net(x[:4])
    net(x[4:])
    torch.testing.assert_close(learner.pending["0"], whole)
    assert whole.abs().sum() > 0


def test_batch_first_net_gives_the_time_first_update():
    torch.manual_seed(3)
    x = (torch.rand(8, 2, 4) < 0.5).float() * 2
    out = []
    for bf in (False, True):
        torch.manual_seed(4)
        net = nn.Sequential(nn.Linear(4, 3), sf.nn.LIF(tau=3.0, batch_first=bf))
        with torch.no_grad():
            net[0].weight.uniform_(0.3, 1.5)
        learner = attach(net, TripletSTDP(a3_minus=0.01))
        net(x.transpose(0, 1) if bf else x)
        out.append(learner.pending["0"])
    torch.testing.assert_close(out[0], out[1])
    assert out[0].abs().sum() > 0


class _Hebb:
    """A user rule without run(): plain Hebb, dw = post^T pre."""
    needs_v = False

    def init(self, pre, post):
        return ()

    def step(self, s, pre, post, v=None):
        return (), post.T @ pre


def test_a_user_rule_without_run_is_stepped():
    net = _net()
    learner = attach(net, _Hebb())
    net(_input(4, pre=[1, 2], teach=[2, 3]))
    assert learner.pending["0"][0].tolist() == [1.0, 2.0]


def test_apply_with_autograd_and_remove():
    net = _net(w_pre=0.5)
    learner = attach(net, PairSTDP(a_plus=0.1, a_minus=0.0, tau_pre=5.0), bounds=Bounds(Bound.NONE))
    out = net(_input(4, pre=[0], teach=[1]).requires_grad_())
    out.sum().backward()
    learner.apply()
    assert net[0].weight[0, 0].item() == pytest.approx(0.5 + 0.1 * math.exp(-1 / 5.0), rel=1e-6)
    assert not net[0].weight.grad is None
    learner.remove()
    net(_input(4, pre=[0], teach=[1]))
    assert learner.pending["0"].abs().sum() == 0


def test_hard_and_soft_bounds_and_normalise():
    w0 = torch.tensor([[0.2, 0.9], [0.5, 0.1]])
    dw = torch.tensor([[0.5, 0.5], [-1.0, -0.05]])
    w = w0.clone()
    Bounds(Bound.HARD, 0.0, 1.0).update(w, dw)
    torch.testing.assert_close(w, torch.tensor([[0.7, 1.0], [0.0, 0.05]]))
    w = w0.clone()
    Bounds(Bound.SOFT, 0.0, 1.0).update(w, dw)
    torch.testing.assert_close(w, torch.tensor([[0.2 + 0.5 * 0.8, 0.9 + 0.5 * 0.1], [0.0, 0.1 - 0.05 * 0.1]]))
    w = torch.tensor([[1.0, 3.0], [0.0, 0.0]])
    assert Normalise(total=2.0)(w) == 1   # the zero row cannot be scaled
    torch.testing.assert_close(w, torch.tensor([[0.5, 1.5], [0.0, 0.0]]))


def test_apply_bounds_and_normalise_on_the_net():
    net = nn.Sequential(nn.Linear(3, 2, bias=False), sf.nn.LIF())
    with torch.no_grad():
        net[0].weight.fill_(0.5)
    learner = attach(net, PairSTDP(), bounds=Bounds(Bound.HARD, 0.0, 0.6), normalise=Normalise(total=3.0))
    learner.synapses["0"].dw.fill_(1.0)
    assert learner.apply(lr=1.0) == 0
    torch.testing.assert_close(net[0].weight, torch.full((2, 3), 1.0))


def test_errors_name_the_argument():
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d synapse"):
        attach(nn.Sequential(sf.nn.LIF()), PairSTDP())
    with pytest.raises(ValueError, match="no nn.Linear or nn.Conv2d synapse"):
        attach(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)), PairSTDP())
    with pytest.raises(ValueError, match="layers: 'nope'"):
        attach(_net(), PairSTDP(), layers=["nope"])
    with pytest.raises(ValueError, match="tau_pre must be a positive"):
        PairSTDP(tau_pre=-1.0)
    with pytest.raises(ValueError, match="a3_plus must be a non-negative"):
        TripletSTDP(a3_plus=float("nan"))
    with pytest.raises(ValueError, match="tau_e"):
        RewardSTDP(tau_e=0.0)
    with pytest.raises(TypeError, match="stdp must be"):
        RewardSTDP(stdp=RewardSTDP())
    with pytest.raises(ValueError, match="w_min must be < w_max"):
        Bounds(Bound.HARD, 1.0, 0.0)
    with pytest.raises(TypeError, match="kind must be a Bound"):
        Bounds("hard")
    with pytest.raises(ValueError, match="total must be"):
        Normalise(total=0)
    with pytest.raises(TypeError, match="rule must be"):
        attach(_net(), "stdp")
    with pytest.raises(ValueError, match="neuron state 'q'"):
        attach(_net(), VDSP(state="q"))
    learner = attach(_net(), PairSTDP())
    with pytest.raises(TypeError, match="takes no reward"):
        learner.reward(1.0)
    with pytest.raises(ValueError, match="lr must be"):
        learner.apply(lr=float("inf"))
    rl = attach(_net(), RewardSTDP())
    with pytest.raises(RuntimeError, match="not seen any activity"):
        rl.reward(1.0)
    rl.net(_input(3, pre=[0]))
    with pytest.raises(ValueError, match="r must be a scalar"):
        rl.reward(torch.ones(2))


def test_reset_net_restarts_carried_traces():
    net = nn.Sequential(nn.Linear(2, 1), sf.nn.LIF(carry_state=True))
    learner = attach(net, PairSTDP())
    net(torch.ones(3, 2, 2))
    sf.reset(net)   # neuron at rest: the traces restart too (a new batch size is fine)
    net(torch.ones(3, 1, 2))
    assert learner.synapses["0"].rows == 1


def test_shape_mismatch_and_missing_pre():
    net = nn.Sequential(nn.Linear(4, 4), nn.Unflatten(2, (2, 2)), sf.nn.LIF())
    attach(net, PairSTDP())
    with pytest.raises(ValueError, match=r"synapse '0'.*\(\.\.\., 4\)"):
        net(torch.ones(3, 1, 4))
    net = _net()
    attach(net, PairSTDP())
    with pytest.raises(RuntimeError, match="ran without its synapse '0'"):
        net[1](torch.ones(3, 1, 1))


def _conv_reference(conv, pre, post, rule):
    """PairSTDP on a Conv2d written out with loops over kernel offsets and output positions."""
    T, B, C, H, W = pre.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw_) = conv.kernel_size, conv.stride, conv.padding, conv.dilation
    x_pre, x_post = torch.zeros_like(pre[0]), torch.zeros_like(post[0])
    out = torch.zeros_like(conv.weight)
    Ho, Wo = post.shape[-2:]
    for t in range(T):
        x_pre = x_pre * math.exp(-rule.dt / rule.tau_pre) + pre[t]
        x_post = x_post * math.exp(-rule.dt / rule.tau_post) + post[t]
        xp = torch.nn.functional.pad(x_pre, (pw, pw, ph, ph))
        sp = torch.nn.functional.pad(pre[t], (pw, pw, ph, ph))
        for i in range(kh):
            for j in range(kw):
                for y in range(Ho):
                    for x in range(Wo):
                        a, b = y * sh + i * dh, x * sw + j * dw_
                        out[:, :, i, j] += rule.a_plus * post[t, :, :, y, x].T @ xp[:, :, a, b]
                        out[:, :, i, j] -= rule.a_minus * x_post[:, :, y, x].T @ sp[:, :, a, b]
    return out


@pytest.mark.parametrize("mode", MODES)
def test_conv2d_pair_stdp_equals_the_loop_reference(mode):
    torch.manual_seed(2)
    conv = nn.Conv2d(2, 3, kernel_size=(2, 3), stride=(1, 2), padding=1, dilation=(2, 1), bias=False)
    with torch.no_grad():
        conv.weight.uniform_(0.2, 1.0)
    net = nn.Sequential(sf.nn.TimeDistributed(conv), sf.nn.LIF(tau=2.0))
    rule = PairSTDP(a_plus=0.3, a_minus=0.2, tau_pre=3.0, tau_post=4.0)
    learner = attach(net, rule, normalise=Normalise(total=1.0))
    x = (torch.rand(6, 2, 2, 5, 6) < 0.5).float() * 2
    z = _run(net, x, mode)
    assert z.sum() > 0
    torch.testing.assert_close(learner.pending["0.module"], _conv_reference(conv, x, z, rule), rtol=1e-5, atol=1e-5)
    learner.apply()
    torch.testing.assert_close(conv.weight.sum(dim=(1, 2, 3)), torch.ones(3))


def test_conv2d_rules_run_and_bad_conv_is_refused():
    for rule in (TripletSTDP(), RewardSTDP(), VDSP(v_rest=0.2)):
        net = nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(1, 2, 3)), sf.nn.LIF())
        learner = attach(net, rule)
        net(torch.ones(4, 2, 1, 5, 5))
        if isinstance(rule, RewardSTDP):
            learner.reward(1.0)
        assert learner.pending["0.module"].shape == (2, 1, 3, 3)
    with pytest.raises(ValueError, match="groups=2"):
        attach(nn.Sequential(nn.Conv2d(2, 2, 3, groups=2), sf.nn.LIF()), PairSTDP())


def test_docs_demo_runs():
    text = (Path(__file__).resolve().parents[1] / "docs" / "local_learning.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert blocks
    for block in blocks:
        exec(block, {})


def test_label_assignment_by_neuron():
    from spikeforge.learning import assign_labels, assigned_scores
    resp = torch.tensor([[3.0, 0.0, 1.0], [1.0, 0.0, 0.0], [0.0, 2.0, 4.0]])   # (samples, neurons)
    labels = torch.tensor([0, 0, 2])                                            # class 1 has no samples
    assignment = assign_labels(resp, labels, classes=3)
    assert assignment.tolist() == [0, 2, 2]
    scores = assigned_scores(torch.tensor([[1.0, 2.0, 4.0]]), assignment, classes=3)
    assert scores[0, 0] == 1.0 and scores[0, 1] == -float("inf") and scores[0, 2] == 3.0
    with pytest.raises(ValueError, match="labels must be a \\(3,\\) tensor"):
        assign_labels(resp, torch.tensor([0, 1]), classes=3)
    with pytest.raises(ValueError, match="responses must be a \\(samples, neurons\\) tensor"):
        assigned_scores(torch.ones(3), assignment, classes=3)
