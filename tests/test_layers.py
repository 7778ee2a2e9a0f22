import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.nn.delay import DelayPer, delay, delayed_linear, shift
from spikeforge.nn.layers import time_dropout


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def per_step(module, x):
    return torch.stack([module(x_t) for x_t in x.unbind(0)])


# -- TimeDistributed, pools, Flatten ---------------------------------------------------------
def test_time_distributed_equals_per_step_loop():
    torch.manual_seed(0)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    x = torch.rand(4, 2, 2, 5, 5)
    y = sf.nn.TimeDistributed(conv)(x)
    assert y.shape == (4, 2, 3, 5, 5)
    assert torch.allclose(y, per_step(conv, x), atol=1e-6)


@pytest.mark.parametrize("cls,ref,args", [
    (sf.nn.MaxPool2d, nn.MaxPool2d, (2,)), (sf.nn.AvgPool2d, nn.AvgPool2d, (2,)),
    (sf.nn.MaxPool1d, nn.MaxPool1d, (2,)), (sf.nn.AvgPool1d, nn.AvgPool1d, (3, 1, 1)),
    (sf.nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool2d, ((1, 2),)),
])
def test_pools_equal_torch_per_step(cls, ref, args):
    shape = (3, 2, 4, 6, 6) if "2d" in cls.__name__ else (3, 2, 4, 6)
    x = torch.rand(shape, generator=gen())
    assert torch.equal(cls(*args)(x), per_step(ref(*args), x))


def test_time_distributed_errors():
    with pytest.raises(TypeError, match="module must be a torch.nn.Module"):
        sf.nn.TimeDistributed(lambda x: x)
    with pytest.raises(ValueError, match=r"x must have shape \(T, B, ...\)"):
        sf.nn.TimeDistributed(nn.Identity())(torch.rand(3))
    with pytest.raises(TypeError, match="returns one tensor"):
        sf.nn.MaxPool2d(2, return_indices=True)(torch.rand(2, 1, 1, 4, 4))


def test_flatten():
    x = torch.rand(3, 2, 4, 5, 6)
    assert sf.nn.Flatten()(x).shape == (3, 2, 120)
    assert sf.nn.Flatten(3)(x).shape == (3, 2, 4, 30)
    with pytest.raises(ValueError, match=r"start_dim must be an int >= 2 \(dims 0 and 1 are time and batch\), got 1"):
        sf.nn.Flatten(1)


# -- TimeDropout -----------------------------------------------------------------------------
def test_time_dropout_mask_is_shared_over_time():
    x = torch.ones(6, 4, 10)
    y = time_dropout(x, 0.5, generator=gen())
    assert torch.equal(y, y[:1].expand_as(y))
    assert set(y.unique().tolist()) <= {0.0, 2.0}
    assert 0 < (y[0] == 0).sum() < 40
    assert torch.equal(y, time_dropout(x, 0.5, generator=gen()))


def test_time_dropout_module_train_and_eval():
    torch.manual_seed(0)
    m = sf.nn.TimeDropout(0.3)
    x = torch.rand(3, 2, 50)
    assert not torch.equal(m(x), x)
    m.eval()
    assert m(x) is x
    assert time_dropout(x, 0.0) is x
    assert time_dropout(x, 1.0).abs().sum() == 0
    with pytest.raises(ValueError, match=r"p must be a probability in \[0, 1\], got 1.5"):
        sf.nn.TimeDropout(1.5)


# -- BatchNorm over time and batch -----------------------------------------------------------
def test_batchnorm2d_statistics_over_time_and_batch():
    x = torch.randn(5, 4, 3, 6, 6, generator=gen()) * 3 + 2
    bn = sf.nn.BatchNorm2d(3)
    y = bn(x)
    assert y.shape == x.shape
    mean = y.mean(dim=(0, 1, 3, 4))
    var = y.var(dim=(0, 1, 3, 4), unbiased=False)
    assert torch.allclose(mean, torch.zeros(3), atol=1e-5)
    assert torch.allclose(var, torch.ones(3), atol=1e-3)
    ref = nn.BatchNorm2d(3)
    assert torch.allclose(y, ref(x.flatten(0, 1)).unflatten(0, (5, 4)), atol=1e-5)
    assert torch.allclose(bn.norm.running_mean, ref.running_mean)


def test_batchnorm1d_threshold_scaled_and_eval():
    x = torch.randn(4, 8, 5, generator=gen()) + 1
    bn = sf.nn.BatchNorm1d(5, alpha=0.5, v_threshold=2.0)
    y = bn(x)
    assert torch.allclose(y.std(dim=(0, 1), unbiased=False), torch.ones(5), atol=1e-3)
    assert bn(torch.randn(4, 8, 5, 7)).shape == (4, 8, 5, 7)
    bn.eval()
    y1, y2 = bn(x[:, :1]), bn(x)[:, :1]
    assert torch.allclose(y1, y2)
    y.sum().backward()
    assert bn.weight.grad is not None and bn.bias.grad is not None
    plain = sf.nn.BatchNorm1d(5, affine=False, alpha=2.0)
    assert plain.weight is None
    assert torch.allclose(plain(x).std(dim=(0, 1), unbiased=False), torch.full((5,), 2.0), atol=1e-3)
    with pytest.raises(ValueError, match=r"x must have 3 or 4 dims \(T, B, C, ...\) for BatchNorm1d"):
        bn(torch.rand(4, 5))


