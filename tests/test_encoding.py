import dataclasses
import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import encoding as E

FAST = settings(max_examples=25, deadline=None, derandomize=True)

shapes = st.lists(st.integers(1, 4), min_size=1, max_size=3).map(tuple)
steps = st.integers(1, 12)
unit = st.floats(0.0, 1.0, allow_nan=False)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# -- rate ------------------------------------------------------------------------------
@FAST
@given(shape=shapes, num_steps=steps, seed=st.integers(0, 2**16))
def test_rate_shape_values_and_determinism(shape, num_steps, seed):
    x = torch.rand(shape, generator=gen(seed))
    a = E.rate(x, num_steps, generator=gen(seed))
    b = E.rate(x, num_steps, generator=gen(seed))
    assert a.shape == (num_steps, *shape) and a.dtype == x.dtype
    assert torch.equal(a, b)
    assert set(a.unique().tolist()) <= {0.0, 1.0}


@FAST
@given(p=unit, seed=st.integers(0, 2**16))
def test_rate_matches_probability(p, seed):
    n_steps, n = 50, 400
    z = E.rate(torch.full((n,), p), n_steps, generator=gen(seed))
    count = n_steps * n
    bound = 6 * math.sqrt(p * (1 - p) / count) + 1e-9
    assert abs(z.mean().item() - p) <= bound


def test_rate_extremes_and_gain():
    x = torch.tensor([0.0, 1.0, 0.25])
    z = E.rate(x, 20, gain=4.0 / 4.0, generator=gen())
    assert z[:, 0].sum() == 0 and z[:, 1].sum() == 20
    assert E.rate(x, 5, gain=0.0, generator=gen()).sum() == 0
    with pytest.raises(ValueError, match=r"x \* gain must lie in \[0, 1\]"):
        E.rate(x, 5, gain=2.0)


@pytest.mark.parametrize("num_steps", [0, -3, 2.5, True, "4"])
def test_rate_bad_num_steps(num_steps):
    with pytest.raises(ValueError, match=rf"num_steps must be an int >= 1, got {num_steps!r}"):
        E.rate(torch.rand(3), num_steps)


def test_rate_bad_inputs():
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\].*-0.5"):
        E.rate(torch.tensor([0.2, -0.5]), 3)
    with pytest.raises(TypeError, match="x must have a floating dtype, got torch.int64"):
        E.rate(torch.tensor([0, 1]), 3)
    with pytest.raises(TypeError, match="x must be a torch.Tensor, got list"):
        E.rate([0.1, 0.2], 3)
    with pytest.raises(TypeError, match="generator must be a torch.Generator"):
        E.rate(torch.rand(3), 3, generator=0)


# -- latency ---------------------------------------------------------------------------
modes = st.sampled_from(list(E.LatencyMode))


@FAST
@given(shape=shapes, num_steps=steps, mode=modes, seed=st.integers(0, 2**16))
def test_latency_at_most_one_spike(shape, num_steps, mode, seed):
    x = torch.rand(shape, generator=gen(seed))
    z = E.latency(x, num_steps, mode=mode)
    assert z.shape == (num_steps, *shape)
    assert set(z.unique().tolist()) <= {0.0, 1.0}
    assert (z.sum(0) <= 1).all()
    assert torch.equal(z.sum(0) == 1, x > 0.01)
    t = E.latency_times(x, num_steps, mode=mode)
    fired = torch.isfinite(t)
    assert torch.equal(z.argmax(0)[fired].float(), t[fired])


@FAST
@given(a=unit, b=unit, num_steps=steps, mode=modes)
def test_latency_larger_fires_earlier(a, b, num_steps, mode):
    lo, hi = sorted((a, b))
    t = E.latency_times(torch.tensor([lo, hi]), num_steps, mode=mode)
    assert t[1] <= t[0]


@pytest.mark.parametrize("mode", list(E.LatencyMode))
def test_latency_end_points(mode):
    t = E.latency_times(torch.tensor([1.0, 0.0101, 0.01, 0.0]), 10, mode=mode)
    assert t[0] == 0 and t[1] == 9
    assert math.isinf(t[2]) and math.isinf(t[3])


