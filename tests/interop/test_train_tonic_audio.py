"""``spikeforge train --dataset tonic:SHD`` / ``tonic:SSC``: tonic's audio events (fields t, x, p, no y)
are binned over the 700 channels, as ``--dataset shd`` bins spikeforge's own reader's events, and the
two give the same run on the same files (tiny SHD-format HDF5 files written here, in the layout tonic's
``HSD`` reads: ``spikes/times``, ``spikes/units``, ``labels``, ``extra/keys``, ``extra/speaker``)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

tonic = pytest.importorskip("tonic")
h5py = pytest.importorskip("h5py")

from spikeforge.data import ToFrame  # noqa: E402
from spikeforge.data.tonic_interop import open_tonic  # noqa: E402
from spikeforge.train import Trainer, make_config  # noqa: E402
from spikeforge.train.cli import main  # noqa: E402
from spikeforge.train.tasks import load_task  # noqa: E402


def _write(path, n: int, n_classes: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        times = f.create_dataset("spikes/times", (n,), dtype=h5py.vlen_dtype(np.float16))
        units = f.create_dataset("spikes/units", (n,), dtype=h5py.vlen_dtype(np.uint16))
        for i in range(n):
            k = int(rng.integers(3, 30))
            times[i] = np.sort(rng.uniform(0, 0.9, k)).astype(np.float16)
            units[i] = rng.integers(0, 700, k).astype(np.uint16)
        f["labels"] = (np.arange(n) % n_classes).astype(np.uint16)
        f["extra/keys"] = np.array([f"word{c}" for c in range(n_classes)], dtype=h5py.string_dtype())
        f["extra/speaker"] = np.zeros(n, np.uint16)


def _shd(root, train: int = 24, test: int = 10):
    """root/SHD/shd_{train,test}.h5, without the .zip tonic downloads them in."""
    _write(root / "SHD" / "shd_train.h5", train, 5, seed=0)
    _write(root / "SHD" / "shd_test.h5", test, 5, seed=1)
    return root


def _cfg(dataset, root, **kw):
    return make_config(dataset=dataset, data_root=str(root), epochs=1, steps=6, hidden=16, batch_size=8, **kw)


def test_tonic_shd_streams_700_channel_frames(tmp_path):
    task = load_task(_cfg("tonic:SHD", _shd(tmp_path)))
    assert task.streamed and task.n_in == 700
    assert task.classes == tuple(f"word{c}" for c in range(5))           # extra/keys, decoded
    assert (len(task.train.labels), len(task.val.labels), len(task.test.labels)) == (22, 2, 10)
    assert task.test.labels.tolist() == [i % 5 for i in range(10)]        # read from the file
    x, y = task.test.take(torch.arange(4))
    assert x.shape == (4, 6, 700) and y.tolist() == [0, 1, 2, 3]
    events, _ = open_tonic("SHD", tmp_path, train=False)[0]
    assert "y" not in events.dtype.names and x[0].sum() == len(events)     # every spike counted once


def test_tonic_shd_and_spikeforge_shd_give_the_same_run(tmp_path):
    root = _shd(tmp_path)
    runs = []
    for dataset in ("tonic:SHD", "shd"):
        t = Trainer(_cfg(dataset, root), tmp_path / dataset.replace(":", "-"), quiet=True, plots=False)
        t._one_epoch()
        runs.append(t)
    a, b = runs
    assert torch.equal(a.task.test.take(torch.arange(10))[0], b.task.test.take(torch.arange(10))[0])
    for k, v in a.model.state_dict().items():
        assert torch.equal(v, b.model.state_dict()[k]), k
    assert a.history[0]["val_loss"] == b.history[0]["val_loss"]


def test_spikeforge_to_frame_as_a_tonic_transform_on_shd(tmp_path):
    ds = open_tonic("SHD", _shd(tmp_path), train=True, transform=ToFrame((700, 1, 1), n_time_bins=3))
    frames, label = ds[1]
    assert frames.shape == (3, 1, 1, 700) and int(label) == 1


def test_cli_trains_tonic_ssc_with_its_three_splits(tmp_path, capsys):
    for split, n in (("train", 20), ("valid", 6), ("test", 6)):
        _write(tmp_path / "SSC" / f"ssc_{split}.h5", n, 4, seed=len(split))
    rc = main(["train", "--dataset", "tonic:SSC", "--data-root", str(tmp_path), "--epochs", "1", "--steps", "4",
               "--hidden", "8", "--batch-size", "8", "--no-plots", "--out", str(tmp_path / "run")])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert "training tonic:SSC: 20 samples" in err and "test accuracy" in err


def test_missing_shd_file_names_it(tmp_path, capsys):
    (tmp_path / "SHD").mkdir()
    rc = main(["train", "--dataset", "tonic:SHD", "--data-root", str(tmp_path), "--no-plots"])
    err = capsys.readouterr().err
    assert rc == 2 and len(err.strip().splitlines()) == 1
    assert "SHD/shd_train.h5" in err and "never downloads" in err


def test_tonic_shd_takes_the_defaults_of_shd(tmp_path):
    assert make_config(dataset="tonic:SHD", data_root=str(tmp_path)).steps == \
        make_config(dataset="shd", data_root=str(tmp_path)).steps == 50
    assert make_config(dataset="tonic:SSC", data_root=str(tmp_path), steps=7).steps == 7
