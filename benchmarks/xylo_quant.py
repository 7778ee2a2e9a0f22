"""Yin-Yang on Xylo's integer arithmetic: float accuracy vs the quantised model (post-training,
and after quantisation-aware fine-tuning), per seed, and a bit-exactness check against xylosim.

Per seed: ``spikeforge.train.train`` trains the float classifier (latency-coded input through
LI synapses, LIF hidden layer with soft reset, LI readout, max-membrane loss); ``quantize``
maps it onto Xylo (``spikeforge.quant``); ``quantize(..., qat=True)`` fine-tunes the integer
model's weights through its own integer forward pass (straight-through estimators) and
``freeze()`` rounds them. With Rockpool and xylosim installed (``.venv-interop``), both
integer models are also run through Rockpool's XyloSim and their outputs compared bit for bit.

    .venv/bin/python benchmarks/xylo_quant.py                 # 3 seeds (about 6 min on 2 cores)
    .venv-interop/bin/python benchmarks/xylo_quant.py --xylosim 200   # + XyloSim on 200 test samples
"""
from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

import spikeforge as sf
from spikeforge.losses import max_membrane_ce
from spikeforge.quant import quantize, run_xylosim
from spikeforge.train import load_run, make_config, train
from spikeforge.train.model import spike_input

# decays that are powers of two, so that Xylo's dashes round nothing: the input synapse's
# 1 - exp(-1/input_tau) = 1/4, the readout's tau 128 steps; the hidden LIF's tau 4 steps
XYLO_FRIENDLY = {"dataset": "yinyang", "encoding": "latency", "neuron": "LIF", "neuron_params": {"tau": 4.0},
                 "input_tau": -1.0 / math.log(0.75), "tau_out": 128.0}


def accuracy(scores: torch.Tensor, y: torch.Tensor) -> float:
    return (scores.amax(0).argmax(1) == y).double().mean().item()


