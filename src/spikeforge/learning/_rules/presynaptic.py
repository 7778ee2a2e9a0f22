"""What ``Learner`` needs for rules that read the presynaptic neurons (``VDSP`` with
``Trigger.POST``), and ``Learner.pause()``'s context manager."""
from __future__ import annotations

from torch import Tensor, nn

from ...nn.layers import Recurrent
from ...nn.neuron import Neuron

__all__ = ["WEIGHTS", "Paused", "reads_pre", "pre_neuron", "pre_membrane"]

WEIGHTS = (nn.Linear, nn.modules.conv._ConvNd, Recurrent)   # weight layers (a rule pairs across none of them)


def reads_pre(rule) -> bool:
    return bool(getattr(rule, "reads_pre", False))


def pre_neuron(net: nn.Module, syn) -> Neuron:
    """The spiking neuron layer whose spikes feed ``syn.linear`` (the last ``Neuron`` before it
    in ``net.modules()`` order, no weight layer in between), for rules that read its membrane."""
    mods = list(net.modules())
    k = next(i for i, m in enumerate(mods) if m is syn.linear)
    for m in reversed(mods[:k]):
        if isinstance(m, Neuron) and m.spec_type.spiking:
            return m
        if isinstance(m, WEIGHTS):
            break
    raise ValueError(f"rule: VDSP(trigger=Trigger.POST) reads the presynaptic neurons' membrane, but synapse "
                     f"{syn.name!r} has no spiking neuron layer right before it; put input neurons before it "
                     f"(e.g. nn.Sequential(LIF(v_reset=-1), Linear, ...) fed the data as a current)")


def pre_membrane(syn, u: Tensor, pre: Tensor, sequence: bool = True) -> Tensor:
    """The pre neurons' membrane ``u`` laid out like the synapse's input ``pre`` (time first)."""
    if sequence and syn.pre_neuron.batch_first:
        u = u.transpose(0, 1)
    if u.shape != pre.shape:
        raise ValueError(f"synapse {syn.name!r}: the presynaptic membrane {tuple(u.shape)} must have the shape of "
                         f"the synapse's input {tuple(pre.shape)} (the layer before it must feed it directly)")
    return u


class Paused:
    """``with learner.pause():`` the learner's hooks do nothing inside the block."""

    def __init__(self, learner) -> None:
        self.learner, self.was = learner, learner.paused

    def __enter__(self):
        self.learner.paused = True
        return self.learner

    def __exit__(self, *exc) -> None:
        self.learner.paused = self.was
