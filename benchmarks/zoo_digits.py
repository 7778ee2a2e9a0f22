"""The model zoo on the embedded digits (issue 14 §3): a short training run per model with
its test accuracy, and milliseconds per training step against SpikingJelly's same model.

Data: ``spikeforge.data.Digits`` (1259 train / 359 test 8x8 images), upsampled bilinearly to
32x32 and repeated to 3 channels (SpikingJelly's VGG and ResNet stems take 3 channels),
presented unchanged at each of ``T`` steps (direct input). Loss: cross-entropy of the mean
over time of the per-step logits; Adam (lr 1e-3), batch ``--batch``. Neurons: LIF,
``tau = 2``, threshold 1, hard reset to 0, ATan surrogate (alpha 2) on both sides;
SpikingJelly's ``LIFNode`` runs in multi-step mode ``'m'`` on its PyTorch path (its cupy
kernels need a GPU). Spikformer: SpikingJelly's own neuron defaults (``detach_reset=True``,
attention threshold 0.5, sigmoid surrogate alpha 4), the same on the spikeforge side.

Models (the same architecture and parameter count on both sides):
    vgg11, vgg16         width 1/4 (channels 16..128), BatchNorm, pool_size 1, hidden 256
                         (SpikingJelly: its ``SpikingVGG`` on the scaled configuration, with
                         avgpool and classifier replaced by the same reduced ones)
    resnet18, resnet34, sew_resnet18, sew_resnet34 (ADD)
                         full width, ImageNet stem (SpikingJelly's widths are fixed)
    spikformer           Spikformer-2-128, 4 heads, 4x4 patches (64 tokens), ``mlp_bias=False``
                         (SpikingJelly's MLP has none)
Each (framework, model) runs in its own child process with ``--threads`` threads; the time
per step is the median over the training steps after the first 3.

    OMP_NUM_THREADS=1 .venv-peers/bin/python benchmarks/zoo_digits.py        # RESULTS.md §13, run A
    OMP_NUM_THREADS=1 .venv-peers/bin/python benchmarks/zoo_digits.py --sj-steps 150 --models sew_resnet18 vgg11
    .venv-peers/bin/python benchmarks/zoo_digits.py --models vgg11 --steps 20 --sj-steps 10 --json out.json
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import child_env, run_child  # noqa: E402

MODELS = ("vgg11", "vgg16", "resnet18", "resnet34", "sew_resnet18", "sew_resnet34", "spikformer")
VGG_WIDTH, VGG_HIDDEN = 0.25, 256
VGG_STAGES = {"vgg11": ((64,), (128,), (256, 256), (512, 512), (512, 512)),
              "vgg16": ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))}
SPIKFORMER = dict(dim=128, depth=2, num_heads=4, patch_size=4)


def load_digits(split: str):
    """``(N, 3, 32, 32)`` images in [0, 1] and labels."""
    import torch
    import torch.nn.functional as F

    from spikeforge.data import Digits

    d = Digits(split)
    x = F.interpolate(d.images.unsqueeze(1), size=(32, 32), mode="bilinear", align_corners=False)
    return x.clamp(0, 1).expand(-1, 3, -1, -1).contiguous(), d.targets.clone()


def build_spikeforge(name: str):
    import spikeforge as sf
    from spikeforge import models as M

    if name.startswith("vgg"):
        return getattr(M, name)(num_classes=10, width=VGG_WIDTH, hidden=VGG_HIDDEN, pool_size=1), sf.reset
    if name == "spikformer":
        return M.spikformer(num_classes=10, mlp_bias=False, detach_reset=True, surrogate=sf.surrogate.Sigmoid(4.0),
                            **SPIKFORMER), sf.reset
    return getattr(M, name)(num_classes=10), sf.reset


def _stub_torchvision() -> None:
    """SpikingJelly's VGG/ResNet files import ``load_state_dict_from_url`` from torchvision (for
    pretrained weights, unused here); torchvision is not installed, so give them a stand-in."""
    import importlib.util
    import types

    if "torchvision" in sys.modules or importlib.util.find_spec("torchvision") is not None:
        return

    def load_state_dict_from_url(*args, **kwargs):
        raise RuntimeError("no downloads in this benchmark")

    for mod in ("torchvision", "torchvision.models", "torchvision.models.utils"):
        sys.modules[mod] = types.ModuleType(mod)
    sys.modules["torchvision.models.utils"].load_state_dict_from_url = load_state_dict_from_url


def build_spikingjelly(name: str):
    from functools import partial

    _stub_torchvision()

    from spikingjelly.activation_based import functional, layer, neuron, surrogate
    from spikingjelly.activation_based.model import sew_resnet, spiking_resnet, spiking_vgg, spikformer

    lif = dict(tau=2.0, surrogate_function=surrogate.ATan())
    if name.startswith("vgg"):
        cfg = [v for stage in VGG_STAGES[name] for v in [*(int(c * VGG_WIDTH) for c in stage), "M"]]
        net = spiking_vgg.SpikingVGG(cfg, batch_norm=True, num_classes=10, spiking_neuron=neuron.LIFNode, **lif)
        c = cfg[-2]
        net.avgpool = layer.AdaptiveAvgPool2d((1, 1))
        net.classifier = spiking_vgg.nn.Sequential(
            layer.Linear(c, VGG_HIDDEN), neuron.LIFNode(**lif), layer.Dropout(),
            layer.Linear(VGG_HIDDEN, VGG_HIDDEN), neuron.LIFNode(**lif), layer.Dropout(),
            layer.Linear(VGG_HIDDEN, 10))
    elif name == "spikformer":
        net = spikformer.Spikformer(in_channels=3, img_size_h=32, img_size_w=32, num_classes=10,
                                    embed_dims=SPIKFORMER["dim"], num_heads=SPIKFORMER["num_heads"],
                                    depths=SPIKFORMER["depth"], patch_size=SPIKFORMER["patch_size"])
    elif name.startswith("sew"):
        net = getattr(sew_resnet, name)(cnf="ADD", num_classes=10, spiking_neuron=partial(neuron.LIFNode, **lif))
    else:
        net = getattr(spiking_resnet, f"spiking_{name}")(num_classes=10, spiking_neuron=neuron.LIFNode, **lif)
    functional.set_step_mode(net, "m")
    return net, functional.reset_net


def evaluate(net, reset, x, y, T: int, batch: int = 64) -> float:
    import torch

    net.eval()
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), batch):
            xb = x[i:i + batch].unsqueeze(0).expand(T, -1, -1, -1, -1)
            correct += int((net(xb).mean(0).argmax(1) == y[i:i + batch]).sum())
            reset(net)
    net.train()
    return correct / len(x)


class Run:
    """One framework's model, optimiser and per-step times."""

    def __init__(self, framework: str, name: str, seed: int) -> None:
        import torch

        torch.manual_seed(seed)       # the same seed per framework (different layouts: different weights)
        self.framework = framework
        self.net, self.reset = (build_spikeforge if framework == "spikeforge" else build_spikingjelly)(name)
        self.opt = torch.optim.Adam(self.net.parameters(), lr=1e-3)
        self.times: list[float] = []
        self.losses: list[float] = []

    def step(self, xb, yb) -> None:
        import torch.nn.functional as F

        t0 = time.perf_counter()
        loss = F.cross_entropy(self.net(xb).mean(0), yb)
        self.opt.zero_grad(set_to_none=True)
        loss.backward()
        self.opt.step()
        self.reset(self.net)
        self.times.append(time.perf_counter() - t0)
        self.losses.append(float(loss.detach()))


