import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.nn import functional as F

from spikeforge import losses as L

FAST = settings(max_examples=25, deadline=None, derandomize=True)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def spikes(T=6, B=3, C=4, p=0.4, seed=0):
    return (torch.rand(T, B, C, generator=gen(seed)) < p).float()


def test_rate_ce_uses_spike_counts_as_logits():
    z, y = spikes(), torch.tensor([0, 3, 1])
    assert torch.allclose(L.rate_ce(z, y), F.cross_entropy(z.sum(0), y))
    z.requires_grad_(True)
    L.rate_ce(z, y).backward()
    assert z.grad.shape == z.shape and (z.grad[:, 0, 0] < 0).all()   # more target spikes -> lower loss


def test_max_membrane_ce():
    v = torch.randn(5, 2, 3, generator=gen())
    y = torch.tensor([2, 0])
    assert torch.allclose(L.max_membrane_ce(v, y), F.cross_entropy(v.amax(0), y))


def test_count_mse():
    y = torch.tensor([1, 0])
    z = torch.zeros(10, 2, 3)
    z[:8, 0, 1] = 1
    z[:8, 1, 0] = 1
    z[:2, :, 2] = 1
    assert L.count_mse(z, y, correct_rate=0.8, incorrect_rate=0.2) == pytest.approx(2 * 2**2 / 6, abs=1e-6)
    z[:2, 0, 0] = 1
    z[:2, 1, 1] = 1
    assert L.count_mse(z, y, correct_rate=0.8, incorrect_rate=0.2).item() == pytest.approx(0.0)
    with pytest.raises(ValueError, match=r"correct_rate must be a spike rate in \[0, 1\], got 1.5"):
        L.count_mse(z, y, correct_rate=1.5)


@FAST
@given(T=st.integers(1, 10), seed=st.integers(0, 2**16), p=st.floats(0.0, 0.6))
def test_first_spike_times_exact_on_binary_spikes(T, seed, p):
    z = spikes(T, 2, 5, p, seed)
    t = L.first_spike_times(z)
    fired = z.sum(0) > 0
    assert torch.equal(t[fired], z.argmax(0)[fired].float())
    assert (t[~fired] == T).all()


def test_first_spike_times_gradient():
    z = torch.zeros(6, 1, 2)
    z[3, 0, 0] = 1
    z[4, 0, 0] = 1
    z.requires_grad_(True)
    L.first_spike_times(z).sum().backward()
    g = z.grad[:, 0]
    assert g[:, 0].tolist() == [-3, -2, -1, -1, 0, 0]       # k - 3 before; t0 - t1 at the first spike
    assert g[:, 1].tolist() == [-6, -5, -4, -3, -2, -1]     # silent: k - T


def test_first_spike_ce_prefers_earlier_target():
    z = torch.zeros(5, 1, 2)
    z[1, 0, 0] = 1
    z[3, 0, 1] = 1
    assert L.first_spike_ce(z, torch.tensor([0])) < L.first_spike_ce(z, torch.tensor([1]))
    assert torch.allclose(L.first_spike_ce(z, torch.tensor([0]), tau=2.0),
                          F.cross_entropy(torch.tensor([[-0.5, -1.5]]), torch.tensor([0])))
    with pytest.raises(ValueError, match="tau must be a positive finite number of steps, got 0"):
        L.first_spike_ce(z, torch.tensor([0]), tau=0)


def test_first_spike_scores_tie_break():
    z = torch.zeros(6, 2, 4)
    z[2, 0, 1] = z[2, 0, 3] = 1          # sample 0: classes 1 and 3 first, at step 2; class 0 at 4
    z[4, 0, 0] = 1
    peak = torch.tensor([[9.0, 0.5, 0.0, 0.7], [0.3, 0.2, 0.3, 0.1]])   # sample 1: nobody fires
    assert torch.equal(L.first_spike_scores(z), -L.first_spike_times(z))
    scores = L.first_spike_scores(z, tie_break=peak)
    assert scores.argmax(1).tolist() == [3, 0]     # the larger peak among the earliest; equal peaks: lowest index
    assert (scores.argsort(1, descending=True)[0, :2] == torch.tensor([3, 1])).all()
    assert (scores[0, 0] < scores[0, 1]).item()   # a huge peak never beats an earlier spike
    assert ((scores + L.first_spike_times(z)).abs() < 1).all()
    v = peak.clone().requires_grad_(True)
    assert not L.first_spike_scores(z.requires_grad_(True), tie_break=v).requires_grad
    with pytest.raises(ValueError, match=r"tie_break must be a tensor of shape \(B, C\) = \(2, 4\), got \(4,\)"):
        L.first_spike_scores(z, tie_break=peak[0])


def test_accuracy():
    scores = torch.tensor([[1.0, 2.0], [3.0, 0.0], [1.0, 1.0]])
    assert L.accuracy(scores, torch.tensor([1, 0, 0])) == 1.0
    assert L.accuracy(scores, torch.tensor([1, 1, 1])) == pytest.approx(1 / 3)
    assert L.accuracy(-L.first_spike_times(spikes()), torch.zeros(3, dtype=torch.long)) >= 0.0
    with pytest.raises(ValueError, match=r"scores must be a tensor of shape \(B, C\)"):
        L.accuracy(torch.rand(2), torch.tensor([0, 1]))


@pytest.mark.parametrize("loss", [L.rate_ce, L.max_membrane_ce, L.count_mse, L.first_spike_ce])
def test_bad_inputs(loss):
    z = spikes()
    with pytest.raises(ValueError, match=r"must have shape \(T, B, C\) with T >= 1, got shape \(3, 4\)"):
        loss(z[0], torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="must have a floating dtype"):
        loss(z.long(), torch.tensor([0, 1, 2]))
    with pytest.raises(TypeError, match="target must be an integer tensor of class indices, got torch.float32"):
        loss(z, torch.tensor([0.0, 1.0, 2.0]))
    with pytest.raises(ValueError, match=r"target must have shape \(B,\) = \(3,\), got shape \(2,\)"):
        loss(z, torch.tensor([0, 1]))
    with pytest.raises(ValueError, match=r"target must hold class indices in \[0, 4\), got values in \[0, 4\]"):
        loss(z, torch.tensor([0, 4, 1]))
