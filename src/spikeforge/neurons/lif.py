"""Integrate-and-fire family: IF, LIF, PLIF and the non-spiking LI readout.

Units: ``dt`` and the time constants share one time unit; ``r`` is the input
resistance, potentials are in the unit of ``v_threshold``. The Euler updates below map
one-to-one onto NIR's ``IF``, ``LIF`` and ``LI`` nodes.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._spec import THRESHOLD_PARAMS, FireReset, NeuronSpec, Param, register_neuron


@register_neuron
@dataclass(frozen=True)
class IF(FireReset):
    """Integrate-and-fire: ``h = v + dt * r * x``; ``z = H(h - v_threshold)``; reset."""

    state = ("v",)
    params = {"r": Param(1.0, "resistance"), **THRESHOLD_PARAMS}

    def step(self, x, s, p, fire):
        z, v = self.fire_reset(s[0] + self.dt * p.r * x, p, fire)
        return z, (v,)

    def rest(self, p):
        return (p.v_reset,)


@register_neuron
@dataclass(frozen=True)
class LIF(FireReset):
    """Leaky integrate-and-fire.

    decay_input=True:  ``h = v + dt/tau * (v_leak - v + r * x)``
    decay_input=False: ``h = v + dt/tau * (v_leak - v) + r * x``
    then ``z = H(h - v_threshold)`` and reset: HARD ``v = v_reset`` where z, SOFT
    ``v = h - v_threshold * z``; ``detach_reset`` stops the gradient through the reset.
    """

    decay_input: bool = True

    state = ("v",)
    params = {
        "tau": Param(2.0, "time", positive=True),
        "v_leak": Param(0.0, "potential"),
        "r": Param(1.0, "resistance"),
        **THRESHOLD_PARAMS,
    }

    def step(self, x, s, p, fire):
        v = s[0]
        if self.decay_input:
            h = v + self.dt / p.tau * (p.v_leak - v + p.r * x)
        else:
            h = v + self.dt / p.tau * (p.v_leak - v) + p.r * x
        z, v = self.fire_reset(h, p, fire)
        return z, (v,)

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
