"""The trainer's ``Classifier`` under ``method eventprop``: the same modules (``fc_in ->
hidden -> fc_out -> readout``), run event by event by ``spikeforge.learning.eventprop``.

Input: each feature in [0, 1] (and with ``complement`` its complement ``1 - x``) becomes one spike at the
(real, not rounded) time that ``encoding.latency_times(..., rounded=False)`` gives, in steps over the first
``3T/4`` of the window, plus a bias spike at 0 (as ``spike_input`` for BPTT). Time is in steps (the neurons' ``dt = 1``),
so the same weights run in the time-stepped simulation too (``Classifier.network()``).
Hidden neurons that fire on no sample of a batch get no exact gradient; in training the loss
adds ``eventprop.silent_penalty`` for them (it pulls their membrane back to threshold).
Readout: ``LI`` read at the end of every step (times 1..T) for the max-membrane loss; for the first-spike loss a
spiking ``CubaLIF`` (``tau_mem = tau_out``) whose exact first spike times feed
``losses.ttfs_ce`` (simulated up to the first spike of each class: nothing later counts).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .. import encoding
from .. import nn as snn
from ..learning import eventprop
from ..neurons import REGISTRY
from .config import ConfigError, Encoding, Loss, Precision, TrainConfig, neuron_kwargs

__all__ = ["init_eventprop", "event_forward", "EventOutput", "check_eventprop", "latency_channels"]


@dataclass(frozen=True)
class EventOutput:
    """The EventProp run of a batch and its ``silent_penalty`` (0 outside training): the
    trainer adds it to the loss so that hidden neurons silent on a whole batch, which get no
    exact gradient, are pulled back to threshold."""

    run: eventprop.EventRun
    penalty: Tensor

# Initial weights (mean, std) per unit of synaptic time constant (an input spike adds
# w / tau_syn to a CubaLIF current): the input layer's are Wunderlich & Pehle's Yin-Yang values.
IN_INIT, IN_FAN = (1.5, 0.78), 5      # for 5 inputs; other fan-ins keep the mean and spread of the sum
OUT_INIT = {Loss.FIRST_SPIKE: (2.0, 1.0), Loss.MAX_MEMBRANE: (0.0, 1.0)}
REC_STD = 1.0                         # recurrent weights (--recurrent): std per unit of tau_syn, times 1/sqrt(h)


def init_eventprop(model: nn.Module, cfg: TrainConfig) -> nn.Module:
    """Initialise ``fc_in``/``fc_out`` for EventProp and return the readout layer."""
    tau_syn = float(neuron_kwargs(cfg).get("tau_syn", 1.0))
    if cfg.loss is Loss.FIRST_SPIKE:
        readout = snn.CubaLIF(tau_syn=float(neuron_kwargs(cfg).get("tau_syn", 5.0)), tau_mem=cfg.tau_out)
    else:
        readout = snn.LI(tau=cfg.tau_out)
    # an input spike adds w / tau to an LI membrane (w / tau_syn to a CubaLIF current): weights in those units
    out_scale = float(readout.tau_syn) if cfg.loss is Loss.FIRST_SPIKE else cfg.tau_out
    with torch.no_grad():
        fan = model.fc_in.in_features / IN_FAN        # keep the summed drive of the 5 Yin-Yang inputs
        model.fc_in.weight.normal_(IN_INIT[0] * tau_syn / fan, IN_INIT[1] * tau_syn / fan ** 0.5)
        model.fc_in.weight.mul_(cfg.input_scale)
        model.fc_in.bias.zero_()
        mean, std = OUT_INIT[cfg.loss]
        model.fc_out.weight.normal_(mean * out_scale, std * out_scale)
        model.fc_out.bias.zero_()
        rec = getattr(model.hidden, "recurrent", None)
        if rec is not None:            # zero mean, summed drive of ~h/4 spikes about tau_syn / 2
            rec.weight.normal_(0.0, REC_STD * tau_syn / cfg.hidden ** 0.5)
    return readout


def latency_channels(x: Tensor, complement: bool) -> Tensor:
    """Features (B, F) in [0, 1] -> the values the latency code turns into spike times: the
    features, with ``complement`` their complements ``1 - x`` (ON/OFF channels: a dark feature
    fires early on its second channel, where the first one fires late or never), and a constant
    1, the bias channel."""
    return torch.cat([x, *([1 - x] if complement else []), torch.ones_like(x[:, :1])], dim=1)


def input_events(x: Tensor, steps: int, complement: bool = False) -> eventprop.Events:
    """Features (B, F) in [0, 1] -> one spike per channel of ``latency_channels``, in steps."""
    times = encoding.latency_times(latency_channels(x, complement), steps, threshold=0.0,
                                   window=max(3 * steps // 4, 1), rounded=False)
    return eventprop.Events.from_times(times.to(x.dtype))


def event_forward(model: nn.Module, x: Tensor, return_spikes: bool = False):
    """The EventProp run of ``model`` on features ``x`` (B, F); with ``return_spikes``,
    ``(readout, hidden spikes)`` binned to the step grid for plots: ``(T, B, C)`` membrane
    (max-membrane) or output spikes (first-spike), and ``(T, B, H)``."""
    if x.dim() != 2:
        raise ValueError(f"method eventprop takes static features (B, F), got shape {tuple(x.shape)}")
    net = model.network()             # fc_in -> hidden (-> drop) -> fc_out -> readout
    first_only = model.loss is Loss.FIRST_SPIKE
    record = torch.arange(1, model.steps + 1, dtype=x.dtype, device=x.device)   # as BPTT's steps 1..T
    events = input_events(x, model.steps, model.complement)
    run = eventprop.run(net, events, float(model.steps), record=record, max_spikes=1 if first_only else None)
    if not return_spikes:
        penalty = eventprop.silent_penalty(net, run, float(model.steps)) if model.training \
            else x.new_zeros(())
        return EventOutput(run, penalty)
    hidden = _raster(run.spikes[0], model.steps, model.fc_in.out_features)
    out = _raster(run.spikes[-1], model.steps, model.fc_out.out_features) if first_only else run.readout
    return out, hidden


def _raster(ev: eventprop.Events, steps: int, n: int) -> Tensor:
    """Events -> (T, B, n) spike counts per step (step k holds times in [k, k+1))."""
    B = ev.times.shape[0]
    out = torch.zeros(steps, B, n, dtype=ev.times.dtype, device=ev.times.device)
    t = ev.times.detach()
    ok = torch.isfinite(t) & (t < steps)
    b = torch.arange(B, device=t.device).unsqueeze(1).expand_as(t)
    out.index_put_((t[ok].long(), b[ok], ev.index[ok]), torch.ones_like(t[ok]), accumulate=True)
    return out


def check_eventprop(cfg: TrainConfig) -> None:
    """EventProp reads spike times of static features and needs a neuron with a linear
    continuous-time form (``spikeforge.learning.eventprop``)."""
    if cfg.dataset.events or cfg.encoding is not Encoding.LATENCY:
        raise ConfigError(f"method eventprop simulates spike times: it needs encoding latency on a data set of "
                          f"static features (yinyang, digits), got dataset {cfg.dataset.value} with encoding "
                          f"{cfg.encoding.value}")
    if not _event_based(cfg.neuron):
        names = ", ".join(n for n, s in REGISTRY.items() if s.spiking and _event_based(n))
        raise ConfigError(f"method eventprop needs a neuron with a linear continuous-time form ({names}), "
                          f"got {cfg.neuron}")
    if cfg.precision is not Precision.FP32:
        raise ConfigError("method eventprop runs in float32 (its spike times are found by root finding); "
                          "drop --precision bf16")


def _event_based(neuron: str) -> bool:
    """Whether the neuron's own definition gives EventProp its exact solution (a linear
    ``derivative`` with ``threshold`` and ``jump``), asked of the spec at its defaults."""
    from ..functional import make_params
    from ..learning._modal import NotLinear, modes_of

    spec = REGISTRY[neuron]()
    try:
        modes_of(spec, make_params(spec, dtype=torch.float64), 1, None, torch.float64)   # reads threshold too
    except (NotLinear, NotImplementedError, AttributeError, ValueError):
        return False
    return True
