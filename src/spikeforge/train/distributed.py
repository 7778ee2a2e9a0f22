"""Training on several processes: PyTorch DDP (gloo on CPU, NCCL on CUDA).

A worker finds its place from the environment torchrun sets (``RANK``, ``WORLD_SIZE``,
``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``): ``from_env`` joins the process group.
``spikeforge train --nproc N`` starts the N workers itself (``launch``), or use
``torchrun --nproc-per-node N -m spikeforge train ...``.

The split keeps single-process semantics: every global batch (``cfg.batch_size`` samples
of the epoch's seeded shuffled order) is cut into ``world`` contiguous parts, one per rank
(``Group.share``), and each rank's mean loss is weighted by ``world * len(part) / len(batch)``,
so that DDP's average of the ranks' gradients is the gradient of the mean loss over the
global batch, the last partial batch included. A rank left without a sample (a last batch
smaller than ``world``) runs one sample with weight 0.
"""
from __future__ import annotations

import faulthandler
import inspect
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import torch
import torch.distributed as dist
from torch import Tensor

__all__ = ["Group", "from_env", "launch", "peer_lost", "rank_from_env", "LAUNCHED", "PEER_LOST_EXIT"]

LAUNCHED = "SPIKEFORGE_LAUNCHED"     # set by ``launch`` in its workers' environment
PEER_LOST_EXIT = 3                  # a launched worker whose peer stopped exits with this, quietly
TIMEOUT_ENV = "SPIKEFORGE_DIST_TIMEOUT"   # seconds a collective waits for a silent peer (default 300)


