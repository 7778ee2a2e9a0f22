"""``spikeforge train --quantize xylo``: the trained model on Xylo's integer arithmetic.

Three moments of a run:

* ``check_config(cfg)`` (from ``TrainConfig``): the options fit together. Xylo's input is
  event counts (0..15 per channel and step), so static features need ``encoding latency``
  (one spike per feature, ``model.spike_input``) with ``input_tau`` set (the LI input
  synapses become Xylo's synapses); ``qat_epochs`` needs ``quantize``.
* ``preflight(trainer)`` (from ``Trainer.check``, before the run folder exists): the untrained
  model is quantised and run on two samples, so a design-rule violation (more than 16 inputs,
  8 classes or 1000 hidden neurons, a neuron without a Xylo form, a hard reset, ...) stops
  the run with a ``ConfigError`` naming the layer and the limit before any training.
* ``after_training(trainer, float_test_accuracy)`` (from ``Trainer.fit``, with ``best.pt``'s
  weights loaded): ``spikeforge.quant.quantize`` (the readout calibrated on the first
  ``CALIBRATION_SAMPLES`` training samples), the integer model's validation and test
  accuracy; with ``qat_epochs`` > 0, that many epochs of quantisation-aware fine-tuning of
  the integer model (Adam, ``QAT_LR`` cosine to 0, the run's batch size and loss) and the
  accuracy of the frozen result. The integer model that comes out last is saved in
  ``<run>/xylo/``: ``model.pt`` (the ``XyloNet``, ``torch.load(..., weights_only=False)``) and
  ``export_tables``' ``model.json``, ``model.h`` and ``model.c``. The figures go into
  ``metrics.json`` under ``"quantize"``.
"""
from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from torch import Tensor

from .config import ConfigError, Encoding, Method, TrainConfig

__all__ = ["check_config", "preflight", "after_training", "QAT_LR", "CALIBRATION_SAMPLES"]

QAT_LR = 1e-3               # Adam learning rate of the fine-tuning (benchmarks/xylo_quant.py, RESULTS section 11)
CALIBRATION_SAMPLES = 256   # training samples on which the float readout's range is measured


def check_config(cfg: TrainConfig) -> None:
    """The quantisation options fit the rest of the configuration (``ConfigError`` if not)."""
    q = cfg.qat_epochs
    if isinstance(q, bool) or not isinstance(q, int) or q < 0:
        raise ConfigError(f"qat_epochs must be a non-negative integer, got {q!r}")
    if cfg.quantize is None:
        if q:
            raise ConfigError(f"qat_epochs {q} fine-tunes a quantised model: add --quantize xylo, or drop qat_epochs")
        return
    if not cfg.dataset.events and cfg.encoding is not Encoding.LATENCY:
        raise ConfigError(f"--quantize {cfg.quantize.value}: the chip's input is event counts (0..15 per channel "
                          f"and step), but encoding {cfg.encoding.value} feeds {cfg.data_name}'s features as a "
                          f"float current; use --encoding latency (one input spike per feature)")
    if cfg.encoding is Encoding.LATENCY and cfg.input_tau is None and cfg.method is Method.BPTT:
        raise ConfigError(f"--quantize {cfg.quantize.value}: latency input reaches the hidden layer through "
                          f"synapses that become Xylo's, and without input_tau they never decay; set input_tau "
                          f"(e.g. 3.476 in the config file: a decay of 1/4 per step, exact on Xylo)")


def _events(cfg: TrainConfig, x: Tensor) -> Tensor:
    """A batch as the integer network's input: event counts (T, B, channels), on the CPU."""
    from .model import spike_input

    x = x.transpose(0, 1) if x.dim() == 3 else spike_input(x, cfg.steps, cfg.complement)
    return x.detach().to("cpu", torch.float64)


def _quantize(trainer, calibration: Tensor | None, qat: bool = False):
    from ..quant import XyloError, quantize

    model = copy.deepcopy(trainer.model).cpu().eval()
    try:
        return quantize(model, target=trainer.cfg.quantize.value, qat=qat, calibration=calibration)
    except XyloError as e:
        raise ConfigError(f"--quantize {trainer.cfg.quantize.value}: {e}") from None


