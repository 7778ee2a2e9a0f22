"""ANN -> SNN conversion on the embedded digits (issue 12): accuracy against the number of steps T.

A CNN ``Conv(1->16,3)-BN-ReLU-Conv(16->32,3)-BN-ReLU-AvgPool(2)-Flatten-Linear(512->64)-ReLU-
Dropout-Linear(64->10)`` is trained on ``Digits("train")`` (1259 images, 8x8) and converted with
``sf.convert.ann_to_snn``, calibrated on the training images; accuracy on ``Digits("test")``
(359 images; one image = 0.28 points) for every T at once from the cumulative readout.
Rows: three calibrations of the ReLU network (max, 99.9th percentile, 99.9th per channel), the
same with the membranes starting at half the threshold, the same architecture trained with
``sf.convert.QCFS(levels=8)`` activations, the ReLU network fine-tuned as an ANN proxy
(``sf.convert.ProxyModel``, SNN forward at T=8, ANN backward), and a residual CNN with a
max-pool (converted with the spiking max-pool). Writes ``conversion_digits.png`` next to this
file and prints a markdown table.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/conversion_digits.py [--seed 0] [--steps 400]
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from torch import nn

import spikeforge as sf

TS = (1, 2, 4, 8, 16, 32, 64, 128)
HERE = Path(__file__).resolve().parent


def cnn(act=nn.ReLU) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), act(),
                         nn.Conv2d(16, 32, 3, padding=1), nn.BatchNorm2d(32), act(), nn.AvgPool2d(2),
                         nn.Flatten(), nn.Linear(512, 64), act(), nn.Dropout(0.2), nn.Linear(64, 10))


class ResNetMax(nn.Module):
    """Conv-BN-ReLU, one residual block (two conv-BN, shortcut added before the ReLU), MaxPool, readout."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(1, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU())
        self.c1, self.b1, self.c2, self.b2 = (nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16),
                                              nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16))
        self.head = nn.Sequential(nn.MaxPool2d(2), nn.Flatten(), nn.Linear(256, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, x):
        h = self.stem(x)
        h = torch.relu(self.b2(self.c2(torch.relu(self.b1(self.c1(h))))) + h)
        return self.head(h)


def train(model: nn.Module, x, y, steps: int, lr: float = 1e-2, seed: int = 0) -> nn.Module:
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps)
    model.train()
    for _ in range(steps):
        b = torch.randint(len(x), (128,), generator=g)
        opt.zero_grad()
        nn.functional.cross_entropy(model(x[b]), y[b]).backward()
        opt.step()
        sched.step()
    return model.eval()


@torch.no_grad()
def curve(snn: nn.Module, xt, yt) -> list[float]:
    cum = snn(sf.encoding.direct(xt, max(TS))).cumsum(0)
    return [(cum[T - 1].argmax(1) == yt).float().mean().item() * 100 for T in TS]


@torch.no_grad()
def ann_acc(model, xt, yt) -> float:
    return (model(xt).argmax(1) == yt).float().mean().item() * 100