def child(name: str, frameworks: list[str], steps: int, sj_steps: int, batch: int, T: int, seed: int,
          threads: int) -> list[dict]:
    """Train ``name`` in every framework on the same batches; while both run (the first
    ``sj_steps`` steps) their steps alternate, so a load change on a shared machine hits both
    alike. Time per step: median after the first 3 steps. Test accuracy at the end."""
    import torch

    torch.set_num_threads(threads)
    runs = [Run(fw, name, seed) for fw in frameworks]
    xtr, ytr = load_digits("train")
    xte, yte = load_digits("test")
    g = torch.Generator().manual_seed(seed)
    order = torch.empty(0, dtype=torch.long)
    for step in range(max(steps, sj_steps)):
        if len(order) < batch:
            order = torch.randperm(len(xtr), generator=g)
        idx, order = order[:batch], order[batch:]
        xb = xtr[idx].unsqueeze(0).expand(T, -1, -1, -1, -1)
        active = [r for r in runs if step < (steps if r.framework == "spikeforge" else sj_steps)]
        for r in (active if step % 2 == 0 else active[::-1]):
            r.step(xb, ytr[idx])
    rows = []
    for r in runs:
        timed = r.times[3:] if len(r.times) > 3 else r.times
        rows.append({"framework": r.framework, "model": name, "params": sum(p.numel() for p in r.net.parameters()),
                     "steps": len(r.times), "batch": batch, "T": T, "ms_per_step": 1000 * statistics.median(timed),
                     "ms_per_step_paired": 1000 * statistics.median(r.times[3:sj_steps] or r.times[:sj_steps]),
                     "final_loss": statistics.mean(r.losses[-10:]),
                     "test_accuracy": evaluate(r.net, r.reset, xte, yte, T), "torch": torch.__version__})
    return rows


