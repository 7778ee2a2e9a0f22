"""The default classifier: input layer -> spiking hidden layer -> LI readout, and its losses.

``Classifier(n_in, n_classes, cfg)`` maps static features (B, F) or input sequences
(T, B, F) to the readout membrane (T, B, C); ``predict(x)`` gives the classes. Static
features under ``Encoding.CURRENT`` are projected once and held as a constant current for
``cfg.steps`` steps (``spikeforge.encoding.direct``); under ``Encoding.LATENCY`` they become
one spike each (``spikeforge.encoding.latency`` over the first 3/4 of the window, plus a
bias channel of constant 1 that fires at step 0), which reach the hidden neurons through
current-based synapses (``synaptic_current``). Event frames with ``Frames.BINARY`` are spikes,
so ``fc_in`` is then a ``SpikeLinear`` (``SparseMode.AUTO``: it skips the zeros where the input
is sparse enough, on CPU; same parameters as ``nn.Linear``); frames of counts go through a
plain ``nn.Linear``. The losses come from ``spikeforge.losses``.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .. import encoding, functional, losses, neurons
from .event_model import EventOutput, latency_channels
from .. import nn as snn
from .. import surrogate as sg
from .config import ConfigError, Encoding, Frames, Loss, Method, TrainConfig, neuron_kwargs

__all__ = ["Classifier", "spike_input", "synaptic_current", "loss_and_logits", "class_scores", "make_surrogate"]


def make_surrogate(name: str, alpha: float | None) -> sg.Surrogate:
    cls = getattr(sg, name, None)
    if not (isinstance(cls, type) and issubclass(cls, sg.Surrogate)) or cls is sg.Surrogate:
        choices = ", ".join(c.__name__ for c in sg.BUILTIN)
        raise ConfigError(f"unknown surrogate {name!r}; choose one of {choices}")
    try:
        return cls() if alpha is None else cls(alpha=alpha)
    except ValueError as e:
        raise ConfigError(f"surrogate_alpha: {e}") from e


def spike_input(x: Tensor, steps: int, complement: bool = False) -> Tensor:
    """Features in [0, 1] (B, F) to spikes (T, B, F + 1), or (T, B, 2F + 1) with ``complement``:
    ``spikeforge.encoding.latency`` of ``latency_channels(x, complement)`` with the spike times
    spread over the first ``3T/4`` steps (value ``v`` at step ``round((1 - v) * (3T/4 - 1))``,
    0 silent); the last channel is a constant 1, a bias spike at step 0. The last quarter of
    the window leaves time for the answer."""
    return encoding.latency(latency_channels(x, complement), steps, threshold=0.0, window=max(3 * steps // 4, 1))


def synaptic_current(s: Tensor, tau: float | None, backend: str | None = None) -> Tensor:
    """Input spikes (T, B, F) through current-based synapses: ``i_t = a * i_{t-1} + s_t``
    with ``a = exp(-1/tau)``, run as the library's ``LI`` neuron (``tau_LI = 1 / (1 - a)``,
    ``r = tau_LI``) on ``backend``; ``tau=None``: the synapses do not decay, each spike adds
    a step current (the running sum of the spikes)."""
    if tau is None:
        return torch.cumsum(s, dim=0)
    tau_li = 1.0 / -math.expm1(-1.0 / tau)
    i, _, _, _ = functional.run(neurons.LI(), s, None, {"tau": tau_li, "r": tau_li}, backend=backend)
    return i


class Classifier(nn.Module):
    """``fc_in -> hidden neurons -> fc_out -> LI``; ``forward`` returns the readout
    membrane (T, B, C) and, with ``return_spikes=True``, the hidden spikes (T, B, H)."""

    def __init__(self, n_in: int, n_classes: int, cfg: TrainConfig) -> None:
        super().__init__()
        self.steps, self.encoding, self.input_tau = cfg.steps, cfg.encoding, cfg.input_tau
        self.loss, self.backend, self.method, self.complement = cfg.loss, cfg.backend, cfg.method, cfg.complement
        linear = snn.SpikeLinear if cfg.frames is Frames.BINARY else nn.Linear
        self.fc_in = linear(self.input_channels(n_in, cfg), cfg.hidden)
        kw = neuron_kwargs(cfg)
        surrogate = make_surrogate(cfg.surrogate, cfg.surrogate_alpha)
        try:
            self.hidden = snn.MODULES[cfg.neuron](surrogate=surrogate, backend=cfg.backend, **kw)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"neuron {cfg.neuron} with {kw}: {e}") from e
        if cfg.recurrent:                          # z_t = neuron(fc_in(x)_t + W_rec z_{t-1})
            self.hidden = snn.Recurrent(self.hidden, cfg.hidden)
        self.drop = nn.Dropout(cfg.dropout)       # of hidden spikes, in training
        self.fc_out = nn.Linear(cfg.hidden, n_classes)
        if cfg.method is Method.EVENTPROP:
            from .event_model import init_eventprop
            self.readout = init_eventprop(self, cfg)
            return
        if cfg.method in (Method.CONVERT, Method.PROXY):   # an ANN evaluated as its converted SNN
            from .convert_model import init_convert
            self.readout = init_convert(self, cfg)
            return
        self.readout = snn.LI(tau=cfg.tau_out, backend=cfg.backend)
        with torch.no_grad():
            self.fc_in.weight.mul_(cfg.input_scale)
            self.fc_in.bias.mul_(cfg.input_scale)

    @staticmethod
    def input_channels(n_in: int, cfg: TrainConfig) -> int:
        """``fc_in``'s inputs for ``n_in`` features: under ``Encoding.LATENCY`` the features
        (and their complements, ``cfg.complement``) and the bias channel."""
        if cfg.encoding is not Encoding.LATENCY:
            return n_in
        return n_in * (2 if cfg.complement else 1) + 1

    def current(self, x: Tensor) -> Tensor:
        """The hidden layer's input current (T, B, H)."""
        if x.dim() == 3:                           # a sequence already (events)
            return self.fc_in(x)
        if self.encoding is Encoding.LATENCY:
            return self.fc_in(synaptic_current(spike_input(x, self.steps, self.complement), self.input_tau,
                                                  self.backend))
        return encoding.direct(self.fc_in(x), self.steps)    # constant current: project once

    def forward(self, x: Tensor, return_spikes: bool = False):
        if self.method is Method.EVENTPROP:
            from .event_model import event_forward
            return event_forward(self, x, return_spikes)
        if self.method in (Method.CONVERT, Method.PROXY):
            from .convert_model import convert_forward
            return convert_forward(self, x, return_spikes)
        z = self.hidden(self.current(x))
        v = self.readout(self.fc_out(self.drop(z)))
        return (v, z) if return_spikes else v

    def network(self) -> nn.Sequential:
        """The time-stepped part as one ``nn.Sequential`` on input sequences (T, B, F), for
        export (``spikeforge.nir``): ``fc_in -> hidden -> fc_out -> readout`` (with ``drop`` after
        ``hidden`` when the model was made with dropout), after an ``LI``
        synapse layer for latency-coded input with ``input_tau``. Its input is the encoded
        sequence: the features at every step (current), or the spikes with the bias channel
        (latency, ``spike_input``). An EventProp model's hidden neurons hold their synaptic
        current themselves: its input spikes go to ``fc_in`` directly."""
        layers = [self.fc_in, self.hidden, *([self.drop] if self.drop.p else []), self.fc_out, self.readout]
        if self.encoding is Encoding.LATENCY and self.method is Method.BPTT:
            if self.input_tau is None:
                raise ConfigError("a latency model without input_tau integrates its input spikes without leak, "
                                  "which has no layer to export; train with input_tau set")
            tau_li = 1.0 / -math.expm1(-1.0 / self.input_tau)
            layers.insert(0, snn.LI(tau=tau_li, r=tau_li, backend=self.backend))
        return nn.Sequential(*layers)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """Predicted classes (B,) of static features (B, F) or time-first sequences (T, B, F)."""
        return class_scores(self(x), self.loss).argmax(1)


