"""Learned delays (``Delay(..., learn_delays=True)``, floating ``delay``/``delayed_linear``):
values against a loop written from the formulas, float64 gradchecks, equality with the
integer path at whole delays and in eval mode, streaming, NIR export, training, errors."""
from __future__ import annotations

import copy
import math
import pickle

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.nn.delay import DelayInterpolation, DelayPer, delay, delay_kernel, delayed_linear

LIN, GAUSS = DelayInterpolation.LINEAR, DelayInterpolation.GAUSSIAN
T, B = 9, 3


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def _weights(d: float, max_delay: int, interpolation, sigma: float) -> list[float]:
    """The kernel of one delay, written from the docstring's formulas with Python floats."""
    if interpolation is GAUSS:
        e = [math.exp(-(k - d) ** 2 / (2 * sigma ** 2)) for k in range(max_delay + 1)]
        return [v / sum(e) for v in e]
    lo = min(math.floor(d), max_delay - 1)
    w = [0.0] * (max_delay + 1)
    w[lo], w[lo + 1] = 1 - (d - lo), d - lo
    return w


def _ref_neuron(x, d, max_delay, interpolation=LIN, sigma=1.0):
    y = torch.zeros_like(x)
    for n in range(x.shape[-1]):
        for k, w in enumerate(_weights(float(d[n]), max_delay, interpolation, sigma)):
            for t in range(k, x.shape[0]):
                y[t, ..., n] += w * x[t - k, ..., n]
    return y


def _ref_synapse(x, weight, d, max_delay, interpolation=LIN, sigma=1.0):
    y = torch.zeros(x.shape[0], x.shape[1], weight.shape[0], dtype=x.dtype)
    for j in range(weight.shape[0]):
        for i in range(weight.shape[1]):
            for k, w in enumerate(_weights(float(d[j, i]), max_delay, interpolation, sigma)):
                for t in range(k, x.shape[0]):
                    y[t, :, j] += w * float(weight[j, i].detach()) * x[t - k, :, i]
    return y


@pytest.mark.parametrize("interpolation,sigma", [(LIN, 1.0), (GAUSS, 0.7), (GAUSS, 2.5)])
def test_fractional_delays_match_the_formula(interpolation, sigma):
    x = torch.rand(T, B, 4, generator=gen(), dtype=torch.float64)
    d = torch.tensor([0.0, 1.25, 2.5, 4.0], dtype=torch.float64)     # 4.0 = max_delay: lo = 3, f = 1
    got = delay(x, d, max_delay=4, interpolation=interpolation, sigma=sigma)
    torch.testing.assert_close(got, _ref_neuron(x, d, 4, interpolation, sigma), rtol=1e-12, atol=1e-12)
    w = torch.randn(3, 4, generator=gen(1), dtype=torch.float64)
    ds = torch.rand(3, 4, generator=gen(2), dtype=torch.float64) * 4
    bias = torch.randn(3, generator=gen(3), dtype=torch.float64)
    got = delayed_linear(x, w, ds, bias, max_delay=4, interpolation=interpolation, sigma=sigma)
    torch.testing.assert_close(got, _ref_synapse(x, w, ds, 4, interpolation, sigma) + bias, rtol=1e-12, atol=1e-12)


def test_kernel_rows_sum_to_one_and_gaussian_tends_to_rounding():
    d = torch.tensor([0.2, 1.7, 2.0, 3.0])
    for interp, sigma in ((LIN, 1.0), (GAUSS, 0.8)):
        torch.testing.assert_close(delay_kernel(d, 3, interp, sigma).sum(-1), torch.ones(4))
    sharp = delay_kernel(d, 3, GAUSS, 0.05)
    torch.testing.assert_close(sharp, nn.functional.one_hot(d.round().long(), 4).float(), rtol=0, atol=1e-6)


@pytest.mark.parametrize("interpolation", [LIN, GAUSS])
def test_gradcheck_float64(interpolation):
    """Fractional delays away from whole steps (where linear interpolation has a kink)."""
    x = torch.rand(6, 2, 3, generator=gen(), dtype=torch.float64, requires_grad=True)
    d = torch.tensor([0.3, 1.6, 2.45], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, d: delay(x, d, max_delay=3, interpolation=interpolation, sigma=0.9),
                                    (x, d))
    w = torch.randn(2, 3, generator=gen(1), dtype=torch.float64, requires_grad=True)
    ds = torch.tensor([[0.2, 1.5, 2.7], [2.9, 0.6, 1.1]], dtype=torch.float64, requires_grad=True)
    bias = torch.randn(2, generator=gen(2), dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda x, w, d, b: delayed_linear(x, w, d, b, max_delay=3, interpolation=interpolation, sigma=0.9),
        (x, w, ds, bias))