def preflight(trainer) -> None:
    """Quantise the (untrained) model and run it on two training samples: what Xylo cannot
    hold or run fails here, before the run starts."""
    from ..quant import XyloError

    x, _ = trainer.task.train.take(torch.arange(min(2, len(trainer.task.train.labels))))
    events = _events(trainer.cfg, x)
    net = _quantize(trainer, None)
    try:
        with torch.no_grad():
            net.scores(events)
    except XyloError as e:
        hint = (" (event frames hold counts; --frames binary gives 0/1)" if trainer.cfg.dataset.events else "")
        raise ConfigError(f"--quantize {trainer.cfg.quantize.value}: {e}{hint}") from None


@torch.no_grad()
def accuracy(trainer, net, split: str) -> float:
    """The integer network's accuracy on a split (in the split's evaluation chunks)."""
    from .model import class_scores

    data = trainer.task.split(split)
    n = len(data.labels)
    chunks = [torch.arange(i, min(i + data.eval_chunk, n)) for i in range(0, n, data.eval_chunk)]
    correct = 0
    for x, y in data.batches(chunks):
        scores = class_scores(net.scores(_events(trainer.cfg, x)), trainer.cfg.loss)
        correct += int((scores.argmax(1) == y.cpu()).sum())
    return correct / max(n, 1)


def fine_tune(trainer, q, epochs: int):
    """``epochs`` of quantisation-aware training of the QAT net ``q`` on the training split
    (the run's batch size and loss; Adam at ``QAT_LR``, cosine to 0; shuffled by a generator
    seeded from the run's seed); the frozen integer network."""
    from .model import loss_and_logits

    cfg, split = trainer.cfg, trainer.task.train
    n = len(split.labels)
    per_epoch = math.ceil(n / cfg.batch_size)
    opt = torch.optim.Adam(q.parameters(), lr=QAT_LR)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, max(epochs * per_epoch, 1))
    for e in range(epochs):
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + 77_777 + e))
        for x, y in split.batches(list(order.split(cfg.batch_size))):
            loss, _ = loss_and_logits(q.scores(_events(cfg, x)), y.cpu(), cfg.loss)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
        trainer.progress.message(f"quantisation-aware fine-tuning: epoch {e + 1}/{epochs}, last batch loss "
                                 f"{loss.item():.4f}")
    return q.freeze()


def after_training(trainer, float_test_accuracy: float) -> dict:
    """Quantise the trained model, measure, optionally fine-tune, save (see the module
    docstring); the ``"quantize"`` entry of ``metrics.json``."""
    from ..quant import export_tables

    cfg = trainer.cfg
    train = trainer.task.train
    x, _ = train.take(torch.arange(min(CALIBRATION_SAMPLES, len(train.labels))))
    calibration = _events(cfg, x).float()   # the float model runs in float32
    net = _quantize(trainer, calibration)
    out = {"target": cfg.quantize.value, "float_test_accuracy": float_test_accuracy,
           "integer_val_accuracy": accuracy(trainer, net, "val"),
           "integer_test_accuracy": accuracy(trainer, net, "test"), "qat_epochs": cfg.qat_epochs}
    if cfg.qat_epochs:
        net = fine_tune(trainer, _quantize(trainer, calibration, qat=True), cfg.qat_epochs)
        out["qat_val_accuracy"] = accuracy(trainer, net, "val")
        out["qat_test_accuracy"] = accuracy(trainer, net, "test")
    folder = Path(trainer.run_dir) / cfg.quantize.value
    if trainer.main:
        files = export_tables(net, folder, name="model")
        torch.save(_without_recordings(net), folder / "model.pt")
        out["files"] = [str(p.relative_to(trainer.run_dir)) for p in
                        (folder / "model.pt", files.tables, files.header, files.source)]
    qat = f", after {cfg.qat_epochs} QAT epochs {100 * out['qat_test_accuracy']:.2f}%" if cfg.qat_epochs else ""
    trainer.progress.message(f"{cfg.quantize.value}: test accuracy float {100 * float_test_accuracy:.2f}%, integer "
                             f"{100 * out['integer_test_accuracy']:.2f}%{qat}; integer model in {folder}")
    return out


def _without_recordings(net):
    """``net`` without the states and spikes its layers recorded on the last call (the test
    split's: hundreds of MB), so that ``model.pt`` holds the network alone."""
    for layer in net:
        layer.trace = layer.spikes = layer.last_delivery = None
        layer.neuron.trace = None
    return net
