"""``spikeforge train --dataset tonic:NMNIST`` streams tonic's dataset a batch at a time, and on the
same files gives the run that spikeforge's own reader (``--dataset nmnist``) gives."""
from __future__ import annotations

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic")

from spikeforge.train import Trainer, make_config  # noqa: E402
from spikeforge.train.cli import main  # noqa: E402
from spikeforge.train.tasks import load_task  # noqa: E402
from test_transforms_tonic import _nmnist_bin  # noqa: E402


def _ten_digits(root, train: int = 3, test: int = 1):
    """root/NMNIST/{Train,Test}/<digit 0-9>/<id>.bin (spikeforge's reader wants all ten folders)."""
    rng = np.random.default_rng(3)
    for split, n in (("Train", train), ("Test", test)):
        for d in range(10):
            for k in range(n):
                ev = np.zeros(50, dtype=[("x", int), ("y", int), ("t", int), ("p", int)])
                ev["x"], ev["y"] = 3 * d + rng.integers(0, 3, 50), rng.integers(0, 34, 50)
                ev["t"], ev["p"] = np.sort(rng.integers(0, 300_000, 50)), rng.integers(0, 2, 50)
                _nmnist_bin(root / "NMNIST" / split / str(d) / f"{k:05d}.bin", ev)
    return root


def _cfg(dataset, root, **kw):
    return make_config(dataset=dataset, data_root=str(root), epochs=1, steps=5, hidden=16, batch_size=8, **kw)


def test_tonic_dataset_is_read_a_batch_at_a_time(tmp_path, monkeypatch):
    task = load_task(_cfg("tonic:NMNIST", _ten_digits(tmp_path)))
    assert task.streamed and (len(task.train.labels), len(task.val.labels), len(task.test.labels)) == (27, 3, 10)
    reads = []
    original = tonic.datasets.NMNIST.__getitem__
    monkeypatch.setattr(tonic.datasets.NMNIST, "__getitem__", lambda self, i: reads.append(i) or original(self, i))
    batches = task.train.batches([torch.arange(0, 8), torch.arange(8, 16)])
    x, _ = next(batches)
    assert x.shape == (8, 5, 34 * 34 * 2) and len(reads) == 8
    next(batches)
    assert len(reads) == 16


def test_tonic_and_spikeforge_readers_give_the_same_run(tmp_path):
    root = _ten_digits(tmp_path)
    runs = []
    for dataset in ("tonic:NMNIST", "nmnist"):
        t = Trainer(_cfg(dataset, root), tmp_path / dataset.replace(":", "-"), quiet=True, plots=False)
        t._one_epoch()
        runs.append(t)
    a, b = runs
    assert len(a.task.classes) == len(b.task.classes) == 10          # tonic names them "0 - zero", ...
    assert torch.equal(a.task.test.labels, b.task.test.labels)
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.history[0]["val_loss"] == b.history[0]["val_loss"]


def test_cli_trains_one_epoch_on_tonic_nmnist_with_a_worker(tmp_path, capsys):
    root = _ten_digits(tmp_path, train=2)
    rc = main(["train", "--dataset", "tonic:NMNIST", "--data-root", str(root), "--epochs", "1", "--steps", "5",
               "--hidden", "16", "--batch-size", "8", "--workers", "1", "--no-plots", "--quiet",
               "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "test accuracy" in out