@FAST
@given(shape=shapes, num_steps=steps, mode=modes, seed=st.integers(0, 2**16), data=st.data())
def test_latency_window(shape, num_steps, mode, seed, data):
    window = data.draw(st.integers(1, num_steps))
    x = torch.rand(shape, generator=gen(seed))
    z = E.latency(x, num_steps, mode=mode, window=window)
    assert z.shape == (num_steps, *shape) and z[window:].sum() == 0           # nothing after the window
    assert torch.equal(z[:window], E.latency(x, window, mode=mode))           # the code of a window-step run
    t = E.latency_times(x, num_steps, mode=mode, window=window)
    assert torch.equal(t, E.latency_times(x, window, mode=mode))


def test_latency_window_end_points_and_errors():
    t = E.latency_times(torch.tensor([1.0, 0.5, 0.0]), 10, threshold=0.0, window=7)
    assert t.tolist() == [0.0, 3.0, math.inf]                                # 0.5 -> round(6 * 0.5)
    assert E.latency(torch.ones(2), 5, window=1)[0].tolist() == [1.0, 1.0]
    assert torch.equal(E.Latency(8, window=6)(torch.rand(3, generator=gen(2))),
                       E.latency(torch.rand(3, generator=gen(2)), 8, window=6))
    with pytest.raises(ValueError, match="window must be <= num_steps = 5, got 6"):
        E.latency(torch.rand(3), 5, window=6)
    with pytest.raises(ValueError, match="window must be an int >= 1, got 0"):
        E.latency_times(torch.rand(3), 5, window=0)
    with pytest.raises(ValueError, match="window must be <= num_steps = 4, got 5"):
        E.Latency(4, window=5)


def test_latency_bad_inputs():
    with pytest.raises(ValueError, match=r"threshold must lie in \(0.0, 1.0\), got 0.0"):
        E.latency(torch.rand(3), 5, mode=E.LatencyMode.LOG, threshold=0.0)
    with pytest.raises(TypeError, match="mode must be one of LatencyMode.LINEAR, LatencyMode.LOG, got 'log'"):
        E.latency(torch.rand(3), 5, mode="log")
    with pytest.raises(ValueError, match=r"x must lie in \[0, 1\]"):
        E.latency(torch.tensor([1.5]), 5)
    with pytest.raises(ValueError, match="num_steps"):
        E.latency(torch.rand(3), 0)