# -- Recurrent -------------------------------------------------------------------------------
def test_recurrent_matches_manual_loop():
    torch.manual_seed(0)
    rec = sf.nn.Recurrent(sf.nn.LIF(tau=4.0), 6)
    x = torch.rand(8, 3, 6) * 2
    z = rec(x)
    ref_neuron, prev, out = sf.nn.LIF(tau=4.0), torch.zeros(3, 6), []
    for x_t in x:
        prev = ref_neuron.step(x_t + rec.recurrent(prev))
        out.append(prev)
    assert torch.equal(z, torch.stack(out))
    assert torch.equal(rec(x), z)          # a new call starts from rest
    assert rec.neuron.state is None and rec.last_spikes is None


def test_recurrent_with_zero_weights_is_the_plain_neuron():
    w = nn.Linear(5, 5, bias=False)
    nn.init.zeros_(w.weight)
    x = torch.rand(6, 2, 5) * 3
    assert torch.allclose(sf.nn.Recurrent(sf.nn.LIF(), w)(x), sf.nn.LIF(backend="reference")(x))


def test_recurrent_carry_state_record_and_gradient():
    torch.manual_seed(1)
    rec = sf.nn.Recurrent(sf.nn.LIF(carry_state=True, record=True), 4)
    x = torch.rand(10, 2, 4) * 3
    full = torch.cat([rec(x[:5]), rec(x[5:])])
    rec.reset()
    assert torch.equal(full, rec(x))
    assert rec.neuron.trace.v.shape == (10, 2, 4)
    rec.reset()
    rec(x).sum().backward()
    assert rec.recurrent.weight.grad.abs().sum() > 0


def test_recurrent_errors():
    with pytest.raises(TypeError, match="neuron must be a spikeforge.nn.Neuron"):
        sf.nn.Recurrent(nn.ReLU(), 3)
    with pytest.raises(ValueError, match="hidden size.*>= 1, got 0"):
        sf.nn.Recurrent(sf.nn.LIF(), 0)
    with pytest.raises(TypeError, match="recurrent must be a hidden size"):
        sf.nn.Recurrent(sf.nn.LIF(), 2.0)


# -- Delay -----------------------------------------------------------------------------------
def test_shift():
    x = torch.arange(1.0, 6.0).view(5, 1)
    assert shift(x, 0) is x
    assert shift(x, 2).flatten().tolist() == [0, 0, 1, 2, 3]
    assert shift(x, 7).abs().sum() == 0
    with pytest.raises(ValueError, match="steps must be an int >= 0, got -1"):
        shift(x, -1)


def test_delay_per_neuron():
    x = torch.rand(7, 2, 4, generator=gen())
    d = torch.tensor([0, 1, 3, 9])
    y = sf.nn.Delay(9, 4, delays=d)(x)
    for n, k in enumerate(d.tolist()):
        assert torch.equal(y[..., n], shift(x[..., n], k))
    c = torch.tensor([2, 0]).view(2, 1, 1)      # per channel of (T, B, C, H, W)
    img = torch.rand(5, 3, 2, 4, 4)
    assert torch.equal(delay(img, c)[:, :, 0], shift(img[:, :, 0], 2))
    assert torch.equal(delay(img, c)[:, :, 1], img[:, :, 1])


def test_delay_per_synapse_matches_brute_force():
    torch.manual_seed(0)
    m = sf.nn.Delay(3, 4, per=DelayPer.SYNAPSE, out_features=3, generator=gen())
    x = (torch.rand(6, 2, 4) < 0.5).float()
    y = m(x)
    ref = torch.zeros(6, 2, 3)
    for t in range(6):
        for j in range(3):
            for i in range(4):
                s = t - int(m.delays[j, i])
                if s >= 0:
                    ref[t, :, j] += m.weight[j, i] * x[s, :, i]
    assert torch.allclose(y, ref + m.bias.detach(), atol=1e-6)
    y.sum().backward()
    assert m.weight.grad is not None
    same = torch.full((3, 4), 2)
    assert torch.allclose(delayed_linear(x, m.weight, same), shift(x @ m.weight.T, 2), atol=1e-6)


def test_delay_errors():
    with pytest.raises(ValueError, match=r"delays must be <= max_delay=2, got a maximum of 3"):
        sf.nn.Delay(2, 2, delays=torch.tensor([1, 3]))
    with pytest.raises(ValueError, match=r"delays must have shape \(3,\), got \(2,\)"):
        sf.nn.Delay(2, 3, delays=torch.tensor([1, 0]))
    with pytest.raises(TypeError, match="delays must be an integer tensor, got torch.float32"):
        sf.nn.Delay(2, 2, delays=torch.tensor([1.0, 0.0]))
    with pytest.raises(ValueError, match="delays must be >= 0"):
        delay(torch.rand(3, 1, 2), torch.tensor([-1, 0]))
    with pytest.raises(ValueError, match="must broadcast to the feature shape"):
        delay(torch.rand(3, 1, 2), torch.tensor([1, 0, 0]))
    with pytest.raises(TypeError, match="per must be DelayPer.NEURON or DelayPer.SYNAPSE, got 'synapse'"):
        sf.nn.Delay(2, 2, per="synapse")
    with pytest.raises(ValueError, match="out_features must be an int >= 1 with per=DelayPer.SYNAPSE, got None"):
        sf.nn.Delay(2, 2, per=DelayPer.SYNAPSE)
    with pytest.raises(ValueError, match="out_features is only used with per=DelayPer.SYNAPSE"):
        sf.nn.Delay(2, 2, out_features=3)
    with pytest.raises(ValueError, match="max_delay must be an int >= 0, got -1"):
        sf.nn.Delay(-1, 2)