@dataclass
class Group:
    """This process's place in the group and the few collectives the trainer needs."""

    rank: int
    world: int
    local_rank: int
    device: torch.device
    owned: bool = False          # this Group initialised the process group (and closes it)

    @property
    def main(self) -> bool:
        return self.rank == 0

    def share(self, idx: Tensor) -> tuple[Tensor, float]:
        """This rank's part of the global batch ``idx`` and the weight of its mean loss."""
        part = idx.tensor_split(self.world)[self.rank]
        if len(part) == 0:
            return idx[:1], 0.0
        return part, self.world * len(part) / len(idx)

    def part(self, n: int) -> slice:
        """This rank's contiguous share of ``n`` evaluation samples."""
        size, extra = divmod(n, self.world)
        start = self.rank * size + min(self.rank, extra)
        return slice(start, start + size + (self.rank < extra))

    def sum(self, values: list[float]) -> list[float]:
        t = torch.tensor(values, dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return t.tolist()

    def broadcast(self, obj):
        box = [obj]
        dist.broadcast_object_list(box, src=0)
        return box[0]

    def wrap(self, model: torch.nn.Module) -> torch.nn.Module:
        from torch.nn.parallel import DistributedDataParallel

        ids = [self.device] if self.device.type == "cuda" else None
        # the buffers (fixed neuron parameters) are equal on every rank: no per-step broadcast
        quiet = "forward_sync_buffers" in inspect.signature(DistributedDataParallel.__init__).parameters
        return DistributedDataParallel(model, device_ids=ids, **({"forward_sync_buffers": False} if quiet
                                                                   else {"broadcast_buffers": False}))

    def close(self) -> None:
        """Leave together (a rank that destroys the group while another still talks to it can
        leave that one waiting), then destroy the group this Group created."""
        if self.owned and dist.is_initialized():
            try:
                dist.barrier()
            finally:
                dist.destroy_process_group()


def rank_from_env() -> int:
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def from_env(device: str) -> Group | None:
    """The process group of a worker started by ``launch`` or torchrun; ``None`` for one process."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return None
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", os.environ["RANK"]))
    dev = torch.device(device)
    if dev.type == "cuda":
        dev = torch.device("cuda", ((dev.index or 0) + local) % max(torch.cuda.device_count(), 1))
        torch.cuda.set_device(dev)
    if os.environ.get(LAUNCHED) and hasattr(signal, "SIGUSR1"):
        faulthandler.register(signal.SIGUSR1)     # the launcher asks a straggler where it waits
    owned = not dist.is_initialized()
    if owned:
        dist.init_process_group("nccl" if dev.type == "cuda" else "gloo", rank=rank, world_size=world,
                                timeout=timedelta(seconds=float(os.environ.get(TIMEOUT_ENV, "300"))))
    return Group(rank, world, local, dev, owned)


def peer_lost(e: BaseException) -> bool:
    """Whether ``e`` is a collective that failed because another worker stopped or timed out."""
    if isinstance(e, getattr(dist, "DistError", ())):
        return True
    text = str(e).lower()
    return isinstance(e, RuntimeError) and any(w in text for w in ("gloo", "nccl", "connection closed", "timed out", "timeout"))


# -- the launcher of ``spikeforge train --nproc N`` ------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(args: list[str], nproc: int, run_dir: str, grace: float = 5.0) -> int:
    """Run ``spikeforge <args>`` as ``nproc`` workers on this machine and wait for them.
    Rank 0 prints the progress; when a worker fails or is killed, the others are stopped
    and one line says which and how to continue. Returns the exit status."""
    port = _free_port()
    logs, procs = [], []
    for rank in range(nproc):
        env = {**os.environ, "MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port), "WORLD_SIZE": str(nproc),
               "RANK": str(rank), "LOCAL_RANK": str(rank), "LOCAL_WORLD_SIZE": str(nproc), LAUNCHED: "1"}
        log = None if rank == 0 else tempfile.TemporaryFile()
        logs.append(log)
        procs.append(subprocess.Popen([sys.executable, "-m", "spikeforge", *args], env=env,
                                      stdout=None if rank == 0 else subprocess.DEVNULL, stderr=log))
    try:
        codes, stopped = _wait(procs, grace)
    except KeyboardInterrupt:
        _stop(procs, grace)
        return 130
    return _report(codes, stopped, procs, logs, nproc, run_dir)


def _wait(procs, grace: float) -> tuple[list[int], set[int]]:
    """Wait for every worker; ``grace`` seconds after one fails (or 6 x ``grace`` after rank 0
    finished, which writes everything), stop the others."""
    failed_at, done_at, stopped = None, None, set()
    while True:
        codes = [p.poll() for p in procs]
        if all(c is not None for c in codes):
            return codes, stopped
        now = time.monotonic()
        if failed_at is None and any(c not in (None, 0) for c in codes):
            failed_at = now
        if done_at is None and codes[0] == 0:
            done_at = now
        if (failed_at is not None and now - failed_at > grace) or (done_at is not None and now - done_at > 6 * grace):
            stopped = {i for i, c in enumerate(codes) if c is None}
            for i in stopped:                       # their stacks go to their logs
                if hasattr(signal, "SIGUSR1"):
                    procs[i].send_signal(signal.SIGUSR1)
            time.sleep(0.5)
            _stop(procs, grace)
        time.sleep(0.05)


def _stop(procs, grace: float) -> None:
    for p in procs:
        if p.poll() is None:
            p.terminate()
    end = time.monotonic() + grace
    for p in procs:
        try:
            p.wait(max(end - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def _report(codes, stopped, procs, logs, nproc: int, run_dir: str) -> int:
    if all(c == 0 or (codes[0] == 0 and r in stopped) for r, c in enumerate(codes)):
        for r in sorted(stopped):   # rank 0 finished the run; a straggler at the exit was stopped: say so
            print(f"spikeforge train: warning: worker rank {r} had not exited after rank 0 finished the run and "
                  f"was stopped (the run is complete); its last line: {_last_line(logs[r])}", file=sys.stderr)
        return 0
    again = (f"completed epochs are kept: continue with spikeforge train --resume {run_dir} --nproc {nproc}"
             if Path(run_dir, "config.json").exists() else
             f"the run had not started ({run_dir} was not written): run the same command again")
    own = [r for r, c in enumerate(codes) if c not in (0, PEER_LOST_EXIT) and c >= 0 and r not in stopped]
    if own:                      # a worker that failed on its own and said why
        r = own[0]
        if r == 0 or codes[r] == 130:
            return codes[r]      # rank 0 printed its line already
        line = _last_line(logs[r]).removeprefix("spikeforge train: error: ")
        print(f"spikeforge train: error: worker rank {r}: {line}", file=sys.stderr)
        return codes[r]
    killed = [r for r, c in enumerate(codes) if c < 0 and r not in stopped]
    if killed:
        r = killed[0]
        name = signal.Signals(-codes[r]).name if -codes[r] in signal.valid_signals() else f"signal {-codes[r]}"
        print(f"spikeforge train: error: worker rank {r} (pid {procs[r].pid}) was killed by {name}; the other "
              f"workers were stopped; {again}", file=sys.stderr)
        return 2
    print(f"spikeforge train: error: the workers stopped (exit statuses {codes}); {again}", file=sys.stderr)
    return 2


def _last_line(log) -> str:
    log.seek(0)
    lines = [x for x in log.read().decode(errors="replace").splitlines() if x.strip()]
    return lines[-1] if lines else "failed without a message"