def fine_tune(model, cfg, epochs: int, lr: float, seed: int, threshold_max: int):
    """Quantisation-aware fine-tuning of the float model's weights through the integer forward pass."""
    torch.manual_seed(seed)
    data = sf.data.YinYang("train")
    events = spike_input(data.data, cfg.steps)
    q = quantize(model, qat=True, threshold_max=threshold_max)
    opt = torch.optim.Adam(q.parameters(), lr=lr)
    steps = epochs * math.ceil(len(data) / cfg.batch_size)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    for _ in range(epochs):
        for idx in torch.randperm(len(data)).split(cfg.batch_size):
            loss = max_membrane_ce(q.scores(events[:, idx]), data.targets[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
    return q.freeze()


def swapped_layers(model, net, events: torch.Tensor, y: torch.Tensor) -> dict:
    """Where the post-training loss comes from: the float readout on the integer hidden spikes
    (one step late, as on Xylo), the integer readout on the float hidden spikes, and the share
    of (step, sample, neuron) where the integer hidden layer fires more than once."""
    syn, fc_in, hidden, fc_out, readout = model.network()
    z = hidden(fc_in(syn(events)))
    net(events)
    zi = net[0].spikes
    late = torch.cat([torch.zeros_like(zi[:1]), zi[:-1]]).float()
    return {"float_on_int": accuracy(readout(fc_out(late)), y), "int_on_float": accuracy(net[1](z.double()), y),
            "multi": (zi > 1).double().mean().item(), "spikes_ratio": (zi.sum() / z.sum()).item()}


def bit_exact(net, events: torch.Tensor) -> str:
    """How many samples XyloSim reproduces exactly (output membrane, and every hidden spike)."""
    with torch.no_grad():
        v = net(events)
    hidden = net[0].spikes
    ref = run_xylosim(net, events)
    same = [torch.equal(v[:, b], ref["vmem_out"][:, b]) and torch.equal(hidden[:, b], ref["hidden_spikes"][:, b])
            for b in range(events.shape[1])]
    return f"{sum(same)}/{len(same)}"


def one_seed(seed: int, args, root: Path) -> dict:
    cfg = make_config(**XYLO_FRIENDLY, epochs=args.epochs, hidden=args.hidden, seed=seed)
    t0 = time.perf_counter()
    result = train(cfg, out=root / f"seed{seed}", quiet=True, plots=False)
    model, cfg = load_run(root / f"seed{seed}")
    t_float = time.perf_counter() - t0
    test = sf.data.YinYang("test")
    events = spike_input(test.data, cfg.steps)
    with torch.no_grad():
        float_net = accuracy(model.network()(events), test.targets)
        ptq = quantize(model, threshold_max=args.threshold_max)
        acc_ptq = accuracy(ptq(events), test.targets)
        swaps = swapped_layers(model, ptq, events, test.targets)
    t0 = time.perf_counter()
    qat = fine_tune(model, cfg, args.qat_epochs, args.qat_lr, seed, args.threshold_max)
    t_qat = time.perf_counter() - t0
    with torch.no_grad():
        acc_qat = accuracy(qat(events), test.targets)
    row = {"seed": seed, "float": result.test_accuracy, "float_net": float_net, "ptq": acc_ptq, "qat": acc_qat,
           "float_s": t_float, "qat_s": t_qat, "delivery": [m.last_delivery for m in ptq], **swaps}
    if args.xylosim:
        n = args.xylosim
        row["exact_ptq"], row["exact_qat"] = bit_exact(ptq, events[:, :n]), bit_exact(qat, events[:, :n])
    return row


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--epochs", type=int, default=60, help="float training epochs (default 60)")
    ap.add_argument("--hidden", type=int, default=120, help="hidden neurons (default 120, Xylo has 1000)")
    ap.add_argument("--qat-epochs", type=int, default=10, help="quantisation-aware fine-tuning epochs (default 10)")
    ap.add_argument("--qat-lr", type=float, default=1e-3, help="its Adam learning rate, cosine to 0 (default 1e-3)")
    ap.add_argument("--threshold-max", type=int, default=4096, help="quantize's threshold_max (default 4096)")
    ap.add_argument("--xylosim", type=int, default=0, metavar="N",
                    help="also run N test samples through Rockpool's XyloSim and count exact matches")
    args = ap.parse_args(argv)
    for name in ("epochs", "hidden", "qat_epochs", "threshold_max"):
        low = 0 if name == "qat_epochs" else 1
        if getattr(args, name) < low:
            ap.error(f"--{name.replace('_', '-')} must be {'>= 0' if low == 0 else 'positive'}, got {getattr(args, name)}")
    if args.xylosim and not (importlib.util.find_spec("rockpool") and importlib.util.find_spec("xylosim")):
        ap.error("--xylosim needs rockpool and xylosim (run it with .venv-interop/bin/python)")
    torch.set_num_threads(1)
    print(f"# {time.strftime('%Y-%m-%d %H:%M')}; Python {sys.version.split()[0]}; torch {torch.__version__}; 1 thread")
    print(f"# config: {XYLO_FRIENDLY}, epochs={args.epochs}, hidden={args.hidden}; QAT: {args.qat_epochs} epochs, "
          f"lr {args.qat_lr}; threshold_max {args.threshold_max}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in args.seeds:
            rows.append(one_seed(seed, args, Path(tmp)))
            r = rows[-1]
            exact = f"  XyloSim exact {r['exact_ptq']} / {r['exact_qat']}" if args.xylosim else ""
            print(f"seed {seed}: float {100 * r['float']:.1f} % (network {100 * r['float_net']:.1f} %), "
                  f"integer {100 * r['ptq']:.1f} %, integer after QAT {100 * r['qat']:.1f} %  "
                  f"({r['float_s']:.0f} s + {r['qat_s']:.0f} s; delivery {r['delivery']}){exact}", flush=True)
            print(f"  float readout on integer hidden spikes {100 * r['float_on_int']:.1f} %, integer readout on "
                  f"float hidden spikes {100 * r['int_on_float']:.1f} %; integer hidden spikes {r['spikes_ratio']:.2f}x "
                  f"the float ones, {100 * r['multi']:.2f} % of (step, sample, neuron) with several", flush=True)
    cols = ["float", "ptq", "qat"]
    print("\n| seed | float | integer (post-training) | integer (QAT) |" + (" XyloSim exact |" if args.xylosim else ""))
    print("|---|---|---|---|" + ("---|" if args.xylosim else ""))
    for r in rows:
        exact = f" {r['exact_ptq']} / {r['exact_qat']} |" if args.xylosim else ""
        print(f"| {r['seed']} | " + " | ".join(f"{100 * r[c]:.1f} %" for c in cols) + " |" + exact)
    means = [statistics.mean(r[c] for r in rows) for c in cols]
    print("| mean | " + " | ".join(f"{100 * m:.1f} %" for m in means) + " |" + (" |" if args.xylosim else ""))


if __name__ == "__main__":
    main()