def test_linear_gradient_at_whole_delays_is_the_one_from_the_right():
    """Whole delays (the default initialisation) still learn: the derivative is taken from the right."""
    x = torch.rand(8, 2, 3, generator=gen(), dtype=torch.float64)
    d = torch.tensor([0.0, 1.0, 2.0], dtype=torch.float64, requires_grad=True)
    g = torch.randn(8, 2, 3, generator=gen(1), dtype=torch.float64)
    (grad,) = torch.autograd.grad((delay(x, d, max_delay=3) * g).sum(), d)
    eps = 1e-6
    right = ((delay(x, d.detach() + eps, max_delay=3) - delay(x, d.detach(), max_delay=3)) * g).sum((0, 1)) / eps
    torch.testing.assert_close(grad, right, rtol=1e-6, atol=1e-6)
    assert grad.abs().min() > 0


def test_whole_fractional_delays_equal_the_integer_path_exactly():
    x = torch.rand(T, B, 5, generator=gen())
    d = torch.tensor([0, 1, 3, 4, 4])
    assert torch.equal(delay(x, d.float(), max_delay=4), delay(x, d))
    w = torch.randn(3, 5, generator=gen(1))
    ds = torch.randint(0, 5, (3, 5), generator=gen(2))
    assert torch.equal(delayed_linear(x, w, ds.float(), max_delay=4), delayed_linear(x, w, ds))


def _pair(per, learned_values, **kw):
    """A learned module and an integer one with the rounded delays and the same weights."""
    synapse = per is DelayPer.SYNAPSE
    learned = sf.nn.Delay(4, 5, per=per, out_features=3 if synapse else None, delays=learned_values,
                          learn_delays=True, **kw)
    fixed = sf.nn.Delay(4, 5, per=per, out_features=3 if synapse else None,
                        delays=learned_values.clamp(0, 4).round().long())
    if synapse:
        fixed.load_state_dict({"weight": learned.weight, "bias": learned.bias, "delays": fixed.delays})
    return learned, fixed


@pytest.mark.parametrize("per", list(DelayPer))
def test_train_mode_at_whole_delays_and_eval_mode_equal_the_integer_module(per):
    x = torch.rand(T, B, 5, generator=gen())
    shape = (5,) if per is DelayPer.NEURON else (3, 5)
    whole = torch.randint(0, 5, shape, generator=gen(1)).float()
    learned, fixed = _pair(per, whole)
    assert torch.equal(learned(x), fixed(x))
    frac = torch.rand(shape, generator=gen(2)) * 4
    learned, fixed = _pair(per, frac)
    assert not torch.equal(learned(x), fixed(x))               # training interpolates
    learned.eval()
    assert torch.equal(learned(x), fixed(x)) and torch.equal(learned.delays, fixed.delays)
    deployed = learned.rounded()
    assert deployed.learned_delays is None and not deployed.training
    assert torch.equal(deployed(x), fixed(x))


@pytest.mark.parametrize("per", list(DelayPer))
@pytest.mark.parametrize("interpolation", [LIN, GAUSS])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_module_matches_reference_and_streams(per, interpolation, training):
    torch.manual_seed(0)
    synapse = per is DelayPer.SYNAPSE
    shape = (3, 5) if synapse else (5,)
    m = sf.nn.Delay(4, 5, per=per, out_features=3 if synapse else None, learn_delays=True,
                    delays=torch.rand(shape, generator=gen(1)) * 4, interpolation=interpolation,
                    sigma=0.8 if interpolation is GAUSS else None).double().train(training)
    x = torch.rand(T, B, 5, generator=gen(), dtype=torch.float64)
    d = m.learned_delays.detach() if training else m.delays
    kind = interpolation if training else LIN          # eval: whole delays, one-hot kernels
    ref = _ref_synapse(x, m.weight, d, 4, kind, 0.8) + m.bias.detach() if synapse else _ref_neuron(x, d, 4, kind, 0.8)
    y = m(x)
    torch.testing.assert_close(y, ref, rtol=1e-12, atol=1e-12)
    sf.reset(m)
    torch.testing.assert_close(torch.stack([m.step(x_t) for x_t in x]), y, rtol=1e-12, atol=1e-12)


