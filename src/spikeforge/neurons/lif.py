"""Integrate-and-fire family: IF, LIF, PLIF and the non-spiking LI readout.

Units: ``dt`` and the time constants share one time unit; ``r`` is the input
resistance, potentials are in the unit of ``v_threshold``. The Euler updates below map
one-to-one onto NIR's ``IF``, ``LIF`` and ``LI`` nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._spec import NeuronSpec, Param, Reset, register_neuron, reset_membrane

_THRESH = {
    "v_threshold": Param(1.0, "potential"),
    "v_reset": Param(0.0, "potential"),
}


@register_neuron
@dataclass(frozen=True)
class IF(NeuronSpec):
    """Integrate-and-fire: ``h = v + dt * r * x``; ``z = H(h - v_threshold)``; reset."""

    reset: Reset = Reset.HARD
    detach_reset: bool = False
    dt: float = 1.0

    state = ("v",)
    params = {"r": Param(1.0, "resistance"), **_THRESH}

    def step(self, x, s, p, fire):
        h = s[0] + self.dt * p.r * x
        z = fire(h - p.v_threshold)
        return z, (reset_membrane(h, z, p.v_threshold, p.v_reset, self.reset, self.detach_reset),)

    def rest(self, p):
        return (p.v_reset,)


@register_neuron
@dataclass(frozen=True)
class LIF(NeuronSpec):
    """Leaky integrate-and-fire.

    decay_input=True:  ``h = v + dt/tau * (v_leak - v + r * x)``
    decay_input=False: ``h = v + dt/tau * (v_leak - v) + r * x``
    then ``z = H(h - v_threshold)`` and reset: HARD ``v = v_reset`` where z, SOFT
    ``v = h - v_threshold * z``; ``detach_reset`` stops the gradient through the reset.
    """

    decay_input: bool = True
    reset: Reset = Reset.HARD
    detach_reset: bool = False
    dt: float = 1.0

    state = ("v",)
    params = {
        "tau": Param(2.0, "time", positive=True),
        "v_leak": Param(0.0, "potential"),
        "r": Param(1.0, "resistance"),
        **_THRESH,
    }

    def step(self, x, s, p, fire):
        v = s[0]
        if self.decay_input:
            h = v + self.dt / p.tau * (p.v_leak - v + p.r * x)
        else:
            h = v + self.dt / p.tau * (p.v_leak - v) + p.r * x
        z = fire(h - p.v_threshold)
        return z, (reset_membrane(h, z, p.v_threshold, p.v_reset, self.reset, self.detach_reset),)

    def rest(self, p):
        return (p.v_leak,)


@register_neuron
@dataclass(frozen=True)
class PLIF(LIF):
    """Parametric LIF (Fang et al. 2021): the LIF equations with a learnable ``tau``."""

    params = {**LIF.params, "tau": Param(2.0, "time", positive=True, learnable=True)}


@register_neuron
@dataclass(frozen=True)
class LI(NeuronSpec):
    """Leaky integrator readout (no spikes); its output is the membrane:
    ``v = v + dt/tau * (v_leak - v + r * x)``."""

    dt: float = 1.0

    state = ("v",)
    params = {
        "tau": Param(2.0, "time", positive=True),
        "v_leak": Param(0.0, "potential"),
        "r": Param(1.0, "resistance"),
    }
    spiking = False

    def step(self, x, s, p, fire):
        v = s[0] + self.dt / p.tau * (p.v_leak - s[0] + p.r * x)
        return v, (v,)

    def rest(self, p):
        return (p.v_leak,)
