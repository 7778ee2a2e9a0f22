"""Training on data sets read from files (``--dataset nmnist`` and the other readers): the splits
stream a batch at a time and never hold the whole split; streaming and in-memory splits give the
same run; bad files reach the user as one line; SHD frames, binary frames and ``SpikeLinear``."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from spikeforge import nn as snn
from spikeforge.data import NMNIST
from spikeforge.train import ConfigError, Trainer, make_config
from spikeforge.train.cli import main
from spikeforge.train.splits import Framed, Streamed, Tensors
from spikeforge.train.model import loss_and_logits
from spikeforge.train.tasks import batch_input, load_task
from test_data_readers import nmnist_bytes, write_shd

SMALL = ["--epochs", "1", "--steps", "5", "--hidden", "16", "--batch-size", "8", "--no-plots", "--quiet"]


def fake_nmnist(root, train: int = 3, test: int = 1, n_events: int = 40, seed: int = 0):
    """root/NMNIST/{Train,Test}/<digit>/<id>.bin in the published 40-bit format; digit d's
    events lie in columns 3d..3d+2, so the classes can be told apart."""
    rng = np.random.default_rng(seed)
    for split, n in (("Train", train), ("Test", test)):
        for d in range(10):
            folder = root / "NMNIST" / split / str(d)
            folder.mkdir(parents=True)
            for k in range(n):
                t = np.sort(rng.integers(0, 300_000, n_events))
                ev = zip(t, 3 * d + rng.integers(0, 3, n_events), rng.integers(0, 34, n_events),
                         rng.integers(0, 2, n_events))
                (folder / f"{k:05d}.bin").write_bytes(nmnist_bytes([tuple(map(int, e)) for e in ev]))
    return root


@pytest.fixture(scope="module")
def nmnist_root(tmp_path_factory):
    return fake_nmnist(tmp_path_factory.mktemp("nmnist"), train=4, test=2)


def config(root, **kw):
    return make_config(**{"dataset": "nmnist", "data_root": str(root), "epochs": 1, "steps": 5, "hidden": 16,
                          "batch_size": 8, **kw})


def test_cli_trains_one_epoch_on_nmnist_files(nmnist_root, tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--dataset", "nmnist", "--data-root", str(nmnist_root), *SMALL, "--out", str(out)]) == 0
    assert "test accuracy" in capsys.readouterr().out
    cfg = json.loads((out / "config.json").read_text())
    assert cfg["dataset"] == "nmnist" and cfg["data_root"] == str(nmnist_root) and cfg["frames"] == "counts"
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["status"] == "done" and len(metrics["history"]) == 1
    assert main(["eval", str(out)]) == 0
    assert f"{100 * metrics['test_accuracy']:.2f}%" in capsys.readouterr().out


def test_splits_are_streamed_per_item_and_a_batch_at_a_time(nmnist_root, monkeypatch):
    task = load_task(config(nmnist_root))
    assert task.streamed and task.n_in == 34 * 34 * 2 and task.classes == tuple(str(d) for d in range(10))
    # the validation set is a fixed random tenth of the train files, the test split its own folder
    assert (len(task.train.labels), len(task.val.labels), len(task.test.labels)) == (36, 4, 20)
    assert not set(task.train.items.indices) & set(task.val.items.indices)
    reads = []
    original = NMNIST.__getitem__
    monkeypatch.setattr(NMNIST, "__getitem__", lambda self, i: reads.append(i) or original(self, i))
    x, y = task.train.items[0]
    assert x.shape == (5, 34 * 34 * 2) and reads == [task.train.items.indices[0]]   # one item, one file
    reads.clear()
    lists = [torch.arange(k, k + 8) for k in range(0, 32, 8)]
    batches = task.train.batches(lists)
    x, y = next(batches)
    assert x.shape == (8, 5, 2312) and len(reads) == 8                   # the first batch alone was read
    assert torch.equal(y, task.train.labels[:8])
    assert sum(1 for _ in batches) == 3 and len(reads) == 32


def _in_memory(split: Streamed) -> Tensors:
    return Tensors(*split.take(torch.arange(len(split.labels))))


def test_streamed_and_in_memory_splits_give_the_same_run(nmnist_root, tmp_path):
    cfg = config(nmnist_root, epochs=2, batch_size=6)
    streamed = Trainer(cfg, tmp_path / "a", quiet=True, plots=False)
    memory = Trainer(cfg, tmp_path / "b", quiet=True, plots=False)
    t = memory.task
    memory.task = type(t)(t.classes, t.n_in, _in_memory(t.train), _in_memory(t.val), _in_memory(t.test))
    assert streamed.task.streamed and not memory.task.streamed
    for _ in range(2):
        streamed._one_epoch()
        memory._one_epoch()
    for k, v in streamed.model.state_dict().items():          # the same batches: the same weights, bit for bit
        assert torch.equal(v, memory.model.state_dict()[k]), k
    for a, b in zip(streamed.history, memory.history):
        assert (a["train_loss"], a["train_accuracy"]) == (b["train_loss"], b["train_accuracy"])
        assert (a["val_loss"], a["val_accuracy"]) == pytest.approx((b["val_loss"], b["val_accuracy"]), rel=1e-6)
    # evaluation batches differ (a training batch streamed, 1000 samples in memory): equal to rounding
    assert streamed.accuracy("test") == pytest.approx(memory.accuracy("test"), rel=1e-6)


@pytest.mark.parametrize("workers", [0, 1])
def test_an_empty_file_is_one_line_from_any_worker(tmp_path, capsys, workers):
    root = fake_nmnist(tmp_path, train=2, test=1)
    (root / "NMNIST" / "Train" / "4" / "00001.bin").write_bytes(b"")
    rc = main(["train", "--dataset", "nmnist", "--data-root", str(root), *SMALL, "--workers", str(workers),
               "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1 and "Traceback" not in err
    assert "Train/4/00001.bin: empty file (0 bytes)" in err


def test_missing_files_and_data_options(tmp_path, capsys):
    assert main(["train", "--dataset", "shd", "--data-root", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "zenkelab.org" in err and "SHD/shd_train.h5" in err
    for kw, match in ((dict(dataset="nmnist"), "needs --data-root"),
                      (dict(dataset="yinyang", workers=2), "workers is for data sets read from files"),
                      (dict(dataset="digits", frames="binary"), "frames binary is for event data"),
                      (dict(dataset="tonic:NMNIST", data_root="x", cache=True), "tonic.DiskCachedDataset"),
                      (dict(dataset="nmnist", data_root="x", workers=-1), "workers must be a non-negative"),
                      (dict(dataset="shd", data_root="x", encoding="latency"), "already a spike sequence")):
        with pytest.raises(ConfigError, match=match):
            make_config(**kw)


def _shd(root):
    (root / "SHD").mkdir()
    rng = np.random.default_rng(1)
    for split, n in (("train", 20), ("test", 6)):
        labels = np.arange(n) % 20
        # class c: 30 spikes on channels 30c..30c+9 over 0.1 s, repeated channels give counts > 1
        samples = [(np.sort(rng.random(30) * 0.1), 30 * c + rng.integers(0, 10, 30)) for c in labels]
        write_shd(root / "SHD" / f"shd_{split}.h5", samples, labels, np.float32)
    return root


def test_shd_counts_and_binary_frames(tmp_path):
    root = _shd(tmp_path)
    counts = load_task(make_config(dataset="shd", data_root=str(root), steps=4))
    x, _ = counts.train.take(torch.arange(4))
    assert counts.n_in == 700 and x.shape == (4, 4, 700) and x.max() > 1     # counts per channel and step
    assert x.sum() == 4 * 30                                                  # every spike counted once
    cfg = make_config(dataset="shd", data_root=str(root), steps=50, frames="binary", batch_size=20, epochs=1)
    trainer = Trainer(cfg, tmp_path / "run", quiet=True, plots=False)
    xb, yb = trainer.task.train.take(torch.arange(18))              # 20 files less the validation tenth
    assert set(xb.unique().tolist()) == {0.0, 1.0} and xb.sum() < 18 * 30
    assert isinstance(trainer.model.fc_in, snn.SpikeLinear)
    loss_and_logits(trainer.model(batch_input(xb)), yb, cfg.loss)[0].backward()
    assert trainer.model.fc_in.last_path == "sparse"          # 50 x 18 x 700 inputs at 0.1 % density
    counts = Trainer(cfg.replace(frames="counts"), tmp_path / "r2", quiet=True, plots=False)
    assert type(counts.model.fc_in) is torch.nn.Linear        # counts: a plain dense layer


def test_a_data_set_without_a_published_split_is_held_out_at_random(tmp_path):
    for c in ("accordion", "airplanes", "anchor"):
        folder = tmp_path / "NCALTECH101" / "Caltech101" / c
        folder.mkdir(parents=True)
        for k in range(10):
            (folder / f"image_{k:04d}.bin").write_bytes(nmnist_bytes([(k, 200, 150, 1)]))
    task = load_task(make_config(dataset="ncaltech101", data_root=str(tmp_path)))
    parts = [task.split(s).items.indices for s in ("train", "val", "test")]
    assert [len(p) for p in parts] == [25, 2, 3] and sorted(sum(parts, [])) == list(range(30))
    assert task.classes == ("accordion", "airplanes", "anchor") and task.n_in == 256 * 256 * 2
    again = load_task(make_config(dataset="ncaltech101", data_root=str(tmp_path), seed=5))
    assert [again.split(s).items.indices for s in ("train", "val", "test")] == parts   # fixed, not per seed


def test_framed_items_carry_failures_as_values():
    class Broken(torch.utils.data.Dataset):
        def __len__(self):
            return 2

        def __getitem__(self, i):
            raise KeyError("no such sample")

    split = Streamed(Framed(Broken(), [0, 1]), torch.zeros(2, dtype=torch.int64), torch.device("cpu"))
    with pytest.raises(RuntimeError, match="sample 1 of Broken: KeyError: 'no such sample'"):
        split.take(torch.tensor([1]))
