"""Adaptive LIF: a spike-triggered adaptation variable raises the threshold.

This is the LSNN neuron of Bellec et al. (2018), the memory mechanism used in place of
LSTM cells on Loihi.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._spec import THRESHOLD_PARAMS, FireReset, Param, Reset, register_neuron, reset_membrane


@register_neuron
@dataclass(frozen=True)
class ALIF(FireReset):
    """``h = v + dt/tau * (v_leak - v + r * x)``; threshold ``b = v_threshold + beta * a``;
    ``z = H(h - b)``; membrane reset (SOFT subtracts ``b``);
    ``a = a + dt/tau_adapt * (-a) + z``."""

    reset: Reset = Reset.SOFT

    state = ("v", "a")
    params = {
        "tau": Param(20.0, "time", positive=True),
        "tau_adapt": Param(200.0, "time", positive=True),
        "beta": Param(0.2, "potential"),
        "v_leak": Param(0.0, "potential"),
        "r": Param(1.0, "resistance"),
        **THRESHOLD_PARAMS,
    }

    def step(self, x, s, p, fire):
        v, a = s
        h = v + self.dt / p.tau * (p.v_leak - v + p.r * x)
        z, v = self.fire_reset(h, p, fire, b=p.v_threshold + p.beta * a)
        a = a - self.dt / p.tau_adapt * a + z
        return z, (v, a)

    def rest(self, p):
        return (p.v_leak, 0.0)

    def derivative(self, x, s, p):
        """``tau dv/dt = v_leak - v + r x``; ``tau_adapt da/dt = -a`` (plus a jump of 1 per spike)."""
        v, a = s
        return ((p.v_leak - v + p.r * x) / p.tau, -a / p.tau_adapt)

    def threshold(self, s, p):
        """``v - (v_threshold + beta * a)``."""
        return s[0] - p.v_threshold - p.beta * s[1]

    def jump(self, s, p):
        """The membrane resets against the adapted threshold; ``a`` grows by 1."""
        v, a = s
        return (reset_membrane(v, 1.0, p.v_threshold + p.beta * a, p.v_reset, self.reset, False), a + 1.0)
