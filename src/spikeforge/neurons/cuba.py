"""Current-based neurons: a synaptic current low-pass filters the input and drives the membrane.

``CubaLIF`` and the non-spiking ``CubaLI`` map onto NIR's nodes of the same names (with
``w_in = 1``; an imported ``w_in`` becomes a ``Scale`` layer in front). Their Euler step is
sequential: the current advances first, and the membrane uses the new current.
"""
from __future__ import annotations

from dataclasses import dataclass

from ._spec import THRESHOLD_PARAMS, FireReset, NeuronSpec, Param, register_neuron


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

    nir_types = ("CubaLIF",)
    euler = "sequential"

    def derivative(self, x, s, p):
        """``tau_syn di/dt = x - i``; ``tau_mem dv/dt = v_leak - v + r i``."""
        i, v = s
        return ((x - i) / p.tau_syn, (p.v_leak - v + p.r * i) / p.tau_mem)

    def to_nir(self, p, scale):
        return "CubaLIF", {"tau_syn": p["tau_syn"] * scale, "tau_mem": p["tau_mem"] * scale, "r": p["r"],
                           "v_leak": p["v_leak"], **self.hard_reset_fields(p)}

    @classmethod
    def from_nir(cls, node_type, f, dt, options):
        keys = ("tau_syn", "tau_mem", "r", "v_leak", "v_threshold", "v_reset")
        return cls(dt=dt, **cls.options_from_nir(options)), {k: f[k] for k in keys}


@register_neuron
@dataclass(frozen=True)
class CubaLI(NeuronSpec):
    """Current-based leaky integrator (no spikes; the output is the membrane):
    ``i = i + dt/tau_syn * (x - i)``; ``v = v + dt/tau_mem * (v_leak - v + r * i)``."""

    dt: float = 1.0

    state = ("i", "v")
    params = {k: v for k, v in CubaLIF.params.items() if k not in THRESHOLD_PARAMS}   # CubaLIF's, no threshold
    spiking = False
    nir_types = ("CubaLI",)
    euler = "sequential"

    def step(self, x, s, p, fire):
        i, v = s
        i = i + self.dt / p.tau_syn * (x - i)
        v = v + self.dt / p.tau_mem * (p.v_leak - v + p.r * i)
        return v, (i, v)

    def rest(self, p):
        return (0.0, p.v_leak)

    derivative = CubaLIF.derivative

    def to_nir(self, p, scale):
        return "CubaLI", {"tau_syn": p["tau_syn"] * scale, "tau_mem": p["tau_mem"] * scale, "r": p["r"],
                          "v_leak": p["v_leak"]}

    @classmethod
    def from_nir(cls, node_type, f, dt, options):
        return cls(dt=dt), {k: f[k] for k in ("tau_syn", "tau_mem", "r", "v_leak")}
