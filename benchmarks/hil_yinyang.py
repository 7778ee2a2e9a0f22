"""Hardware in the loop on Yin-Yang (issue 10 section 3): a model trained purely in software
loses accuracy when deployed on an analog substrate with parameter mismatch and trial-to-trial
noise; training in the loop on that substrate recovers it.

Per seed: ``spikeforge.train.train`` trains the default Yin-Yang classifier (current input,
IF hidden layer with soft reset, LI readout, max-membrane loss) in software. Its network is
then run on ``hil.AnalogMismatch(seed=1000 + seed, mismatch=M, noise=N)`` (every synapse and
neuron parameter off by its own fixed factor, fresh input-current noise in every run). From the
software-trained weights, two fine-tunings of the same length and learning rate follow:

* in software (a control: more training alone), then deployed on the substrate;
* in the loop (``hil.InTheLoop(network, substrate)``): forward on the substrate, gradient
  through the software model at the substrate's operating point.

Accuracy: the 1000 test samples, on the substrate (one run, its own noise). A PNG plot and a
Markdown table are written.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hil_yinyang.py      # 3 seeds, ~6 min on 1 thread
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/hil_yinyang.py --xylo --ft-epochs 10   # XyloInteger in the loop

``--xylo`` runs another comparison: ``xylo_quant.py``'s Xylo-friendly model on the integer Xylo
network, post-training, after quantisation-aware training, and after training in the loop on
``hil.XyloInteger()`` (float weights re-quantised at every batch).
"""
from __future__ import annotations

import argparse
import copy
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import NamedTuple

import torch

import spikeforge as sf
from spikeforge.losses import max_membrane_ce
from spikeforge.quant import hil
from spikeforge.train import load_run, make_config, train

HERE = Path(__file__).resolve().parent


class Subset(NamedTuple):
    """The first samples of a split (what ``fine_tune`` reads: ``data``, ``targets``, ``len``)."""

    data: torch.Tensor
    targets: torch.Tensor

    def __len__(self) -> int:
        return len(self.targets)


def sequence(x: torch.Tensor, steps: int) -> torch.Tensor:
    """Current encoding: the features at every step (T, B, F), the network's input."""
    return x.unsqueeze(0).expand(steps, -1, -1)


@torch.no_grad()
def accuracy(net, x, y, substrate=None) -> float:
    out, _ = hil.in_the_loop(net, x, substrate)
    return (out.amax(0).argmax(1) == y).double().mean().item()


