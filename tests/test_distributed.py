"""Several processes (``spikeforge train --nproc N``, DDP over gloo) and ``--precision bf16``:
two workers end each epoch with the weights of one process on the same global batches (the
last partial batch included); a worker killed with ``kill -9`` is reported in one line, the
others stop, and ``--resume`` on two workers finishes the run with the same weights again."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from spikeforge import functional as F
from spikeforge.neurons import REGISTRY
from spikeforge.train import Precision, Trainer, make_config, train
from spikeforge.train.checkpoint import load_checkpoint, save_checkpoint
from spikeforge.train.distributed import Group

# 5000 Yin-Yang samples in batches of 300: 16 full batches and a last one of 200
SMALL = dict(epochs=2, hidden=48, steps=12, batch_size=300)
FLAGS = ["--epochs", "2", "--hidden", "48", "--steps", "12", "--batch-size", "300", "--no-plots"]
ROOT = Path(__file__).resolve().parents[1]


def _close(a: dict, b: dict, rtol: float = 1e-5) -> None:
    """Equal to float tolerance. (One epoch: spiking networks are chaotic, a threshold crossing
    that flips under a different summation order grows over more epochs.)"""
    for k in a:
        scale = max(float(b[k].abs().max()), 1e-12)
        assert float((a[k] - b[k]).abs().max()) <= rtol * scale, k


def _one_epoch(tmp_path, start: dict | None = None) -> dict:
    """The weights after one epoch on one process (from the checkpoint ``start``)."""
    t = Trainer(make_config(**SMALL), tmp_path / "one", quiet=True, plots=False)
    if start is not None:
        t.load_state(start)
    t._one_epoch()
    return {k: v.clone() for k, v in t.model.state_dict().items()}


def _workers(launcher: subprocess.Popen) -> dict[int, int]:
    """rank -> pid of the launcher's workers."""
    kids = Path(f"/proc/{launcher.pid}/task/{launcher.pid}/children").read_text().split()
    ranks = {}
    for pid in map(int, kids):
        env = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
        rank = [e for e in env if e.startswith(b"RANK=")]
        if rank:
            ranks[int(rank[0][5:])] = pid
    return ranks