# -- delta -----------------------------------------------------------------------------
@FAST
@given(num_steps=st.integers(1, 20), th=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_delta_tracks_signal_within_threshold(num_steps, th, seed):
    x = torch.randn(num_steps, 3, generator=gen(seed)).cumsum(0) * 0.3
    s = E.delta(x, th)
    assert s.shape == x.shape and set(s.unique().tolist()) <= {-1.0, 0.0, 1.0}
    assert (s[0] == 0).all()
    ref = x[0].clone()
    for t in range(1, num_steps):
        d = x[t] - ref
        fired = s[t] != 0
        assert torch.equal(torch.sign(d[fired]), s[t][fired])
        assert (d[fired].abs() >= th - 1e-6).all() and (d[~fired].abs() < th + 1e-6).all()
        ref = torch.where(fired, x[t], ref)
    two = E.delta(x, th, output=E.DeltaOutput.ON_OFF)
    assert two.shape == (*x.shape, 2)
    assert torch.equal(two[..., 0] - two[..., 1], s)


def test_delta_examples():
    x = torch.tensor([0.0, 0.05, 0.12, 0.3, 0.3, 0.1])
    assert E.delta(x, 0.1).tolist() == [0, 0, 1, 1, 0, -1]
    assert E.delta(torch.ones(5, 2), 0.1).abs().sum() == 0


def test_delta_bad_inputs():
    with pytest.raises(ValueError, match=r"threshold must lie in \(0.0, inf\), got -0.1"):
        E.delta(torch.rand(4), -0.1)
    with pytest.raises(TypeError, match="output must be one of"):
        E.delta(torch.rand(4), 0.1, output="signed")
    with pytest.raises(ValueError, match="T >= 1"):
        E.delta(torch.rand(0, 3), 0.1)


# -- population ------------------------------------------------------------------------
@FAST
@given(shape=shapes, n=st.integers(2, 10), seed=st.integers(0, 2**16))
def test_population_nearest_centre_responds_most(shape, n, seed):
    x = torch.rand(shape, generator=gen(seed)) * 4 - 2
    r = E.population(x, n, low=-2.0, high=2.0)
    assert r.shape == (*shape, n)
    assert (r > 0).all() and (r <= 1).all()
    centres = torch.linspace(-2, 2, n)
    nearest = (x.unsqueeze(-1) - centres).abs().argmin(-1)
    assert torch.equal(r.argmax(-1), nearest)


def test_population_values_and_composition():
    r = E.population(torch.tensor([0.0, 0.5]), 3)
    assert torch.allclose(r[0], torch.tensor([1.0, math.exp(-0.5), math.exp(-2.0)]))
    assert torch.allclose(r[1], torch.tensor([math.exp(-0.5), 1.0, math.exp(-0.5)]))
    assert E.population(torch.tensor([3.0]), 1, low=2.0, high=4.0).item() == 1.0
    assert E.rate(r, 7, generator=gen()).shape == (7, 2, 3)


def test_population_bad_inputs():
    with pytest.raises(ValueError, match="num_neurons must be an int >= 1, got 0"):
        E.population(torch.rand(2), 0)
    with pytest.raises(ValueError, match=r"high must lie in \(1.0, inf\), got 1.0"):
        E.population(torch.rand(2), 4, low=1.0, high=1.0)
    with pytest.raises(ValueError, match="sigma must lie in"):
        E.population(torch.rand(2), 4, sigma=0.0)


# -- ternary ---------------------------------------------------------------------------
@FAST
@given(shape=shapes, th=st.floats(0.01, 2.0), seed=st.integers(0, 2**16))
def test_ternary_signs_and_symmetry(shape, th, seed):
    x = torch.randn(shape, generator=gen(seed))
    s = E.ternary(x, th)
    assert s.shape == x.shape
    assert torch.equal(s, torch.sign(x) * (x.abs() >= th))
    assert torch.equal(E.ternary(-x, th), -s)


def test_ternary_levels():
    s = E.ternary(torch.tensor([-1.0, 0.2, 0.7]), (0.1, 0.5))
    assert s.tolist() == [[-1, -1], [1, 0], [1, 1]]
    with pytest.raises(ValueError, match="strictly increasing"):
        E.ternary(torch.rand(3), (0.5, 0.1))
    with pytest.raises(ValueError, match="threshold must lie in"):
        E.ternary(torch.rand(3), 0.0)
    with pytest.raises(ValueError, match=r"threshold\[1\] must lie in"):
        E.ternary(torch.rand(3), (0.1, -1.0))


# -- direct ----------------------------------------------------------------------------
def test_direct_repeats_and_passes_gradient():
    x = torch.rand(2, 3, requires_grad=True)
    y = E.direct(x, 4)
    assert y.shape == (4, 2, 3) and all(torch.equal(y[t], x) for t in range(4))
    y.sum().backward()
    assert torch.equal(x.grad, torch.full((2, 3), 4.0))
    with pytest.raises(ValueError, match="num_steps"):
        E.direct(x, 0)


# -- settings objects ------------------------------------------------------------------
def test_dataclasses_call_their_function():
    x = torch.rand(3, 4, generator=gen(1))
    assert torch.equal(E.Rate(6, generator=gen(2))(x), E.rate(x, 6, generator=gen(2)))
    assert torch.equal(E.Latency(6, E.LatencyMode.LOG)(x), E.latency(x, 6, mode=E.LatencyMode.LOG))
    assert torch.equal(E.Delta(0.2)(x), E.delta(x, 0.2))
    assert torch.equal(E.Population(5)(x), E.population(x, 5))
    assert torch.equal(E.Ternary((0.2, 0.4))(x), E.ternary(x, (0.2, 0.4)))
    assert torch.equal(E.Direct(3)(x), E.direct(x, 3))
    with pytest.raises(dataclasses.FrozenInstanceError):
        E.Rate(3).num_steps = 4
    with pytest.raises(ValueError, match="num_steps must be an int >= 1, got 0"):
        E.Rate(0)
