"""benchmarks/streaming_stores.py: the two variants really stream and really do not, interleaved,
on a tiny shape, and cpu.STREAM_BYTES is left as it was."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import streaming_stores  # noqa: E402

from spikeforge.kernels import cpu  # noqa: E402


def test_on_streams_every_output_off_none_and_the_default_is_restored(monkeypatch):
    before, seen = cpu.STREAM_BYTES, []
    real = cpu.streams
    monkeypatch.setattr(cpu, "streams", lambda out: seen.append(real(out)) or real(out))
    res = streaming_stores.measure("LIF", reps=2, T=6, B=2, n=8)
    assert set(res) == {"on", "off"} and all(f > 0 and b > 0 for f, b in res.values())
    assert 1 in seen and 0 in seen
    # per pass (forward + backward: two outputs) on, then off, after a first pass with the default
    assert seen[-8:] == [1, 1, 0, 0] * 2
    assert cpu.STREAM_BYTES == before
