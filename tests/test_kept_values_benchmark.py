"""benchmarks/kept_values.py: each variant builds its own kernel (what it keeps, its K), on a tiny
shape, and csource.KEEP, csource.STAGE_WORK and the kernel cache are left as they were."""
from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import kept_values  # noqa: E402

from spikeforge.kernels import _fused, cpu, csource  # noqa: E402


def test_variants_keep_what_they_name_and_restore_the_default():
    before = csource.KEEP
    res = kept_values.measure("EIF", ["none", "costly", "costly+x"], reps=1, T=6, B=2, n=8)
    assert [nodes for _, nodes, _, _ in res.values()] == ["-", "exp", "exp, add_2"]
    assert [k for k, _, _, _ in res.values()] == [cpu.segment_steps(v, 1, 4) for v in (1, 2, 3)]
    assert all(f > 0 and b > 0 for _, _, f, b in res.values())
    assert csource.KEEP == before and not _fused._KERNELS


def test_a_variant_names_the_stage_work_and_it_is_restored(monkeypatch):
    work = csource.STAGE_WORK
    assert kept_values.stage_work("costly@inf", work) == float("inf") and kept_values.kinds("costly@inf") == {"costly"}
    assert kept_values.stage_work("none", work) == work and kept_values.kinds("none@80") == frozenset()
    built, source = [], csource.source
    monkeypatch.setattr(csource, "source", lambda *a, **k: built.append(source(*a, **k)) or built[-1])
    res = kept_values.measure("EIF", ["costly@inf", "costly@80"], reps=1, T=6, B=2, n=8)
    # (the last two: the variants; one before them when the module's own kernel is not cached yet)
    assert ["sf_c0[SB]" in src for src in built[-2:]] == [False, True]   # EIF's forward step cut at 80
    assert all(f > 0 and b > 0 for _, _, f, b in res.values())
    assert csource.STAGE_WORK == work and not _fused._KERNELS