def table(rows: list[dict]) -> str:
    """One line per model: test accuracy after each side's steps; ms per step of both sides
    over the steps where they alternated (median), and the ratio."""
    by = {(r["framework"], r["model"]): r for r in rows}
    out = ["| model | params | spikeforge test acc (steps) | SpikingJelly test acc (steps) | spikeforge ms/step | "
           "SpikingJelly ms/step | SJ / spikeforge |", "|---|---:|---:|---:|---:|---:|---:|"]
    for name in dict.fromkeys(r["model"] for r in rows):
        s, j = by.get(("spikeforge", name), {}), by.get(("spikingjelly", name), {})

        def acc(r):
            return f"{r['test_accuracy']:.2%} ({r['steps']})" if "test_accuracy" in r else r.get("error", "-")[:48]

        def ms(r):
            return f"{r['ms_per_step_paired']:.0f}" if "ms_per_step_paired" in r else "-"
        ratio = (f"{j['ms_per_step_paired'] / s['ms_per_step_paired']:.2f}"
                 if "ms_per_step_paired" in s and "ms_per_step_paired" in j else "-")
        params = s.get("params", j.get("params", 0))
        out.append(f"| {name} | {params:,} | {acc(s)} | {acc(j)} | {ms(s)} | {ms(j)} | {ratio} |")
    return "\n".join(out)


def _positive(text: str) -> int:
    v = int(text)
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {v}")
    return v


def parse(argv=None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    ap.add_argument("--frameworks", nargs="+", choices=("spikeforge", "spikingjelly"),
                    default=["spikeforge", "spikingjelly"])
    ap.add_argument("--steps", type=_positive, default=150, help="spikeforge training steps (default 150)")
    ap.add_argument("--sj-steps", type=_positive, default=30,
                    help="SpikingJelly's steps, alternated with spikeforge's first ones (default 30)")
    ap.add_argument("--batch", type=_positive, default=16)
    ap.add_argument("--T", type=_positive, default=4)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=_positive, default=1)
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per child")
    ap.add_argument("--json", help="also write the raw rows here")
    ap.add_argument("--child", choices=MODELS, help=argparse.SUPPRESS)
    return ap.parse_args(argv)


def main(argv=None) -> list[dict]:
    a = parse(argv)
    sj_steps = a.sj_steps
    if a.child:
        rows = child(a.child, a.frameworks, a.steps, sj_steps, a.batch, a.T, a.seed, a.threads)
        print(json.dumps({"rows": rows}), flush=True)
        return rows
    env = child_env(a.threads, malloc_tuned=False)
    rows = []
    for name in a.models:
        args = [name, "--frameworks", *a.frameworks, "--steps", a.steps, "--sj-steps", sj_steps, "--batch", a.batch,
                "--T", a.T, "--seed", a.seed, "--threads", a.threads]
        r = run_child(os.path.abspath(__file__), args, env, a.timeout)
        got = r.get("rows") or [{"framework": fw, "model": name, **r} for fw in a.frameworks]
        rows += got
        print(json.dumps(got), file=sys.stderr, flush=True)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(rows, f, indent=1)
    print(f"{platform.node()}, {a.threads} thread(s), T={a.T}, batch {a.batch}, seed {a.seed}\n")
    print(table(rows))
    return rows


if __name__ == "__main__":
    main()