def test_module_gradient_matches_the_functional_form():
    m = sf.nn.Delay(3, 4, per=DelayPer.SYNAPSE, out_features=2, learn_delays=True,
                    delays=torch.tensor([[0.5, 1.2, 2.8, 0.1], [1.9, 2.2, 0.7, 3.0]])).double()
    x = torch.rand(7, 2, 4, generator=gen(), dtype=torch.float64)
    m(x).square().sum().backward()
    d = m.learned_delays.detach().clone().requires_grad_()
    w = m.weight.detach().clone().requires_grad_()
    delayed_linear(x, w, d, m.bias.detach(), max_delay=3).square().sum().backward()
    torch.testing.assert_close(m.learned_delays.grad, d.grad)
    torch.testing.assert_close(m.weight.grad, w.grad)


def test_delays_past_the_bounds_act_as_the_bound_and_keep_their_gradient():
    m = sf.nn.Delay(3, 2, learn_delays=True, delays=torch.tensor([0.0, 3.0]))
    with torch.no_grad():
        m.learned_delays.copy_(torch.tensor([-0.7, 4.2]))
    x = torch.rand(6, 2, 2, generator=gen())
    assert torch.equal(m(x), delay(x, torch.tensor([0, 3])))
    assert m.delays.tolist() == [0, 3]
    (m(x) * torch.arange(6.0).view(6, 1, 1)).sum().backward()
    assert (m.learned_delays.grad != 0).all()


def test_learning_finds_the_delay_that_aligns_two_channels():
    """Channel 1 repeats channel 0 three steps later; learning channel 0's delay (from 0.0 and
    from a whole 1) until the two coincide drives it to 3."""
    torch.manual_seed(0)
    base = torch.nn.functional.avg_pool1d(torch.rand(1, 1, 80), 5, 1).view(-1, 1)   # smooth signal
    x = torch.stack((base[3:], base[:-3]), -1)     # (T, 1, 2): x[:, 1] = x[:, 0] three steps later
    for start, interp in ((0.0, LIN), (1.0, LIN), (0.0, GAUSS)):
        m = sf.nn.Delay(6, 1, learn_delays=True, delays=torch.tensor([start]), interpolation=interp)
        opt = torch.optim.Adam(m.parameters(), lr=0.1)
        for _ in range(150):
            opt.zero_grad()
            loss = (m(x[:, :, :1])[6:] - x[6:, :, 1:]).square().mean()
            loss.backward()
            opt.step()
        assert m.delays.tolist() == [3], (start, interp, m.learned_delays)


def test_stream_network_and_monitor_with_learned_delays():
    from spikeforge.monitor import Monitor
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 6), sf.nn.LIF(), sf.nn.Delay(3, 6, learn_delays=True),
                        sf.nn.Delay(2, 6, per=DelayPer.SYNAPSE, out_features=3, learn_delays=True,
                                    interpolation=GAUSS, sigma=0.5), sf.nn.LI()).double()
    x = torch.rand(T, B, 4, dtype=torch.float64) * 3
    with Monitor(net) as seq:
        whole = net(x)
    sf.reset(net)
    with Monitor(net) as stream:
        steps = torch.stack([sf.step(net, x_t) for x_t in x])
    torch.testing.assert_close(steps, whole)
    assert stream.synops() == seq.synops()


def test_state_dict_pickle_and_repr():
    m = sf.nn.Delay(3, 4, per=DelayPer.SYNAPSE, out_features=2, learn_delays=True, interpolation=GAUSS, sigma=1.5)
    assert set(m.state_dict()) == {"learned_delays", "weight", "bias"}
    assert {n for n, _ in m.named_parameters()} == {"learned_delays", "weight", "bias"}
    x = torch.rand(5, 2, 4)
    for other in (pickle.loads(pickle.dumps(m)), copy.deepcopy(m)):
        assert torch.equal(other(x), m(x))
    again = sf.nn.Delay(3, 4, per=DelayPer.SYNAPSE, out_features=2, learn_delays=True, interpolation=GAUSS)
    again.load_state_dict(m.state_dict())
    assert torch.equal(again.learned_delays, m.learned_delays)
    assert "learn_delays=True, interpolation=GAUSSIAN, sigma=1.5" in repr(m)
    assert "learn_delays" not in repr(sf.nn.Delay(3, 4))
    with pytest.raises(AttributeError):
        m.delays = torch.zeros(2, 4, dtype=torch.long)      # read-only: set learned_delays instead


