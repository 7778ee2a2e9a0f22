import pytest
import torch
from torch import nn
from torch.nn import functional as F

import spikeforge as sf
from spikeforge.monitor import Monitor, register_synops, SYNOPS


def lif(**kw):
    return sf.nn.LIF(backend="reference", **kw)


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 8), lif(), nn.Linear(8, 3), sf.nn.LI(backend="reference"))


def test_records_spikes_states_and_removes_hooks():
    net = mlp()
    x = torch.rand(5, 2, 6) * 2
    with Monitor(net, record=("spikes", "v")) as mon:
        out = net(x)
        assert net[1].record and net[3].record
    assert list(mon.layers) == ["1", "3"]
    assert torch.equal(mon.get("3"), out)
    assert torch.equal(mon.get("1", "v"), net[1].trace.v)
    assert mon.get("1").shape == (5, 2, 8)
    assert not net[1].record and not net[3].record           # flags restored
    net(x)
    assert len(mon.records["1"]["spikes"]) == 1               # hooks gone
    assert mon.num_samples == 2


def test_calls_join_along_batch_and_clear():
    net = mlp()
    mon = Monitor(net)
    net(torch.rand(4, 2, 6))
    net(torch.rand(4, 3, 6))
    assert mon.get("1").shape == (4, 5, 8) and len(mon.records["1"]["spikes"]) == 2
    assert mon.num_samples == 5
    mon.clear()
    assert mon.num_samples == 0 and mon.synops() == {} and mon.firing_rates() == {}
    with pytest.raises(ValueError, match="nothing recorded yet"):
        mon.get("1")
    mon.remove()


def test_firing_rates_and_synops_of_linear():
    net = mlp()
    x = torch.rand(5, 2, 6) * 3
    with Monitor(net) as mon:
        net(x)
    z = mon.get("1")
    assert mon.firing_rates() == {"1": pytest.approx(z.mean().item())}   # LI readout has no rate
    assert torch.allclose(mon.neuron_rates("1"), z.mean(dim=(0, 1)))
    assert mon.synops() == {"2": int(z.sum().item()) * 3}
    assert mon.macs() == {"0": x.numel() * 8}                           # analogue input: dense MACs
    e = mon.energy(e_synop=1.0, e_mac=10.0)
    assert e == pytest.approx(mon.synops()["2"] + 10.0 * mon.macs()["0"])


@pytest.mark.parametrize("stride,padding,groups", [(1, 1, 1), (2, 0, 1), (1, 1, 2)])
def test_conv_synops_count_each_spike_per_target(stride, padding, groups):
    torch.manual_seed(0)
    conv = nn.Conv2d(4, 6, 3, stride=stride, padding=padding, groups=groups)
    net = nn.Sequential(lif(), sf.nn.TimeDistributed(conv))
    x = torch.rand(3, 2, 4, 7, 7) * 3
    with Monitor(net) as mon:
        net(x)
    s = mon.get("0").flatten(0, 1)                                   # (T*B, C, H, W) spikes
    cols = F.unfold(s, 3, padding=padding, stride=stride)           # (N, C*9, L)
    per_group = cols.unflatten(1, (groups, -1)).sum(2)              # active inputs per window and group
    expected = int(per_group.sum().item()) * (6 // groups)
    assert mon.synops() == {"1.module": expected}


def test_recurrent_and_layer_selection():
    torch.manual_seed(0)
    rec = sf.nn.Recurrent(lif(), 5)
    net = nn.Sequential(nn.Linear(3, 5), rec, nn.Linear(5, 2), lif())
    x = torch.rand(6, 2, 3) * 3
    with Monitor(net, record=("spikes", "v"), layers=["1"]) as mon:
        out_rec = net[1](net[0](x))
        net[3](net[2](out_rec))
    assert list(mon.layers) == ["1"]
    assert torch.equal(mon.get("1"), out_rec)
    assert mon.get("1", "v").shape == (6, 2, 5)
    z_prev = out_rec[:-1]
    assert mon.synops()["1.recurrent"] == int(z_prev.sum().item()) * 5
    with Monitor(net, layers=[rec.neuron]) as mon2:                 # the neuron is seen through its Recurrent
        pass
    assert list(mon2.layers) == ["1"]


def test_register_synops_for_new_layer():
    class Scale(nn.Module):
        def forward(self, x):
            return 2 * x

    register_synops(Scale)(lambda m, active: int(active.sum().item()))
    try:
        net = nn.Sequential(lif(), Scale())
        with Monitor(net) as mon:
            net(torch.rand(4, 1, 3) * 3)
        assert mon.synops()["1"] == int(mon.get("0").sum().item())
    finally:
        del SYNOPS[Scale]


def test_errors():
    net = mlp()
    with pytest.raises(TypeError, match="net must be a torch.nn.Module"):
        Monitor(lambda x: x)
    with pytest.raises(ValueError, match=r"record: unknown key\(s\) \['w'\]"):
        Monitor(net, record=("spikes", "w"))
    with pytest.raises(ValueError, match="layers: 'nope' is not a module of net"):
        Monitor(net, layers=["nope"])
    with pytest.raises(TypeError, match="layers: '0' is a Linear, expected a spikeforge.nn.Neuron"):
        Monitor(net, layers=["0"])
    with Monitor(net) as mon:
        pass
    with pytest.raises(KeyError, match="not monitored"):
        mon.get("0")
    with pytest.raises(KeyError, match="was not recorded"):
        mon.get("1", "v")


def test_neuron_updates_per_layer_add_up():
    net = nn.Sequential(nn.Linear(6, 8), sf.nn.LIF(), nn.Linear(8, 5), sf.nn.IF())
    with sf.Monitor(net) as mon:
        net(torch.rand(4, 3, 6))
        net(torch.rand(7, 2, 6))
    assert mon.neuron_updates("1") == 8 * (4 * 3 + 7 * 2)
    assert mon.neuron_updates("3") == 5 * (4 * 3 + 7 * 2)
    assert mon.neuron_updates() == mon.neuron_updates("1") + mon.neuron_updates("3")
    with pytest.raises(KeyError, match="'0'"):
        mon.neuron_updates("0")
