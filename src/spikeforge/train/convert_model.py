"""The trainer's ``Classifier`` under ``method convert`` and ``method proxy``: an ANN
``fc_in -> QCFS -> fc_out`` trained with ordinary backpropagation, evaluated as its converted SNN.

The hidden activation is ``spikeforge.convert.QCFS`` with a trainable threshold ``lambda``
(initially ``LAMBDA0``), so the conversion needs no calibration data: the SNN is
``fc_in(x) / lambda`` as a constant current for ``cfg.steps`` steps -> ``IF`` (reset by
subtraction, threshold 1, starting at 1/2) -> ``fc_out(lambda * spikes)``, and its output is the
mean readout current over the steps (what ``spikeforge.convert.ann_to_snn`` builds from the same
ANN). Validation and test accuracy (and so ``best.pt``) are the SNN's.

- ``convert``: QCFS with 8 levels; training sees the ANN only (conversion after training, Bu et
  al. 2022);
- ``proxy``: QCFS with 64 levels (close to a ReLU clipped at a trainable ``lambda``); training sees
  the SNN's output at ``cfg.steps`` with the ANN's gradient, ``ann + (snn - ann).detach()``
  (``spikeforge.convert.ProxyModel``). With one hidden layer and a constant input current the
  SNN after ``T`` steps *is* QCFS with ``T`` levels (Bu et al., Theorem 2), so here the proxy is
  close to training QCFS(``L = T``) directly; it differs in deeper networks (see
  benchmarks/conversion_digits.py).

Both take static features (Yin-Yang, digits) as a current and use the max-membrane loss, which on
the single step returned here is the cross-entropy of the output.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from .. import encoding
from .. import nn as snn
from ..convert import QCFS
from .config import ConfigError, Encoding, Loss, Method, TrainConfig

__all__ = ["METHODS", "init_convert", "convert_forward", "check_convert"]

METHODS = (Method.CONVERT, Method.PROXY)
LEVELS = {Method.CONVERT: 8, Method.PROXY: 64}
LAMBDA0 = 2.0


def check_convert(cfg: TrainConfig) -> None:
    """What ``convert``/``proxy`` can run: static features as a current, the max-membrane
    loss, IF neurons."""
    m = cfg.method.value
    if cfg.dataset.events or cfg.encoding is not Encoding.CURRENT:
        raise ConfigError(f"method {m} converts an ANN fed with the features as a constant current: it needs "
                          f"encoding current on a data set of static features (yinyang, digits), got dataset "
                          f"{cfg.dataset.value} with encoding {cfg.encoding.value}")
    if cfg.loss is not Loss.MAX_MEMBRANE:
        raise ConfigError(f"method {m} trains with the cross-entropy of the output (loss max-membrane), "
                          f"got loss {cfg.loss.value}")
    for key in ("recurrent", "quantize"):
        if getattr(cfg, key, None):
            raise ConfigError(f"method {m} converts a feed-forward ANN to soft-reset IF neurons; {key} is not "
                              f"supported with it: drop --{key}")
    if cfg.neuron != "IF" or cfg.neuron_params or cfg.reset is not None:
        raise ConfigError(f"method {m} converts ReLU units to IF neurons with reset by subtraction; drop "
                          f"neuron/neuron_params/reset (got neuron {cfg.neuron}, {cfg.neuron_params}, reset {cfg.reset})")


def init_convert(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """The QCFS activation and the IF neurons of the converted layer; returns the readout."""
    model.act = QCFS(levels=LEVELS[cfg.method], threshold=LAMBDA0)
    model.hidden = snn.IF(reset="soft", v_threshold=1.0, v_reset=0.5, backend=cfg.backend)
    return nn.Identity()


def _snn(model: nn.Module, x: Tensor) -> tuple[Tensor, Tensor]:
    """The converted network on features ``x`` (B, F): readout currents and hidden spikes (T, B, .)."""
    lam = model.act.threshold.detach()
    z = model.hidden(encoding.direct(model.fc_in(x) / lam, model.steps))
    return model.fc_out(z * lam), z


def convert_forward(model: nn.Module, x: Tensor, return_spikes: bool = False):
    """Training: the ANN's output (``convert``) or the proxy (``proxy``), as one step (1, B, C).
    Evaluation: the SNN's mean readout current (1, B, C). ``return_spikes``: the running mean
    of the readout current (T, B, C) and the hidden spikes (T, B, H), for plots."""
    if x.dim() != 2:
        raise ValueError(f"method {model.method.value} takes static features (B, F), got shape {tuple(x.shape)}")
    if return_spikes:
        out, z = _snn(model, x)
        steps = torch.arange(1, model.steps + 1, dtype=out.dtype, device=out.device).view(-1, 1, 1)
        return out.cumsum(0) / steps, z
    if not model.training:
        return _snn(model, x)[0].mean(0, keepdim=True)
    ann = model.fc_out(model.act(model.fc_in(x)))
    if model.method is Method.CONVERT:
        return ann.unsqueeze(0)
    return (ann + (_snn(model, x)[0].mean(0) - ann).detach()).unsqueeze(0)
