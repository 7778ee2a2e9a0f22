"""Neurons with nonlinear sub-threshold dynamics: Izhikevich, QIF, EIF (forward Euler)."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ._spec import THRESHOLD_PARAMS, FireReset, NeuronSpec, Param, Reset, register_neuron, reset_membrane


@register_neuron
@dataclass(frozen=True)
class Izhikevich(NeuronSpec):
    """Izhikevich (2003), time in ms, potentials in mV:
    ``h = v + dt * (0.04 v^2 + 5 v + 140 - u + r * x)``; ``w = u + dt * a * (b v - u)``;
    ``z = H(h - v_threshold)``; then ``v = c`` and ``u = w + d`` where z."""

    detach_reset: bool = False
    dt: float = 1.0

    state = ("v", "u")
    params = {
        "a": Param(0.02, "1/time"),
        "b": Param(0.2, ""),
        "c": Param(-65.0, "potential"),
        "d": Param(8.0, "potential"),
        "r": Param(1.0, "resistance"),
        "v_threshold": Param(30.0, "potential"),
    }

    def step(self, x, s, p, fire):
        v, u = s
        h = v + self.dt * (0.04 * v * v + 5.0 * v + 140.0 - u + p.r * x)
        w = u + self.dt * p.a * (p.b * v - u)
        z = fire(h - p.v_threshold)
        zr = z.detach() if self.detach_reset else z
        return z, (reset_membrane(h, z, p.v_threshold, p.c, Reset.HARD, self.detach_reset), w + p.d * zr)

    def rest(self, p):
        return (p.c, p.b * p.c)

    def derivative(self, x, s, p):
        """``dv/dt = 0.04 v^2 + 5 v + 140 - u + r x``; ``du/dt = a (b v - u)``."""
        v, u = s
        return (0.04 * v * v + 5.0 * v + 140.0 - u + p.r * x, p.a * (p.b * v - u))


@register_neuron
@dataclass(frozen=True)
class QIF(FireReset):
    """Quadratic integrate-and-fire:
    ``h = v + dt/tau * (a0 * (v - v_rest) * (v - v_c) + r * x)``; ``z = H(h - v_threshold)``; reset."""

    state = ("v",)
    params = {
        "tau": Param(2.0, "time", positive=True),
        "a0": Param(1.0, "1/potential"),
        "v_rest": Param(0.0, "potential"),
        "v_c": Param(0.8, "potential"),
        "r": Param(1.0, "resistance"),
        **THRESHOLD_PARAMS,
    }

    def derivative(self, x, s, p):
        """``tau dv/dt = a0 (v - v_rest)(v - v_c) + r x``."""
        v = s[0]
        return ((p.a0 * (v - p.v_rest) * (v - p.v_c) + p.r * x) / p.tau,)

    def step(self, x, s, p, fire):
        v = s[0]
        h = v + self.dt / p.tau * (p.a0 * (v - p.v_rest) * (v - p.v_c) + p.r * x)
        z, v = self.fire_reset(h, p, fire)
        return z, (v,)

    def rest(self, p):
        return (p.v_rest,)


@register_neuron
@dataclass(frozen=True)
class EIF(FireReset):
    """Exponential integrate-and-fire:
    ``h = v + dt/tau * (v_rest - v + delta_t * exp((v - v_rh) / delta_t) + r * x)``;
    ``z = H(h - v_threshold)``; reset."""

    state = ("v",)
    params = {
        "tau": Param(2.0, "time", positive=True),
        "v_rest": Param(0.0, "potential"),
        "v_rh": Param(0.8, "potential"),
        "delta_t": Param(0.1, "potential", positive=True),
        "r": Param(1.0, "resistance"),
        **THRESHOLD_PARAMS,
    }

    def derivative(self, x, s, p):
        """``tau dv/dt = v_rest - v + delta_t exp((v - v_rh) / delta_t) + r x``."""
        v = s[0]
        return ((p.v_rest - v + p.delta_t * torch.exp((v - p.v_rh) / p.delta_t) + p.r * x) / p.tau,)

    def step(self, x, s, p, fire):
        v = s[0]
        # times 1/delta_t, not divided by it: the fused kernels compute a scalar parameter's reciprocal once, so
        # the step has no division (neuron alone 61 -> 56 ms, RESULTS §19i); within an ulp of the quotient
        h = v + self.dt / p.tau * (p.v_rest - v + p.delta_t * torch.exp((v - p.v_rh) * (1.0 / p.delta_t)) + p.r * x)
        z, v = self.fire_reset(h, p, fire)
        return z, (v,)

    def rest(self, p):
        return (p.v_rest,)
