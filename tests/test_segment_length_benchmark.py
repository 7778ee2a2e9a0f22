"""benchmarks/segment_length.py: the K each segment size gives, on a tiny shape, and the kernels left
with the K of ``kernels.cpu.SEGMENT_BYTES`` again (neither size measured is the default)."""
from __future__ import annotations

import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import segment_length  # noqa: E402

import spikeforge as sf  # noqa: E402
from spikeforge.kernels import _fused, cpu, csource  # noqa: E402


def test_measure_sets_k_from_the_segment_size_and_leaves_the_default():
    # CubaLIF with only x's gradient wanted: a segment step holds its 2 states and nothing more (the value x
    # enters through, the next synaptic current, is read from the next step's slots: csource.kept), in 2 x the
    # segment bytes (per state variable)
    res = segment_length.measure("CubaLIF", [1 << 19, 1 << 20], reps=1, T=6, B=2, n=8)
    assert [k for k, _, _ in res.values()] == [2 * (1 << 19) // (2 * csource.CHUNK * 4),
                                               2 * (1 << 20) // (2 * csource.CHUNK * 4)]
    assert all(f > 0 and b > 0 for _, f, b in res.values())
    assert not _fused._KERNELS
    sf.nn.CubaLIF(backend="cpu")(torch.rand(3, 2, 4, requires_grad=True)).sum().backward()
    (k,) = _fused._KERNELS.values()
    assert csource.step_values(k.tr, k.want) == 2 and k.K == 2 * cpu.SEGMENT_BYTES // (2 * csource.CHUNK * 4)
