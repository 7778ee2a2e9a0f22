"""The worked example of docs/nir.md runs as written: train, export, load back, then the same
trained layers run in snnTorch with the same spikes (the block's own assert)."""
from __future__ import annotations

import re
from pathlib import Path

import pytest


def test_docs_nir_example_runs_in_snntorch():
    pytest.importorskip("snntorch")
    text = (Path(__file__).resolve().parents[2] / "docs" / "nir.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", text, re.S)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        exec(block, namespace)
    assert namespace["spikes"].sum() > 0