def run(seed: int, steps: int) -> dict:
    tr, te = sf.data.Digits("train"), sf.data.Digits("test")
    x, y, xt, yt = tr.images[:, None], tr.targets, te.images[:, None], te.targets
    rows, t0 = {}, time.time()
    torch.manual_seed(seed)
    relu = train(cnn(), x, y, steps, seed=seed)
    rows["ANN (ReLU)"] = [ann_acc(relu, xt, yt)] * len(TS)
    for name, kw in (("max", dict(percentile=100)), ("99.9th percentile", dict(percentile=99.9)),
                     ("99.9th, per channel", dict(percentile=99.9, per_channel=True)),
                     ("99.9th, v_init=0.5", dict(percentile=99.9, v_init=0.5))):
        rows[name] = curve(sf.convert.ann_to_snn(relu, x, **kw), xt, yt)
    print(f"relu done {time.time() - t0:.0f}s", flush=True)

    torch.manual_seed(seed)
    q = train(cnn(lambda: sf.convert.QCFS(levels=8, threshold=4.0)), x, y, steps, seed=seed)
    rows["ANN (QCFS, L=8)"] = [ann_acc(q, xt, yt)] * len(TS)
    rows["QCFS L=8"] = curve(sf.convert.ann_to_snn(q, x), xt, yt)
    print(f"qcfs done {time.time() - t0:.0f}s", flush=True)

    proxy_ann = cnn()
    proxy_ann.load_state_dict(relu.state_dict())
    proxy = sf.convert.ProxyModel(proxy_ann, steps=8)
    train(proxy, x, y, steps // 4, lr=1e-3, seed=seed + 1)
    rows["ANN (proxy-tuned)"] = [ann_acc(proxy_ann, xt, yt)] * len(TS)
    rows["proxy T=8 (99.9th)"] = curve(sf.convert.ann_to_snn(proxy_ann, x), xt, yt)
    print(f"proxy done {time.time() - t0:.0f}s", flush=True)

    torch.manual_seed(seed)
    res = train(ResNetMax(), x, y, steps, seed=seed)
    rows["ANN (residual+maxpool)"] = [ann_acc(res, xt, yt)] * len(TS)
    rows["residual+maxpool (99.9th)"] = curve(sf.convert.ann_to_snn(res, x), xt, yt)
    print(f"residual done {time.time() - t0:.0f}s", flush=True)
    return rows


def plot(rows: dict, path: Path, seed: int) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    ann = None
    for name, accs in rows.items():
        if name.startswith("ANN"):
            ann = (name, accs[0])
            continue
        line, = ax.plot(TS, accs, marker="o", label=name)
        if ann is not None:       # the ANN reference in the colour of its first converted model
            ax.axhline(ann[1], ls=":", lw=1.2, color=line.get_color(), label=f"{ann[0]}: {ann[1]:.2f}")
            ann = None
    ax.set_xscale("log", base=2)
    ax.set_xticks(TS, [str(t) for t in TS])
    ax.set_ylim(80, 100)
    ax.set_xlabel("time steps T")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"ANN->SNN conversion on the embedded digits (seed {seed})")
    ax.legend(fontsize=7, loc="lower right")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def summary(runs: list[dict]) -> None:
    """Mean accuracy over seeds per T, with each converted model's ANN; then the worst seed's
    difference to its own ANN (points; negative = the SNN is worse)."""
    seeds = ", ".join(str(r["seed"]) for r in runs)
    head = " | ".join(f"T={T}" for T in TS)
    mean, worst, ann = [], [], None
    for name in runs[0]["rows"]:
        if name.startswith("ANN"):
            ann = name
            continue
        accs = [[r["rows"][name][i] for r in runs] for i in range(len(TS))]
        refs = [r["rows"][ann][0] for r in runs]
        mean.append(f"| {name} | {sum(refs) / len(refs):.2f} | " + " | ".join(f"{sum(a) / len(a):.2f}" for a in accs) + " |")
        worst.append(f"| {name} | " + " | ".join(f"{min(x - y for x, y in zip(a, refs)):+.2f}" for a in accs) + " |")
    print(f"Mean test accuracy (%) over seeds {seeds}\n\n| converted model | its ANN | {head} |\n|---|---|" + "---|" * len(TS))
    print("\n".join(mean))
    print(f"\nWorst seed: SNN minus its ANN (points)\n\n| converted model | {head} |\n|---|" + "---|" * len(TS))
    print("\n".join(worst))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--steps", type=int, default=400, help="ANN training steps (batch 128)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--json", type=Path, help="also write the rows here")
    p.add_argument("--plot-only", type=Path, metavar="JSON", help="redraw the plot from a --json file")
    p.add_argument("--summary", type=Path, nargs="+", metavar="JSON", help="print the mean (min-max) over --json files")
    a = p.parse_args()
    if a.summary:
        return summary([json.loads(f.read_text()) for f in a.summary])
    torch.set_num_threads(a.threads)
    if a.plot_only:
        d = json.loads(a.plot_only.read_text())
        a.seed, rows = d["seed"], d["rows"]
    else:
        rows = run(a.seed, a.steps)
    print("| model | " + " | ".join(f"T={T}" for T in TS) + " |")
    print("|---|" + "---|" * len(TS))
    for name, accs in rows.items():
        print(f"| {name} | " + " | ".join(f"{v:.2f}" for v in accs) + " |")
    plot(rows, HERE / ("conversion_digits.png" if a.seed == 0 else f"conversion_digits_s{a.seed}.png"), a.seed)
    if a.json:
        a.json.write_text(json.dumps({"seed": a.seed, "steps": a.steps, "T": TS, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
