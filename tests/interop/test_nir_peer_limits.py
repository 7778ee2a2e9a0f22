"""PEER LIMITATIONS (Rockpool 3.1, Sinabs 3.1): neither can reproduce spikeforge's hard-reset LIF
(both reset by subtraction and may emit several spikes per step), so no spike-for-spike test is
possible. These tests pin down the actual behaviour of each peer's NIR import of a spikeforge
export, so that they fail (and tell us) when a peer changes.
"""
from __future__ import annotations

import pytest
import torch

import spikeforge as sf
from nir_peer_helpers import B, T, mlp, mlp_input

nir = pytest.importorskip("nir")


def test_rockpool_refuses_nir_lif():
    """Rockpool 3.1.0 reads ``nir.LIF.tau_mem``, which nir 1.0's LIF (field ``tau``) lacks: every
    LIF graph, spikeforge's included, fails to import. (Its CubaLIF import works but runs a
    subtractive multi-spike LIFTorch with exp(-dt/tau) decay: never spikeforge's Euler step.)"""
    modules = pytest.importorskip("rockpool.nn.modules")
    with pytest.raises(AttributeError) as e:
        modules.from_nir(sf.nir.export(mlp(), dt=1e-3))
    assert str(e.value) == "'LIF' object has no attribute 'tau_mem'"


def test_sinabs_loads_lif_with_subtractive_multispike_reset_and_tau_in_steps():
    """Sinabs 3.1.3 loads spikeforge's LIF layers as LIFSqueeze with MembraneSubtract + MultiSpike
    (not the hard reset NIR's v_reset asks for) and reads tau in *time steps*
    (alpha = exp(-1/tau), not spikeforge's 1 - dt/tau), ignoring dt, r and v_reset."""
    sinabs = pytest.importorskip("sinabs")
    from sinabs.activation import MembraneSubtract, MultiSpike
    m = sinabs.from_nir(sf.nir.export(mlp(), dt=1.0), batch_size=B)
    lifs = [c for c in m.children() if type(c).__name__ == "LIFSqueeze"]
    assert len(lifs) == 2
    for layer in lifs:
        assert isinstance(layer.reset_fn, MembraneSubtract)
        assert layer.spike_fn is MultiSpike
        assert torch.equal(layer.tau_mem.detach(), torch.full_like(layer.tau_mem.detach(), 2.0))   # steps
    with torch.no_grad():
        out = m(mlp_input().transpose(0, 1).reshape(B * T, 4))   # (B*T, N), batch-major
    out = out[0] if isinstance(out, tuple) else out
    assert out.shape == (B * T, 3)
