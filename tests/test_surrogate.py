"""Surrogates: Heaviside forward; backward equals the derivative of an independent primitive."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
from conftest import PRIMITIVES, SURROGATE_IDS, SURROGATES, heaviside, primitive
from hypothesis import given, settings
from hypothesis import strategies as st

from spikeforge import functional as F
from spikeforge import surrogate as S

# points on both sides of 0, the signed zeros, and the kinks of the piecewise surrogates
EDGES = [-1e-300, -0.0, 0.0, 1e-300, 1e-7, -1e-7]


def grid(alpha, dtype=torch.float64):
    k = 1.0 / alpha  # where Triangle and PiecewiseQuadratic have their kinks
    kinks = [k * f for f in (1.0, -1.0, 1 + 1e-9, -1 - 1e-9, 1 - 1e-9, -1 + 1e-9)]
    x = torch.cat([torch.linspace(-4.0, 4.0, 801, dtype=torch.float64), torch.tensor(kinks + EDGES)])
    return x.to(dtype)


def reference_grad(surrogate, x):
    """d/dx of the primitive written in conftest.PRIMITIVES, by autograd."""
    x = x.detach().requires_grad_(True)
    (g,) = torch.autograd.grad(primitive(surrogate)(x).sum(), x)
    return g


def test_every_builtin_has_an_independent_primitive():
    for cls in S.BUILTIN:
        assert cls.__name__ in PRIMITIVES, cls


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64],
                         ids=["f16", "bf16", "f32", "f64"])
@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_forward_is_heaviside(surrogate, dtype):
    x = torch.tensor([-2.0, -1e-3, -0.0, 0.0, 1e-3, 2.0, -1e30, 1e30], dtype=dtype)
    z = surrogate(x)
    assert z.dtype == dtype and z.shape == x.shape
    assert z.tolist() == [0.0, 0.0, 1.0, 1.0, 1.0, 1.0, 0.0, 1.0]
    assert torch.equal(S.spike(x, surrogate), z)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_grad_matches_primitive_at_default_alpha(surrogate):
    x = grid(surrogate.alpha)
    torch.testing.assert_close(surrogate.grad(x), reference_grad(surrogate, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
@settings(derandomize=True, deadline=None, max_examples=15)
@given(alpha=st.floats(0.05, 50.0))
def test_grad_matches_primitive_for_any_alpha(surrogate, alpha):
    s = dataclasses.replace(surrogate, alpha=alpha)
    x = grid(alpha)
    torch.testing.assert_close(s.grad(x), reference_grad(s, x), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_spike_backward_is_grad_out_times_surrogate(surrogate):
    x = grid(surrogate.alpha).requires_grad_(True)
    g_out = torch.linspace(-2.0, 3.0, x.numel(), dtype=x.dtype)
    (gx,) = torch.autograd.grad(S.spike(x, surrogate), x, g_out)
    torch.testing.assert_close(gx, g_out * reference_grad(surrogate, x), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_grad_is_even_nonnegative_finite(surrogate):
    x = grid(surrogate.alpha)
    g = surrogate.grad(x)
    assert torch.isfinite(g).all() and (g >= 0).all()
    torch.testing.assert_close(g, surrogate.grad(-x), rtol=1e-8, atol=1e-15)  # s(1-s) cancels in the tail
    assert g.dtype == x.dtype and g.shape == x.shape


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_grad_in_float32_matches_float64(surrogate):
    x = grid(surrogate.alpha)
    torch.testing.assert_close(surrogate.grad(x.float()), surrogate.grad(x).float(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("surrogate", SURROGATES, ids=SURROGATE_IDS)
def test_spike_gradcheck_against_straight_through_twin(surrogate):
    """``spike`` is not differentiable in the ordinary sense (gradcheck's finite differences
    of a step are 0), so gradcheck the smooth twin ``H(x) + P(x) - P(x).detach()`` and check that
    ``spike``'s backward equals the twin's backward on the same points."""
    x = torch.linspace(-2.0, 2.0, 9, dtype=torch.float64).add(0.013).requires_grad_(True)
    prim = primitive(surrogate)
    assert torch.autograd.gradcheck(prim, (x,))
    (a,) = torch.autograd.grad(S.spike(x, surrogate).sum(), x)
    p = prim(x)
    (b,) = torch.autograd.grad((heaviside(x) + p - p.detach()).sum(), x)
    torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)


def test_closed_forms_at_zero():
    """Peak values written out by hand, independently of the primitives."""
    assert S.StraightThrough(3.0).grad(torch.zeros(1)).item() == pytest.approx(3.0)
    assert S.Sigmoid(4.0).grad(torch.zeros(1)).item() == pytest.approx(1.0)
    assert S.ATan(2.0).grad(torch.zeros(1)).item() == pytest.approx(1.0)
    assert S.FastSigmoid(25.0).grad(torch.zeros(1)).item() == pytest.approx(1.0)
    assert S.Triangle(2.0).grad(torch.tensor([0.0, 0.25, 0.5, 1.0])).tolist() == pytest.approx([2.0, 1.0, 0.0, 0.0])
    assert S.PiecewiseQuadratic(2.0).grad(torch.tensor([0.25, 0.6])).tolist() == pytest.approx([1.0, 0.0])
    assert S.Erf(2.0).grad(torch.zeros(1)).item() == pytest.approx(2.0 / math.sqrt(math.pi))
    assert S.Gaussian(1.0).grad(torch.ones(1)).item() == pytest.approx(math.exp(-0.5) / math.sqrt(2 * math.pi))


def test_user_subclass_and_custom_are_used_in_backward():
    @dataclasses.dataclass(frozen=True)
    class Box(S.Surrogate):
        alpha: float = 0.5

        def grad(self, x):
            return (x.abs() < self.alpha).to(x.dtype)

    x = torch.tensor([-1.0, -0.2, 0.0, 0.4, 0.6], requires_grad=True)
    for sur in (Box(), S.Custom(lambda v, a: (v.abs() < a).to(v.dtype), alpha=0.5)):
        (g,) = torch.autograd.grad(sur(x).sum(), x)
        assert g.tolist() == [0.0, 1.0, 1.0, 1.0, 0.0]


def test_custom_takes_fn_positionally_and_alpha_by_keyword():
    c = S.Custom(torch.ones_like)
    assert c.fn is torch.ones_like and c.alpha == 1.0
    assert S.Custom(lambda x, a: x, alpha=3.0).alpha == 3.0


def test_surrogates_are_frozen_hashable_and_comparable():
    s = S.Sigmoid(3.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.alpha = 1.0
    assert s == S.Sigmoid(3.0) and s != S.Sigmoid(2.0) and hash(s) == hash(S.Sigmoid(3.0))


def test_aliases_and_default():
    assert S.SuperSpike is S.FastSigmoid
    assert isinstance(F.DEFAULT_SURROGATE, S.ATan)
    assert len(set(S.BUILTIN)) == len(S.BUILTIN)
    for name in S.__all__:
        assert hasattr(S, name)
