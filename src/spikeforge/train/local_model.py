"""``spikeforge train --method stdp|desire``: local learning rules (``spikeforge.learning``) in the
same run folder as the gradient methods (``config.json``, ``last.pt``/``best.pt``, ``metrics.json``,
plots), on the embedded digits.

- ``stdp``: Diehl & Cook (2015), unsupervised. The pixels as Poisson spikes (probability
  ``STDP_NET.gain * pixel`` per step, ``cfg.steps`` steps) -> ``nn.Linear(64, cfg.hidden)`` ->
  LIF under ``LateralInhibition``; pair STDP, hard bounds, ``Normalise``, ``AdaptiveThreshold``.
  No label is used for learning. After each epoch every neuron is assigned the class it answers
  most on the training split (presentations of ``2 * cfg.steps`` steps, weak digits shown again
  at a higher rate); a digit's class is the one whose neurons spike most on average.
- ``desire``: desire backpropagation (Gerlinghoff et al. 2023), supervised, no autograd.
  Poisson input (probability = pixel) -> ``Linear(64, cfg.hidden)`` -> LIF -> ``Linear(., 10)`` ->
  LIF; ``learner.teach(labels)`` after each batch. The class is the output neuron with most spikes.

The settings not in ``TrainConfig`` are those of ``benchmarks/stdp_diehl_cook.py`` and
``benchmarks/desire_digits.py`` (``STDP_NET``, ``DESIRE_NET``). No loss is optimised: the
"loss" of the history and of ``best.pt``'s choice is the error rate (1 - accuracy), so ``best.pt``
is the epoch with the highest validation accuracy. The Poisson input of an evaluation is drawn
from a generator seeded by the run's seed and the split, so ``spikeforge eval`` repeats it.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import encoding
from .. import nn as snn
from ..learning import (AdaptiveThreshold, Bound, Bounds, DesireBackprop, Normalise, PairSTDP, assign_labels,
                        assigned_scores, attach)
from .checkpoint import CheckpointError
from .config import DataSet, Encoding, Loss, Method, Precision, TrainConfig
from .config import ConfigError
from .progress import Progress
from .tasks import load_task
from .trainer import Trainer, _copy_state, _with_defaults

__all__ = ["METHODS", "LocalNet", "LocalTrainer", "check_local", "STDP_NET", "DESIRE_NET"]

METHODS = (Method.STDP, Method.DESIRE)
LOSS_NAME = "error rate (1 - accuracy): local rules optimise no loss"


@dataclass(frozen=True)
class StdpNet:
    """Diehl & Cook network and rule settings (benchmarks/stdp_diehl_cook.py, RESULTS.md 14)."""

    gain: float = 0.5            # spike probability per step of a white pixel
    tau: float = 30.0            # LIF membrane time constant (steps), no input decay
    inhibition: float = 1.0      # LateralInhibition strength
    w_max: float = 1.0
    w_init: float = 0.3          # initial weights uniform in [0, w_init * w_max]
    norm_total: float = 0.3      # sum of each neuron's input weights
    a_plus: float = 2e-3
    a_minus: float = 5e-4
    tau_trace: float = 10.0
    theta_plus: float = 0.04
    tau_theta: float = 4000.0
    min_spikes: int = 3          # evaluation: fewer spikes -> shown again at a higher rate
    retries: int = 4


@dataclass(frozen=True)
class DesireNet:
    """Desire backpropagation settings (benchmarks/desire_digits.py, RESULTS.md 14)."""

    gain: float = 1.0
    tau: float = 4.0             # membrane decay 0.75 per step
    hidden_threshold: float = 0.05
    output_threshold: float = 0.30
    margin: float = 4.0


STDP_NET, DESIRE_NET = StdpNet(), DesireNet()


def check_local(cfg: TrainConfig) -> None:
    """What ``stdp``/``desire`` can run: the digits as rate-coded spikes, their own LIF networks."""
    m = cfg.method.value
    if cfg.dataset is not DataSet.DIGITS:
        raise ConfigError(f"method {m} is set up for the embedded 8x8 digits (rate-coded pixels in [0, 1]); "
                          f"got dataset {cfg.data_name}: use --dataset digits")
    if cfg.encoding is not Encoding.CURRENT or cfg.loss is not Loss.MAX_MEMBRANE:
        raise ConfigError(f"method {m} codes the pixels as Poisson spikes and optimises no loss: drop --encoding "
                          f"and --loss (got encoding {cfg.encoding.value}, loss {cfg.loss.value})")
    for key in ("recurrent", "quantize", "input_tau"):
        if getattr(cfg, key, None):
            raise ConfigError(f"method {m} trains a feed-forward LIF network with a local rule; {key} is not "
                              f"supported with it: drop --{key.replace('_', '-')}")
    if cfg.precision is not Precision.FP32:
        raise ConfigError(f"method {m} runs in float32; drop --precision {cfg.precision.value}")
    if cfg.neuron != "IF" or cfg.neuron_params or cfg.reset is not None or cfg.detach_reset is not None:
        raise ConfigError(f"method {m} uses its own LIF neurons (spikeforge.train.local_model); drop "
                          f"neuron/neuron_params/reset/detach_reset (got neuron {cfg.neuron}, {cfg.neuron_params})")


class LocalNet(nn.Module):
    """The network of a local-learning run. ``forward(x)`` takes features ``(B, F)`` in [0, 1]
    and returns spike counts ``(B, C)`` per class: the output neurons' (desire) or the mean
    count of the neurons assigned to each class (stdp; ``assignment`` is a buffer). ``predict``
    gives the classes. The input spikes are drawn from ``generator`` (default torch's)."""

    def __init__(self, n_in: int, n_classes: int, cfg: TrainConfig) -> None:
        super().__init__()
        self.method, self.steps, self.n_classes = cfg.method, cfg.steps, n_classes
        if cfg.method is Method.STDP:
            s = STDP_NET
            lin = nn.Linear(n_in, cfg.hidden, bias=False)
            with torch.no_grad():
                lin.weight.uniform_(0.0, s.w_init * s.w_max)
            lif = snn.LIF(tau=s.tau, v_threshold=1.0, v_reset=0.0, decay_input=False, backend=cfg.backend)
            self.net = nn.Sequential(lin, snn.LateralInhibition(lif, s.inhibition))
            self.register_buffer("assignment", torch.zeros(cfg.hidden, dtype=torch.long))
            self.register_buffer("theta", torch.zeros(cfg.hidden))   # the learner's threshold offsets (resume)
        else:
            lif = dict(tau=DESIRE_NET.tau, decay_input=False, v_threshold=1.0, v_reset=0.0, backend=cfg.backend)
            self.net = nn.Sequential(nn.Linear(n_in, cfg.hidden, bias=False), snn.LIF(**lif),
                                     nn.Linear(cfg.hidden, n_classes, bias=False), snn.LIF(**lif))
            for m in (self.net[0], self.net[2]):
                nn.init.kaiming_normal_(m.weight)

    @property
    def gain(self) -> float:
        return STDP_NET.gain if self.method is Method.STDP else DESIRE_NET.gain

    def spikes(self, x: Tensor, steps: int, gain: float | None = None, generator=None) -> Tensor:
        """The last layer's spikes ``(T, B, N)`` for features ``x`` ``(B, F)``."""
        return self.net(encoding.rate(x, steps, gain=self.gain if gain is None else gain, generator=generator))

    def counts(self, x: Tensor, generator=None) -> Tensor:
        """Spike counts ``(B, N)`` of the last layer; stdp: ``2 * steps`` steps, digits with fewer
        than ``min_spikes`` spikes shown again at a higher rate (Diehl & Cook)."""
        if self.method is not Method.STDP:
            return self.spikes(x, self.steps, generator=generator).sum(0)
        s = STDP_NET
        c = self.spikes(x, 2 * self.steps, generator=generator).sum(0)
        for k in range(1, s.retries + 1):
            weak = c.sum(1) < s.min_spikes
            if not weak.any():
                break
            c[weak] = self.spikes(x[weak], 2 * self.steps, min(1.0, s.gain * (1 + 0.5 * k)), generator).sum(0)
        return c

    def scores(self, counts: Tensor) -> Tensor:
        """Class scores ``(B, C)`` from the last layer's counts (stdp: mean over assigned neurons)."""
        if self.method is not Method.STDP:
            return counts
        return assigned_scores(counts, self.assignment, self.n_classes)

    def forward(self, x: Tensor, generator=None) -> Tensor:
        if x.dim() != 2:
            raise ValueError(f"method {self.method.value} takes static features (B, F), got shape {tuple(x.shape)}")
        return self.scores(self.counts(x, generator))

    @torch.no_grad()
    def predict(self, x: Tensor, generator=None) -> Tensor:
        return self(x, generator).argmax(1)

    def network(self) -> nn.Module:
        raise ConfigError(f"a method {self.method.value} run cannot be exported to NIR yet (its lateral inhibition "
                          f"and label assignment have no NIR nodes); use spikeforge.train.load_run(run_dir) in Python")


class LocalTrainer(Trainer):
    """The ``Trainer`` of a local-learning run: the same run folder, checkpoints, ``fit``,
    ``metrics``; an epoch runs the rule (``sf.learning.attach``) instead of an optimiser."""

    def __init__(self, cfg: TrainConfig, run_dir, *, quiet: bool = False, plots: bool = True, group=None) -> None:
        from pathlib import Path

        from . import preflight
        if group is not None:
            raise ConfigError(f"method {cfg.method.value} runs in one process; drop --nproc (and torchrun)")
        self.cfg, self.run_dir, self.plots, self.group, self.main = cfg, Path(run_dir), plots, None, True
        self.progress = Progress(quiet)
        preflight.check_device(cfg.device)
        preflight.check_backend(cfg)
        self.device = torch.device(cfg.device)
        self.task = load_task(cfg, self.device)
        torch.manual_seed(cfg.seed)
        self.model = self.net = LocalNet(self.task.n_in, len(self.task.classes), cfg).to(self.device)
        self.learner = self._attach()
        self.optimizer = None
        self.history: list[dict] = []
        self.best = {"epoch": 0, "val_accuracy": 0.0, "val_loss": math.inf}
        self.best_model = _copy_state(self.model)
        self.epoch = 0

    def _attach(self):
        net = self.model.net
        if self.cfg.method is Method.STDP:
            s = STDP_NET
            with torch.no_grad():      # one threshold per neuron from the start (the state dict keeps its shape)
                net[1].neuron.v_threshold = torch.ones(self.cfg.hidden, device=self.device)
            learner = attach(net, PairSTDP(a_plus=s.a_plus, a_minus=s.a_minus, tau_pre=s.tau_trace,
                                           tau_post=s.tau_trace),
                             bounds=Bounds(Bound.HARD, 0.0, s.w_max), normalise=Normalise(s.norm_total),
                             homeostasis=AdaptiveThreshold(s.theta_plus, s.tau_theta))
            learner.apply(0.0)        # normalise the initial weights
            return learner
        d = DESIRE_NET
        rule = DesireBackprop(hidden_threshold=d.hidden_threshold, output_threshold=d.output_threshold,
                              margin=d.margin)
        return attach(net, rule, bounds=Bounds(Bound.NONE))

    def _generator(self, salt: int) -> torch.Generator:
        return torch.Generator(device=self.device).manual_seed(self.cfg.seed * 100_003 + salt)

    # -- state ------------------------------------------------------------------------
    def state(self) -> dict:
        return {"epoch": self.epoch, "config": self.cfg.to_dict(), "model": self.model.state_dict(),
                "optimizer": {}, "history": self.history, "best": self.best, "best_model": self.best_model}

    def load_state(self, ck: dict, model_only: bool = False) -> None:
        mine, theirs = self.cfg.to_dict(), _with_defaults(ck.get("config"))
        mine.pop("epochs"), theirs.pop("epochs", None)
        if mine != theirs:
            raise CheckpointError("the checkpoint was written with another configuration than this run's config.json")
        try:
            self.model.load_state_dict(ck["model"])
        except (RuntimeError, KeyError, TypeError) as e:
            raise CheckpointError(f"the checkpoint does not fit this model: {e}") from e
        self._sync_thresholds()
        if not model_only:
            self.best_model = ck.get("best_model", _copy_state(self.model))
            self.epoch, self.history, self.best = int(ck["epoch"]), list(ck["history"]), dict(ck["best"])

    def _sync_thresholds(self) -> None:
        """After loading weights: the learner's homeostatic offsets, as they were saved."""
        if self.cfg.method is Method.STDP:
            self.learner.set_thresholds({"0": self.model.theta})

    def check(self) -> None:
        x, _ = self.task.train.take(torch.arange(min(2, len(self.task.train.labels))))
        with torch.no_grad(), self.learner.pause():
            self.model(x, self._generator(-1))

    # -- one epoch ----------------------------------------------------------------------
    def train_epoch(self) -> dict:
        cfg, split, model = self.cfg, self.task.train, self.model
        n, e, bs = len(split.labels), self.epoch + 1, cfg.batch_size
        per_epoch = math.ceil(n / bs)
        g = self._generator(e)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + e))
        model.train()
        correct, t0, c0 = 0, time.perf_counter(), time.process_time()
        self.learner.reset()
        with torch.no_grad():
            for b in range(per_epoch):
                x, y = split.take(order[b * bs:(b + 1) * bs])
                z = model.spikes(x, cfg.steps, generator=g)
                if cfg.method is Method.DESIRE:
                    self.learner.teach(y)
                    correct += int((z.sum(0).argmax(1) == y).sum())
                self.learner.apply(self._lr(self.epoch * per_epoch + b, cfg.epochs * per_epoch))
                seen = min(n, (b + 1) * bs)     # stdp: no labels while learning, nothing to show
                acc = correct / seen if cfg.method is Method.DESIRE else math.nan
                self.progress.batch(e, cfg.epochs, b + 1, per_epoch, 1 - acc, acc)
            self.learner.reset()
            if cfg.method is Method.STDP:        # label assignment on the training split
                model.theta.copy_(self.learner.thresholds["0"])
                counts = self._counts("train")
                model.assignment.copy_(assign_labels(counts, split.labels, model.n_classes))
                correct = int((model.scores(counts).argmax(1) == split.labels).sum())
        return {"train_loss": 1 - correct / n, "train_accuracy": correct / n,
                "train_seconds": time.perf_counter() - t0, "train_cpu_seconds": time.process_time() - c0}

    @torch.no_grad()
    def _counts(self, split: str) -> Tensor:
        """The last layer's spike counts on a whole split (learning paused), input from a
        generator seeded by the run's seed and the split."""
        data = self.task.split(split)
        g = self._generator(-(2 + ("train", "val", "test").index(split)))
        n, chunk = len(data.labels), data.eval_chunk
        self.model.eval()
        with self.learner.pause():
            return torch.cat([self.model.counts(data.take(torch.arange(i, min(i + chunk, n)))[0], g)
                              for i in range(0, n, chunk)])

    @torch.no_grad()
    def predict(self, split: str, part: slice = slice(None)) -> tuple[float, Tensor]:
        """Error rate and predicted classes on a whole split (one process: no ``part``)."""
        if part != slice(None):
            raise ValueError(f"method {self.cfg.method.value} evaluates whole splits, got part={part}")
        pred = self.model.scores(self._counts(split)).argmax(1)
        return 1.0 - (pred == self.task.split(split).labels).float().mean().item(), pred

    def accuracy(self, split: str) -> tuple[float, float]:
        err, _ = self.predict(split)
        return err, 1.0 - err

    def metrics(self, test_acc, test_loss, status: str, **extra) -> dict:
        return {**super().metrics(test_acc, test_loss, status, **extra), "method": self.cfg.method.value,
                "loss": LOSS_NAME}

    def _plots(self) -> list[str]:
        try:
            from . import plots
            y = self.task.test.labels
            _, pred = self.predict("test")
            plots.curves(self.history, self.run_dir / "curves.png")
            cm = plots.confusion_matrix(y.cpu(), pred.cpu(), len(self.task.classes))
            plots.confusion(cm, self.task.classes, self.run_dir / "confusion.png")
        except ImportError as e:
            self.progress.message(f"plots skipped: {e}")
            return []
        return ["curves.png", "confusion.png"]