def fine_tune(net, data, steps: int, epochs: int, lr: float, batch: int, seed: int, substrate=None):
    """``epochs`` of Adam (lr cosine to 0) on the training split; in the loop on ``substrate``
    (``None``: in software)."""
    net = copy.deepcopy(net)
    loop = hil.InTheLoop(net, substrate)
    opt = torch.optim.Adam(net.parameters(), lr=lr)
    total = epochs * math.ceil(len(data) / batch)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    g = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        for idx in torch.randperm(len(data), generator=g).split(batch):
            loss = max_membrane_ce(loop(sequence(data.data[idx], steps)), data.targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return net


def one_seed(seed: int, args, root: Path) -> dict:
    cfg = make_config(dataset="yinyang", epochs=args.epochs, hidden=args.hidden, seed=seed)
    t0 = time.perf_counter()
    train(cfg, out=root / f"seed{seed}", quiet=True, plots=False)
    model, cfg = load_run(root / f"seed{seed}")
    t_train = time.perf_counter() - t0
    net = model.network()
    train_data, test = sf.data.YinYang("train"), sf.data.YinYang("test")
    if args.train_samples is not None:
        train_data = Subset(train_data.data[:args.train_samples], train_data.targets[:args.train_samples])
    x, y = sequence(test.data, cfg.steps), test.targets

    def substrate():
        return hil.AnalogMismatch(1000 + seed, mismatch=args.mismatch, noise=args.noise)

    row = {"seed": seed, "software": accuracy(net, x, y), "deployed": accuracy(net, x, y, substrate())}
    t0 = time.perf_counter()
    sw = fine_tune(net, train_data, cfg.steps, args.ft_epochs, args.ft_lr, cfg.batch_size, seed)
    row["sw_finetuned_deployed"] = accuracy(sw, x, y, substrate())
    t_sw = time.perf_counter() - t0
    t0 = time.perf_counter()
    chip = substrate()                       # the substrate trained on is the one deployed on
    loop = fine_tune(net, train_data, cfg.steps, args.ft_epochs, args.ft_lr, cfg.batch_size, seed, chip)
    row["in_the_loop"] = accuracy(loop, x, y, chip)
    row["in_the_loop_other_chip"] = accuracy(loop, x, y, hil.AnalogMismatch(2000 + seed, mismatch=args.mismatch,
                                                                            noise=args.noise))
    row["in_the_loop_software"] = accuracy(loop, x, y)
    row.update(train_s=t_train, sw_s=t_sw, loop_s=time.perf_counter() - t0)
    return row


def xylo_seed(seed: int, args, root: Path) -> dict:
    """``--xylo``: the Xylo-friendly latency model of ``xylo_quant.py`` trained in software, then
    on the integer Xylo network: post-training, after quantisation-aware fine-tuning (the QAT
    net), and after as many epochs in the loop on ``hil.XyloInteger()`` (float weights,
    re-quantised at every batch; the forward pass is the integer network's)."""
    from xylo_quant import XYLO_FRIENDLY
    from xylo_quant import fine_tune as qat_fine_tune

    from spikeforge.quant import quantize
    from spikeforge.train.model import spike_input

    cfg = make_config(**XYLO_FRIENDLY, epochs=args.xylo_epochs, hidden=args.xylo_hidden, seed=seed)
    train(cfg, out=root / f"xylo{seed}", quiet=True, plots=False)
    model, cfg = load_run(root / f"xylo{seed}")
    data, test = sf.data.YinYang("train"), sf.data.YinYang("test")
    if args.train_samples is not None:
        data = Subset(data.data[:args.train_samples], data.targets[:args.train_samples])
    events, y = spike_input(test.data, cfg.steps), test.targets

    def integer(net) -> float:
        with torch.no_grad():
            return (quantize(net)(events).amax(0).argmax(1) == y).double().mean().item()

    row = {"seed": seed, "software": accuracy(model.network(), events, y), "ptq": integer(model)}
    t0 = time.perf_counter()
    qat = qat_fine_tune(model, cfg, args.ft_epochs, args.xylo_lr, seed, 4096)
    with torch.no_grad():
        row["qat"] = (qat(events).amax(0).argmax(1) == y).double().mean().item()
    row["qat_s"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    net = copy.deepcopy(model.network())
    loop = hil.InTheLoop(net, hil.XyloInteger())
    opt = torch.optim.Adam(net.parameters(), lr=args.xylo_lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, args.ft_epochs * math.ceil(len(data) / cfg.batch_size))
    g = torch.Generator().manual_seed(seed)
    for _ in range(args.ft_epochs):
        for idx in torch.randperm(len(data), generator=g).split(cfg.batch_size):
            loss = max_membrane_ce(loop(spike_input(data.data[idx], cfg.steps)), data.targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    row["in_the_loop"], row["loop_s"] = integer(net), time.perf_counter() - t0
    return row


def xylo_main(args) -> None:
    print(f"# --xylo: yinyang, latency input, {args.xylo_hidden} LIF hidden, {args.xylo_epochs} epochs in software "
          f"(benchmarks/xylo_quant.py's configuration); QAT and in-the-loop fine-tuning: {args.ft_epochs} epochs, "
          f"Adam lr {args.xylo_lr} cosine to 0")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = xylo_seed(seed, args, Path(tmp))
            rows.append(r)
            print(f"seed {seed}: software {100 * r['software']:.1f} %, integer post-training {100 * r['ptq']:.1f} %, "
                  f"QAT {100 * r['qat']:.1f} % ({r['qat_s']:.0f} s), in the loop on XyloInteger "
                  f"{100 * r['in_the_loop']:.1f} % ({r['loop_s']:.0f} s)", flush=True)
    keys = ["software", "ptq", "qat", "in_the_loop"]
    print("\n| seed | software | integer, post-training | integer, QAT | integer, trained in the loop |")
    print("|---|---|---|---|---|")
    for r in rows + [{"seed": "mean", **{k: statistics.mean(r[k] for r in rows) for k in keys}}]:
        print(f"| {r['seed']} | " + " | ".join(f"{100 * r[k]:.1f} %" for k in keys) + " |")


COLUMNS = [("software", "software model in software"), ("deployed", "software model on the substrate"),
           ("sw_finetuned_deployed", "+ fine-tuned in software, on the substrate"),
           ("in_the_loop", "+ fine-tuned in the loop, on the substrate")]


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.6))
    width = 0.8 / len(COLUMNS)
    for c, (key, label) in enumerate(COLUMNS):
        xs = [k + (c - (len(COLUMNS) - 1) / 2) * width for k in range(len(rows))]
        ax.bar(xs, [100 * r[key] for r in rows], width, label=label)
    ax.set_xticks(range(len(rows)), [f"seed {r['seed']}" for r in rows])
    ax.set_ylabel("Yin-Yang test accuracy (%)")
    ax.set_ylim(30, 100)
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.1), ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=20, help="software training epochs (default 20)")
    ap.add_argument("--hidden", type=int, default=64, help="hidden IF neurons (default 64)")
    ap.add_argument("--mismatch", type=float, default=0.2, help="AnalogMismatch mismatch (default 0.2)")
    ap.add_argument("--noise", type=float, default=0.1, help="AnalogMismatch noise (default 0.1)")
    ap.add_argument("--ft-epochs", type=int, default=5, help="fine-tuning epochs, both kinds (default 5)")
    ap.add_argument("--ft-lr", type=float, default=0.01, help="their Adam learning rate, cosine to 0 (default 0.01)")
    ap.add_argument("--train-samples", type=int, default=None, metavar="N",
                    help="fine-tune on the first N training samples (default all 5000; for smoke tests)")
    ap.add_argument("--plot", default=str(HERE / "hil_yinyang.png"))
    ap.add_argument("--xylo", action="store_true", help="instead: XyloInteger in the loop against QAT (a latency "
                    "model as in xylo_quant.py)")
    ap.add_argument("--xylo-epochs", type=int, default=60, help="--xylo: software training epochs (default 60)")
    ap.add_argument("--xylo-hidden", type=int, default=120, help="--xylo: hidden LIF neurons (default 120)")
    ap.add_argument("--xylo-lr", type=float, default=1e-3, help="--xylo: fine-tuning Adam lr (default 1e-3)")
    args = ap.parse_args(argv)
    if args.train_samples is not None and args.train_samples < 1:
        ap.error(f"--train-samples must be positive, got {args.train_samples}")
    for name in ("epochs", "hidden", "ft_epochs", "xylo_epochs", "xylo_hidden"):
        if getattr(args, name) < 1:
            ap.error(f"--{name.replace('_', '-')} must be positive, got {getattr(args, name)}")
    for name in ("mismatch", "noise"):
        if not getattr(args, name) >= 0:
            ap.error(f"--{name} must be >= 0, got {getattr(args, name)}")
    if not args.ft_lr > 0:
        ap.error(f"--ft-lr must be positive, got {args.ft_lr}")
    torch.set_num_threads(1)
    if args.xylo:
        print(f"# {time.strftime('%Y-%m-%d %H:%M')}; Python {sys.version.split()[0]}; torch {torch.__version__}; "
              f"1 thread")
        return xylo_main(args)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; Python {sys.version.split()[0]}; torch {torch.__version__}; 1 thread")
    print(f"# yinyang, current input, {args.hidden} IF hidden, {args.epochs} epochs in software; substrate "
          f"AnalogMismatch(mismatch={args.mismatch}, noise={args.noise}); fine-tuning {args.ft_epochs} epochs, "
          f"lr {args.ft_lr}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            r = one_seed(seed, args, Path(tmp))
            rows.append(r)
            print(f"seed {seed}: software {100 * r['software']:.1f} %, on the substrate {100 * r['deployed']:.1f} %, "
                  f"software-fine-tuned on it {100 * r['sw_finetuned_deployed']:.1f} %, in the loop "
                  f"{100 * r['in_the_loop']:.1f} % (on another chip {100 * r['in_the_loop_other_chip']:.1f} %, "
                  f"in software {100 * r['in_the_loop_software']:.1f} %)  "
                  f"[{r['train_s']:.0f} s + {r['sw_s']:.0f} s + {r['loop_s']:.0f} s]", flush=True)
    print("\n| seed | " + " | ".join(label for _, label in COLUMNS) + " |")
    print("|---|" + "---|" * len(COLUMNS))
    for r in rows + [{"seed": "mean", **{k: statistics.mean(r[k] for r in rows) for k, _ in COLUMNS}}]:
        print(f"| {r['seed']} | " + " | ".join(f"{100 * r[k]:.1f} %" for k, _ in COLUMNS) + " |")
    plot(rows, Path(args.plot), f"Yin-Yang on AnalogMismatch(mismatch={args.mismatch}, noise={args.noise})")
    print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