def class_scores(v, loss: Loss) -> Tensor:
    """The scores (B, C) whose largest entry is the prediction, for readout membranes ``v``
    (or an EventProp run)."""
    if isinstance(v, EventOutput):
        return v.run.readout.amax(0) if loss is Loss.MAX_MEMBRANE else -v.run.first
    if loss is Loss.MAX_MEMBRANE:
        return v.amax(0)
    return losses.first_spike_scores(readout_spikes(v), tie_break=v.amax(0))


def readout_spikes(v: Tensor) -> Tensor:
    """For ``Loss.FIRST_SPIKE``: a readout "fires" when its membrane reaches 1 (surrogate spikes)."""
    return sg.spike(v - 1.0, _FIRST_SPIKE_SURROGATE)


def loss_and_logits(v: Tensor, target: Tensor, loss: Loss) -> tuple[Tensor, Tensor]:
    """The loss of readout membranes ``v`` (T, B, C) and the scores used for prediction:
    ``losses.max_membrane_ce``, or ``losses.first_spike_ce`` of the readout spikes (the
    number of steps before the first one, differentiable through the surrogate of each
    crossing) with ties between equal times broken by the larger peak membrane. For an
    EventProp run: the max-membrane loss of its readout, or ``losses.ttfs_ce`` of its exact
    first-spike times, plus its silent-neuron penalty."""
    if isinstance(v, EventOutput):
        if loss is Loss.MAX_MEMBRANE:
            return losses.max_membrane_ce(v.run.readout, target) + v.penalty, class_scores(v, loss)
        return losses.ttfs_ce(v.run.first, target) + v.penalty, class_scores(v, loss)
    if loss is Loss.MAX_MEMBRANE:
        return losses.max_membrane_ce(v, target), class_scores(v, loss)
    return losses.first_spike_ce(readout_spikes(v), target), class_scores(v, loss)


_FIRST_SPIKE_SURROGATE = sg.ATan()
