"""Current-based LIF: a synaptic current low-pass filters the input and drives the membrane.

Maps onto NIR's ``CubaLIF`` node (with ``w_in = 1``).
"""
from __future__ import annotations

from dataclasses import dataclass

from ._spec import THRESHOLD_PARAMS, FireReset, Param, register_neuron


@register_neuron
@dataclass(frozen=True)
class CubaLIF(FireReset):
    """``i = i + dt/tau_syn * (x - i)``; ``h = v + dt/tau_mem * (v_leak - v + r * i)``;
    ``z = H(h - v_threshold)``; reset as in LIF."""

    state = ("i", "v")
    params = {
        "tau_syn": Param(5.0, "time", positive=True),
        "tau_mem": Param(10.0, "time", positive=True),
        "v_leak": Param(0.0, "potential"),
        "r": Param(1.0, "resistance"),
        **THRESHOLD_PARAMS,
    }

    def step(self, x, s, p, fire):
        i, v = s
        i = i + self.dt / p.tau_syn * (x - i)
        h = v + self.dt / p.tau_mem * (p.v_leak - v + p.r * i)
        z, v = self.fire_reset(h, p, fire)
        return z, (i, v)

    def rest(self, p):
        return (0.0, p.v_leak)
