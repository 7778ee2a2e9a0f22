"""Streaming: ``module.step`` and ``spikeforge.step(net, x_t)`` equal the sequence call;
``record``, ``last_backend``, ``Monitor`` and ``batch_first``."""
from __future__ import annotations

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.monitor import Monitor
from spikeforge.nn.delay import DelayPer

T, B = 7, 3
BACKENDS = ["reference", "cpu"]


def _mlp(backend):
    return nn.Sequential(nn.Linear(5, 8), sf.nn.LIF(backend=backend), nn.Linear(8, 8),
                         sf.nn.CubaLIF(backend=backend, tau_syn=2.0, tau_mem=3.0), nn.Linear(8, 3),
                         sf.nn.LI(backend=backend))


def _conv(backend):
    return nn.Sequential(sf.nn.TimeDistributed(nn.Conv2d(2, 4, 3, padding=1)), sf.nn.LIF(backend=backend),
                         sf.nn.AvgPool2d(2), sf.nn.Flatten(), nn.Linear(4 * 3 * 3, 3), sf.nn.LI(backend=backend))


def _recurrent(backend):
    return nn.Sequential(nn.Linear(5, 8), sf.nn.Recurrent(sf.nn.ALIF(backend=backend), 8), nn.Linear(8, 3),
                         sf.nn.LI(backend=backend))


def _delay(backend):
    return nn.Sequential(nn.Linear(5, 8), sf.nn.LIF(backend=backend), sf.nn.Delay(3, 8),
                         sf.nn.Delay(2, 8, per=DelayPer.SYNAPSE, out_features=4), sf.nn.LI(backend=backend))


NETS = {"mlp": (_mlp, (5,)), "conv": (_conv, (2, 6, 6)), "recurrent": (_recurrent, (5,)), "delay": (_delay, (5,))}


def _net_and_input(kind, backend):
    torch.manual_seed(0)
    make, feat = NETS[kind]
    net = make(backend).double()
    with torch.no_grad():
        for m in net.modules():
            if isinstance(m, (nn.Linear, nn.Conv2d)):
                m.weight.mul_(3.0)
    x = (torch.rand(T, B, *feat, dtype=torch.float64) * 2.0).requires_grad_()
    return net, x


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("kind", sorted(NETS))
def test_network_step_equals_sequence(kind, backend):
    net, x = _net_and_input(kind, backend)
    y_seq = net(x)
    g_seq = torch.autograd.grad(y_seq.square().sum(), [x, *net.parameters()])
    sf.reset(net)
    y_step = torch.stack([sf.step(net, x_t) for x_t in x])
    g_step = torch.autograd.grad(y_step.square().sum(), [x, *net.parameters()])
    assert y_seq.abs().sum() > 0
    torch.testing.assert_close(y_step, y_seq, rtol=1e-10, atol=1e-10)
    for a, b in zip(g_step, g_seq):
        torch.testing.assert_close(a, b, rtol=1e-8, atol=1e-10)
    sf.reset(net)                       # a new stream starts from rest again
    torch.testing.assert_close(torch.stack([sf.step(net, x_t) for x_t in x]), y_seq, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_step_records_trace_and_backend(backend):
    x = torch.rand(T, B, 4, dtype=torch.float64) * 2
    seq = sf.nn.ALIF(record=True, backend=backend).double()
    seq(x)
    m = sf.nn.ALIF(record=True, backend=backend).double()
    assert m.last_backend is None
    for t, x_t in enumerate(x):
        m.step(x_t)
        assert m.last_backend == backend
        assert all(v.shape == (t + 1, B, 4) for v in m.trace)   # the trace grows by one step
    for a, b in zip(m.trace, seq.trace):
        torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-12)
    m.reset()
    assert m.trace is None


def test_step_without_record_keeps_no_trace():
    m = sf.nn.LIF()
    m.step(torch.ones(B, 4))
    assert m.trace is None and m.last_backend == "cpu"


