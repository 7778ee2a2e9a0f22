"""spikeforge.interop without the peer installed (the NeuroBench runs themselves are in
tests/interop/test_neurobench.py, in .venv-interop)."""
import sys

import pytest
import torch
from torch import nn

import spikeforge as sf
from spikeforge.interop import BatchFirst, neurobench_model


def test_neurobench_missing_gives_one_line_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "neurobench", None)   # import neurobench -> ImportError
    monkeypatch.setitem(sys.modules, "neurobench.models", None)
    with pytest.raises(ImportError, match=r"^neurobench_model needs NeuroBench: pip install neurobench \(") as e:
        neurobench_model(nn.Sequential(nn.Linear(2, 3), sf.nn.LIF()))
    assert "\n" not in str(e.value)


def test_batch_first_wrapper_transposes_around_a_time_first_net():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(4, 5), sf.nn.LIF(tau=2.0, v_threshold=0.2))
    x = torch.rand(3, 7, 4)   # (B, T, F)
    assert torch.equal(BatchFirst(net)(x), net(x.transpose(0, 1)).transpose(0, 1))