def _spikeforge(*args) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    return subprocess.Popen([sys.executable, "-m", "spikeforge", *args], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


def test_two_processes_match_one_and_resume_after_kill_9(tmp_path):
    run = tmp_path / "run"
    launcher = _spikeforge("train", *FLAGS, "--nproc", "2", "--out", str(run))
    single = _one_epoch(tmp_path)                         # meanwhile, in this process
    deadline = time.monotonic() + 120
    while not (run / "last.pt").exists():                 # epoch 1 done: keep it, kill rank 1 in epoch 2
        assert launcher.poll() is None and time.monotonic() < deadline, launcher.communicate()
        time.sleep(0.01)
    os.kill(_workers(launcher)[1], signal.SIGKILL)
    _, err = launcher.communicate(timeout=60)
    assert launcher.returncode != 0
    lines = [x for x in err.splitlines() if "error" in x]
    assert len(lines) == 1 and "worker rank 1" in lines[0] and "SIGKILL" in lines[0], err
    assert f"--resume {run}" in lines[0]
    epoch1 = load_checkpoint(run / "last.pt")
    assert epoch1["epoch"] == 1                           # killed in epoch 2
    _close(epoch1["model"], single)                       # 2 processes == 1 process after one epoch

    again = _spikeforge("train", "--resume", str(run), "--nproc", "2", "--quiet")
    single = _one_epoch(tmp_path, epoch1)                 # epoch 2 from the same checkpoint, one process
    out, err = again.communicate(timeout=120)
    assert again.returncode == 0, err
    assert "test accuracy" in out and out.count("\n") == 1             # rank 0 alone reports
    final = load_checkpoint(run / "last.pt")
    assert final["epoch"] == 2
    _close(final["model"], single)
    assert not [p for p in run.iterdir() if p.name.endswith(".tmp")]


def test_a_global_batch_is_shared_with_the_weights_of_a_mean():
    idx = torch.arange(7)
    parts = [Group(r, 3, r, torch.device("cpu")).share(idx) for r in range(3)]
    assert torch.equal(torch.cat([p for p, _ in parts]), idx)
    # sum over ranks of weight * mean(part) / world == mean over the batch
    x = torch.rand(7)
    assert torch.allclose(sum(w * x[p].mean() for p, w in parts) / 3, x.mean())
    short = [Group(r, 3, r, torch.device("cpu")).share(idx[:2]) for r in range(3)]
    assert [w for _, w in short] == [1.5, 1.5, 0.0] and len(short[2][0]) == 1   # a spare rank runs 1 sample
    for n in (0, 1, 5, 1000):
        parts = [Group(r, 3, r, torch.device("cpu")).part(n) for r in range(3)]
        assert torch.equal(torch.cat([torch.arange(n)[p] for p in parts]), torch.arange(n))


def test_cpu_kernels_compute_bf16_input_in_float32():
    x = torch.randn(8, 3, 5) * 2
    spec = REGISTRY["LIF"]()
    z, s, tr, name = F.run(spec, x.bfloat16(), record=True)
    z32, s32, tr32, _ = F.run(spec, x.bfloat16().float(), record=True)
    assert name == "cpu" and z.dtype == s.v.dtype == tr.v.dtype == torch.bfloat16
    assert torch.equal(z, z32.bfloat16()) and torch.equal(s.v, s32.v.bfloat16())
    assert F.run(spec, x.bfloat16(), backend="reference")[1].v.dtype == torch.bfloat16   # asked for: as is
    lin = torch.nn.Linear(5, 5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        h = lin(x)
        assert h.dtype == torch.bfloat16 and F.run(spec, h)[3] == "cpu"


def test_bf16_training_and_a_checkpoint_from_before_precision(tmp_path):
    cfg = make_config(epochs=1, hidden=16, steps=6, batch_size=500, precision="bf16")
    assert cfg.precision is Precision.BF16 and cfg.to_dict()["precision"] == "bf16"
    result = train(cfg, tmp_path / "bf16", quiet=True, plots=False)
    assert result.test_accuracy > 0.4
    old = make_config(epochs=1, hidden=16, steps=6, batch_size=500)
    train(old, tmp_path / "old", quiet=True, plots=False)
    ck = load_checkpoint(tmp_path / "old" / "last.pt")
    del ck["config"]["precision"]                       # as written before the option existed
    save_checkpoint(tmp_path / "old" / "last.pt", **{k: v for k, v in ck.items() if k not in ("format", "version")})
    Trainer(old, tmp_path / "old", quiet=True, plots=False).load_state(ck)


def test_two_processes_stream_files_as_one_process(tmp_path):
    """A data set read from files (each rank streams its share of every batch, one DataLoader
    worker each) ends the epoch with the weights of one process."""
    from test_train_streaming import fake_nmnist

    root = fake_nmnist(tmp_path / "data", train=4, test=1)
    flags = ["--dataset", "nmnist", "--data-root", str(root), "--epochs", "1", "--steps", "5", "--hidden", "16",
             "--batch-size", "8", "--no-plots", "--quiet"]          # 36 train samples: 4 batches of 8 and one of 4
    run = _spikeforge("train", *flags, "--nproc", "2", "--workers", "1", "--out", str(tmp_path / "run"))
    cfg = make_config(dataset="nmnist", data_root=str(root), epochs=1, steps=5, hidden=16, batch_size=8)
    one = Trainer(cfg, tmp_path / "one", quiet=True, plots=False)
    one._one_epoch()
    out, err = run.communicate(timeout=180)
    assert run.returncode == 0, err
    _close(load_checkpoint(tmp_path / "run" / "last.pt")["model"], one.model.state_dict())


def test_a_worker_killed_before_the_run_folder_exists_is_not_told_to_resume(tmp_path, capsys):
    """--resume needs the run folder's config.json: a worker killed during start-up (before rank 0
    wrote it) is told to run the command again, one killed later to resume."""
    from types import SimpleNamespace

    from spikeforge.train.distributed import _report

    procs = [SimpleNamespace(pid=1), SimpleNamespace(pid=42)]
    run = tmp_path / "run"
    assert _report([-15, -9], {0}, procs, [None, None], 2, str(run)) == 2
    err = capsys.readouterr().err
    assert "rank 1 (pid 42) was killed by SIGKILL" in err and "had not started" in err and "--resume" not in err
    run.mkdir()
    (run / "config.json").write_text("{}")
    assert _report([-15, -9], {0}, procs, [None, None], 2, str(run)) == 2
    assert f"continue with spikeforge train --resume {run} --nproc 2" in capsys.readouterr().err