def test_step_with_learnable_parameters_equals_sequence():
    x = torch.rand(T, B, 4, dtype=torch.float64) * 2
    a = sf.nn.PLIF(tau=3.0).double()
    b = sf.nn.PLIF(tau=3.0).double()
    ga = torch.autograd.grad(a(x).sum(), a.tau)[0]
    gb = torch.autograd.grad(torch.stack([b.step(x_t) for x_t in x]).sum(), b.tau)[0]
    torch.testing.assert_close(ga, gb, rtol=1e-10, atol=1e-12)
    with torch.no_grad():
        b.tau.fill_(5.0)                 # a changed parameter is validated and used on the next step
        b.reset()
        torch.testing.assert_close(b.step(x[0]), sf.nn.PLIF(tau=5.0).double()(x[:1])[0])
        b.tau.fill_(-1.0)
        with pytest.raises(ValueError, match="tau must be > 0"):
            b.step(x[1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_monitor_sees_steps_like_a_sequence(backend):
    net, x = _net_and_input("recurrent", backend)
    x = x.detach()
    with Monitor(net, record=("spikes", "v")) as seq_mon:
        net(x)
    sf.reset(net)
    with Monitor(net, record=("spikes", "v")) as step_mon:
        for x_t in x:
            sf.step(net, x_t)
    assert seq_mon.num_samples == step_mon.num_samples == B   # a stream counts its samples once
    for layer in seq_mon.records:
        for key in ("spikes", "v"):
            torch.testing.assert_close(step_mon.get(layer, key), seq_mon.get(layer, key), rtol=1e-10, atol=1e-10)
    assert step_mon.firing_rates() == pytest.approx(seq_mon.firing_rates())
    assert step_mon.synops() == seq_mon.synops()


def test_monitor_joins_one_stream_and_separates_the_next():
    m = sf.nn.LIF()
    x = torch.rand(T, B, 4) * 2
    with Monitor(m) as mon:
        for x_t in x:
            m.step(x_t)
        m.reset()
        for x_t in x[:3]:
            m.step(x_t)
    calls = mon.records["net"]["spikes"]
    assert [c.shape for c in calls] == [(T, B, 4), (3, B, 4)]
    assert mon.num_samples == 2 * B


@pytest.mark.parametrize("backend", BACKENDS)
def test_batch_first_neuron_equals_time_first(backend):
    x = torch.rand(T, B, 4, dtype=torch.float64) * 2
    a = sf.nn.CubaLIF(backend=backend).double()
    b = sf.nn.CubaLIF(backend=backend, batch_first=True).double()
    torch.testing.assert_close(b(x.transpose(0, 1)), a(x).transpose(0, 1), rtol=0, atol=0)


def test_batch_first_network_equals_time_first():
    torch.manual_seed(0)
    x = torch.rand(T, B, 5) * 2
    a = nn.Sequential(sf.nn.TimeDistributed(nn.Linear(5, 6)), sf.nn.LIF(),
                      sf.nn.Recurrent(sf.nn.LIF(), 6), sf.nn.Delay(2, 6), sf.nn.TimeDropout(0.5), sf.nn.LI())
    b = nn.Sequential(sf.nn.TimeDistributed(nn.Linear(5, 6), batch_first=True), sf.nn.LIF(batch_first=True),
                      sf.nn.Recurrent(sf.nn.LIF(), 6, batch_first=True), sf.nn.Delay(2, 6, batch_first=True),
                      sf.nn.TimeDropout(0.5, batch_first=True), sf.nn.LI(batch_first=True))
    b.load_state_dict(a.state_dict())
    a.eval(), b.eval()
    torch.testing.assert_close(b(x.transpose(0, 1)), a(x).transpose(0, 1), rtol=1e-6, atol=1e-6)


def test_time_dropout_batch_first_mask_is_shared_over_time():
    x = torch.ones(B, T, 50)
    y = sf.nn.TimeDropout(0.5, batch_first=True)(x)
    assert torch.equal(y, y[:, :1].expand_as(y))


def test_layers_that_cannot_step_in_training_say_so():
    for layer in (sf.nn.TimeDropout(0.5), sf.nn.BatchNorm1d(4)):
        with pytest.raises(RuntimeError, match="eval"):
            layer.step(torch.ones(B, 4))
    bn = sf.nn.BatchNorm1d(4).eval()
    torch.testing.assert_close(bn.step(torch.ones(B, 4)), bn(torch.ones(1, B, 4))[0])


def test_step_of_another_shape_needs_a_reset():
    m = sf.nn.LIF()
    m.step(torch.ones(B, 4))
    with pytest.raises(ValueError, match="reset"):
        m.step(torch.ones(B + 1, 4))
    m.reset()
    assert m.step(torch.ones(B + 1, 4)).shape == (B + 1, 4)


def test_step_sees_parameters_replaced_through_data():
    """``p.data = ...`` and ``vector_to_parameters`` swap the storage without a version bump."""
    x = torch.full((1, 4), 0.9)
    m = sf.nn.LIF()
    with torch.no_grad():
        m.step(x)
        m.reset()
        m.tau.data = torch.tensor(100.0)
        m.step(x)
        torch.testing.assert_close(m.state.v, torch.full((1, 4), 0.009))
    m = sf.nn.LIF(learn_v_threshold=True)
    with torch.no_grad():
        m.step(x)
        m.reset()
        torch.nn.utils.vector_to_parameters(torch.tensor([0.1]), m.parameters())
        torch.testing.assert_close(m.step(x), m(x[None])[0])


def test_monitor_counts_delay_synops_and_batch_first_samples():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), sf.nn.LIF(), sf.nn.Delay(2, 6, per=DelayPer.SYNAPSE, out_features=3),
                        sf.nn.LI())
    x = torch.rand(T, B, 4) * 3
    with Monitor(net) as seq:
        net(x)
    sf.reset(net)
    with Monitor(net) as stream:
        for x_t in x:
            sf.step(net, x_t)
    assert seq.synops()["2"] > 0 and stream.synops() == seq.synops()
    netb = nn.Sequential(nn.Linear(4, 8), sf.nn.LIF(batch_first=True))
    with Monitor(netb) as mon:
        netb(torch.rand(B, T, 4))
    assert mon.num_samples == B


def test_delay_stream_of_another_shape_needs_a_reset():
    d = sf.nn.Delay(2, 4)
    d.step(torch.ones(B, 4))
    with pytest.raises(ValueError, match="reset"):
        d.step(torch.ones(B + 1, 4))
    d.reset()
    assert d.step(torch.ones(B + 1, 4)).shape == (B + 1, 4)