def test_nir_export_rounds_learned_delays(tmp_path):
    nir = pytest.importorskip("nir")
    torch.manual_seed(1)
    net = nn.Sequential(nn.Linear(5, 6), sf.nn.Delay(3, 6, learn_delays=True,
                                                     delays=torch.tensor([0.2, 0.6, 1.5, 2.5, 2.9, 3.0])),
                        nn.Linear(6, 4), sf.nn.LIF(), sf.nn.LI())
    g = sf.nir.export(net, dt=0.5)
    assert g.nodes["1"].delay.tolist() == [0.0, 0.5, 1.0, 1.0, 1.5, 1.5]    # torch.round: halves to even
    path = tmp_path / "d.nir"
    nir.write(str(path), g)
    loaded = sf.nir.load(path)
    net.eval()
    x = torch.rand(12, 2, 5) * 2
    with torch.no_grad():
        torch.testing.assert_close(loaded(x), net(x), rtol=0, atol=0)


def test_errors():
    with pytest.raises(ValueError, match=r"max_delay must be an int >= 1, got 0"):
        sf.nn.Delay(0, 2, learn_delays=True)
    with pytest.raises(ValueError, match=r"delays must be <= max_delay=3, got a maximum of 3.5"):
        sf.nn.Delay(3, 2, learn_delays=True, delays=torch.tensor([1.0, 3.5]))
    with pytest.raises(ValueError, match=r"delays must be >= 0, got a minimum of -0.25"):
        sf.nn.Delay(3, 2, learn_delays=True, delays=torch.tensor([-0.25, 1.0]))
    with pytest.raises(ValueError, match="delays must be finite, got nan"):
        sf.nn.Delay(3, 2, learn_delays=True, delays=torch.tensor([float("nan"), 1.0]))
    with pytest.raises(TypeError, match="delays must be an integer tensor, got torch.float32"):
        sf.nn.Delay(3, 2, delays=torch.tensor([1.0, 0.5]))
    with pytest.raises(TypeError, match="learn_delays must be True or False, got 1"):
        sf.nn.Delay(3, 2, learn_delays=1)
    with pytest.raises(ValueError, match="interpolation and sigma are only used with learn_delays=True"):
        sf.nn.Delay(3, 2, interpolation=GAUSS)
    with pytest.raises(ValueError, match="sigma is only used with interpolation=DelayInterpolation.GAUSSIAN"):
        sf.nn.Delay(3, 2, learn_delays=True, sigma=1.0)
    with pytest.raises(TypeError, match="interpolation must be DelayInterpolation.LINEAR or .GAUSSIAN, got 'linear'"):
        sf.nn.Delay(3, 2, learn_delays=True, interpolation="linear")
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 0 .*got 0"):
        sf.nn.Delay(3, 2, learn_delays=True, interpolation=GAUSS, sigma=0)
    m = sf.nn.Delay(3, 2, learn_delays=True, interpolation=GAUSS)
    m.sigma = -1.0                                   # annealed to a bad value: named at the next call
    with pytest.raises(ValueError, match=r"sigma must be a finite number > 0 .*got -1.0"):
        m(torch.rand(4, 1, 2))
    with pytest.raises(ValueError, match=r"feature shape \(3,\)"):
        sf.nn.Delay(3, 2, learn_delays=True)(torch.rand(4, 1, 3))
    x = torch.rand(4, 1, 2)
    with pytest.raises(ValueError, match="floating delays need max_delay"):
        delay(x, torch.tensor([0.5, 1.0]))
    with pytest.raises(ValueError, match="delays must be <= max_delay=1, got a maximum of 1.5"):
        delay(x, torch.tensor([0.5, 1.5]), max_delay=1)
    with pytest.raises(TypeError, match="x must be a floating tensor for floating delays, got torch.int64"):
        delay(torch.ones(4, 1, 2, dtype=torch.long), torch.tensor([0.5, 1.0]), max_delay=2)
    with pytest.raises(ValueError, match="floating delays need max_delay"):
        delayed_linear(x, torch.ones(3, 2), torch.full((3, 2), 0.5))
    with pytest.raises(TypeError, match="interpolation must be a DelayInterpolation, got 'gaussian'"):
        delay_kernel(torch.tensor([0.5]), 2, "gaussian")
    with pytest.raises(TypeError, match=r"delays must be a real \(floating or integer\) tensor, got list"):
        delay_kernel([0.5], 2)


def test_docs_examples_run():
    """The Delay examples of docs/encoding_layers.md (integer and learned) run as written."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "docs" / "encoding_layers.md").read_text()
    section = text[text.index("**`Delay(max_delay"):text.index("## Losses")]
    blocks = re.findall(r"```python\n(.*?)```", section, re.S)
    assert len(blocks) == 2 and "learn_delays=True" in blocks[1]
    for block in blocks:
        exec(block, {})
