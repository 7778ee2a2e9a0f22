"""Helpers shared by the benchmark scripts: one child process per measurement, timing,
memory, the machine's description and Markdown tables.

Every measurement runs in its own ``python SCRIPT --child ...`` process so that peak RSS
(``ru_maxrss``) belongs to that framework alone and no allocator state is shared.
"""
from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time

# glibc: never serve large blocks with mmap and never give the heap back, so a freed
# 65 MB tensor's pages are reused instead of faulted in again (PERFORMANCE.md).
MALLOC_TUNED = {"MALLOC_MMAP_MAX_": "0", "MALLOC_TRIM_THRESHOLD_": "100000000000"}


def add_child_options(ap) -> None:
    """The options every harness passes to its child processes."""
    ap.add_argument("--malloc-tuned", action="store_true",
                    help="run every child with " + " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items()))
    ap.add_argument("--omp-passive", action="store_true",
                    help="run every child with OMP_WAIT_POLICY=PASSIVE (helps on an oversubscribed machine)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per child")
    ap.add_argument("--json", help="also write the raw results here")


def child_env(threads: int, malloc_tuned: bool, omp_passive: bool = False) -> dict:
    """The environment of every child: same thread count, allocator and OpenMP wait policy.

    ``omp_passive`` sets ``OMP_WAIT_POLICY=PASSIVE``: on an oversubscribed machine spinning
    OpenMP threads make every parallel region wait for a scheduler slice (per-step loops
    suffer most); on a quiet one it costs a wake-up per region. Off: the variable is removed."""
    env = {k: v for k, v in os.environ.items() if k not in MALLOC_TUNED and k != "OMP_WAIT_POLICY"}
    if malloc_tuned:
        env.update(MALLOC_TUNED)
    if omp_passive:
        env["OMP_WAIT_POLICY"] = "PASSIVE"
    env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    return env


def run_child(script: str, args: list[str], env: dict, timeout: float) -> dict:
    """Run ``python script --child *args``; return the JSON dict it printed last, or
    ``{"error": ...}`` with the last line of its stderr."""
    cmd = [sys.executable, script, "--child", *map(str, args)]
    try:
        p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    for line in reversed(p.stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    lines = p.stderr.strip().splitlines() or ["no output"]
    return {"error": f"exit {p.returncode}: {lines[-1]}"}


def child_setup(threads: int) -> None:
    import torch

    torch.set_num_threads(threads)


def rss_mb() -> float:
    """Current resident set size of this process."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def peak_rss_mb() -> float:
    """High-water mark of this process's resident set: VmHWM of its own address space.

    Not ``ru_maxrss``: Linux carries that across fork/vfork + exec, so a child would
    report at least its parent's peak. (The parent imports no torch all the same.)"""
    with open("/proc/self/status") as f:
        return next(int(ln.split()[1]) for ln in f if ln.startswith("VmHWM:")) / 1024


def copy_gbs(mib: int = 256, reps: int = 9) -> float:
    """Copy bandwidth, GB/s counting read + write: ``dst.copy_(src)`` of ``mib`` MiB of
    float32, median of ``reps`` after one copy that faults the pages in."""
    import torch

    src = torch.ones(mib * 2**20 // 4)
    dst = torch.empty_like(src)
    dst.copy_(src)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        dst.copy_(src)
        ts.append(time.perf_counter() - t0)
    return 2 * src.numel() * 4 / statistics.median(ts) / 1e9


def probe(env: dict, threads: int, bandwidth: bool = False) -> dict:
    """Ask a child process (the parent never imports torch) for the torch version,
    spikeforge's available backends and registered neurons, and optionally the copy
    bandwidth."""
    here = os.path.dirname(os.path.abspath(__file__))
    code = (f"import sys, json; sys.path.insert(0, {here!r}); import _common as C; "
            f"print(json.dumps(C._probe_here({threads}, {bandwidth})))")
    p = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if p.returncode:
        raise SystemExit(f"probe failed: {p.stderr.strip()}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def _probe_here(threads: int, bandwidth: bool) -> dict:
    import torch

    torch.set_num_threads(threads)
    import spikeforge as sf

    out = {"torch": torch.__version__, "backends": [b for b, why in sf.backends().items() if why is None],
           "neurons": list(sf.neurons.REGISTRY)}
    if bandwidth:
        out["copy_gbs"] = copy_gbs()
    return out


# Untimed passes before the timed ones. A training loop runs in steady state; glibc's heap
# needs a few passes of a new allocation pattern to get there (measured: spikeforge LIF at
# n=4096 under the tuned allocator, backward 59 ms median over passes 2-4, 25 ms from pass 4).
WARMUP = 3


def time_passes(forward, backward, reps: int, warmup: int = WARMUP, on_first=None) -> dict:
    """Time ``out = forward()`` then ``backward(out)``, ``warmup + reps`` times.

    ``on_first(out)`` runs after the first (warm-up) pass, untimed. Returns the medians
    over the timed repetitions in ms: forward, backward and total (median of the
    per-repetition sums), the CPU time the process used per pass (all threads), and the
    1-minute load average at the end (above ~2 on this 2-core machine, the child shared
    its cores with other work and its times are inflated)."""
    fw, bw, tot, cpu = [], [], [], []
    for i in range(warmup + reps):
        c0 = time.process_time()
        t0 = time.perf_counter()
        out = forward()
        t1 = time.perf_counter()
        backward(out)
        t2 = time.perf_counter()
        c1 = time.process_time()
        if i == 0 and on_first is not None:
            on_first(out)
        del out
        if i >= warmup:
            fw.append(1e3 * (t1 - t0))
            bw.append(1e3 * (t2 - t1))
            tot.append(1e3 * (t2 - t0))
            cpu.append(1e3 * (c1 - c0))
    med = statistics.median
    return {"fwd_ms": med(fw), "bwd_ms": med(bw), "total_ms": med(tot), "cpu_ms": med(cpu), "reps": reps,
            "load": os.getloadavg()[0]}


def best_of_rounds(keys: list, rounds: int, run_one) -> dict:
    """``run_one(key, round)`` for every key, ``rounds`` times interleaved (key order inside
    each round); keep each key's fastest result (an error only if no round succeeded)."""
    best: dict = {}
    for rnd in range(rounds):
        for k in keys:
            r, old = run_one(k, rnd), best.get(k)
            if old is None or "error" in old or ("error" not in r and r["total_ms"] < old["total_ms"]):
                best[k] = r if old is None or "error" not in r else old
    return best


def neuron_pass(name: str, T: int, B: int, n: int):
    """``(one, kernels)`` for ``sf.nn.<name>(backend="cpu")`` on x (T, B, n) = 0.3 + 0.5 randn:
    ``one()`` runs one forward and backward with a fixed output gradient and returns their
    seconds; ``kernels`` are the fused kernel objects it ran (the kernel cache is cleared first,
    so they are this neuron's; ``one`` has run once)."""
    import torch
    import spikeforge as sf
    from spikeforge.kernels import _fused

    mod = getattr(sf.nn, name)(backend="cpu")
    gen = torch.Generator().manual_seed(0)
    x = (torch.randn(T, B, n, generator=gen) * 0.5 + 0.3).requires_grad_()
    gz = torch.randn(T, B, n, generator=gen)

    def one() -> tuple[float, float]:
        x.grad = None
        t0 = time.perf_counter()
        z = mod(x)
        t1 = time.perf_counter()
        z.backward(gz)
        return t1 - t0, time.perf_counter() - t1

    _fused._KERNELS.clear()
    one()
    return one, list(_fused._KERNELS.items())


def machine_info(threads: int, malloc_tuned: bool, torch_version: str, omp_passive: bool = False) -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    alloc = " ".join(f"{k}={v}" for k, v in MALLOC_TUNED.items()) if malloc_tuned else "glibc defaults"
    return (f"{time.strftime('%Y-%m-%d %H:%M')}; {cpu}; {os.cpu_count()} cores; "
            f"Python {platform.python_version()}; torch {torch_version}; "
            f"{threads} threads; allocator: {alloc}" + ("; OMP_WAIT_POLICY=PASSIVE" if omp_passive else ""))


def git_revision(*paths: str) -> str:
    """The checkout's commit, plus a note if ``paths`` (relative to the repository root)
    have uncommitted changes; "revision unknown" without git."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        git = lambda *a: subprocess.run(["git", "-C", root, *a], capture_output=True, text=True,  # noqa: E731
                                        timeout=10).stdout.strip()
        head, dirty = git("log", "-1", "--format=%h"), git("status", "--porcelain", "--", *paths) if paths else ""
    except (OSError, subprocess.SubprocessError):
        return "revision unknown"
    return (head or "revision unknown") + (f" + uncommitted changes in {', '.join(paths)}" if dirty else "")


def markdown_table(headers: list[str], rows: list[list]) -> str:
    """A Markdown pipe table with right-aligned cells."""
    cells = [[str(c) for c in r] for r in rows]
    width = [max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(c.rjust(w) for c, w in zip(r, width)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 1) + ":" for w in width) + "|"
    return "\n".join([line(headers), sep, *map(line, cells)])


def fmt(x, spec: str = ".0f", missing: str = "-") -> str:
    return missing if x is None else format(x, spec)


# -- argument checks: a bad value is an argparse error naming the option, never a table cell ----
def check_args(parser, a, positive=(), lists=(), unit=()) -> None:
    """``parser.error`` (exit 2, the option named) unless every option in ``positive`` is an
    int >= 1, every one in ``lists`` a comma-separated list of them, and ``unit`` in (0, 1)."""
    import argparse
    for name, check in [*((n, positive_int) for n in positive), *((n, positive_ints) for n in lists),
                        *((n, open_unit) for n in unit)]:
        try:
            check(str(getattr(a, name)))
        except argparse.ArgumentTypeError as e:
            parser.error(f"--{name.replace('_', '-')}: {e}")


def positive_int(text: str) -> int:
    import argparse
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {v}")
    return v


def positive_ints(text: str) -> list[int]:
    """A comma-separated list of positive integers."""
    return [positive_int(t.strip()) for t in text.split(",") if t.strip()] or [positive_int("")]


def open_unit(text: str) -> float:
    import argparse
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {text!r}") from None
    if not 0 < v < 1:
        raise argparse.ArgumentTypeError(f"expected a number in (0, 1), got {v}")
    return v


def comma_list(conv, what: str, n: int = 0):
    """An argparse ``type``: comma-separated values, each through ``conv`` (which raises
    ``ValueError`` on a bad one); exactly ``n`` of them if ``n`` (``n = 1``: the value itself).
    A bad list is an argparse error naming the option and saying it expected ``what``."""
    import argparse

    def parse(text: str):
        try:
            out = [conv(x.strip()) for x in text.split(",") if x.strip()]
        except (ValueError, argparse.ArgumentTypeError):
            out = []
        if not out or (n and len(out) != n):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return out[0] if n == 1 else out
    return parse


def checked(ok, value):
    """``value`` if ``ok(value)``, else ``ValueError`` (for ``comma_list``'s converters)."""
    if not ok(value):
        raise ValueError(value)
    return value


def digits_train_test(train_limit: int | None = None):
    """``(x_train, y_train, test)`` of the embedded digits (``spikeforge.data.Digits``), the
    training split cut to its first ``train_limit`` samples when given."""
    import spikeforge as sf

    tr, te = sf.data.Digits("train"), sf.data.Digits("test")
    if train_limit:
        return tr.data[:train_limit], tr.targets[:train_limit], te
    return tr.data, tr.targets, te
