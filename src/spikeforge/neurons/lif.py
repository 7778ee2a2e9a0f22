"""Integrate-and-fire family: IF, LIF, PLIF and the non-spiking LI readout.

Units: ``dt`` and the time constants share one time unit; ``r`` is the input
resistance, potentials are in the unit of ``v_threshold``. Each ``step`` is the Euler step
of the spec's ``derivative`` (its continuous-time form), and they map one-to-one onto
NIR's ``IF``, ``LIF`` and ``LI`` nodes (``to_nir`` / ``from_nir``; NIR time is this time
times ``scale``).
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

    nir_types = ("IF",)

    def step(self, x, s, p, fire):
        z, v = self.fire_reset(s[0] + self.dt * p.r * x, p, fire)
        return z, (v,)

    def rest(self, p):
        return (p.v_reset,)

    def derivative(self, x, s, p):
        """``dv/dt = r * x``."""
        return (p.r * x,)

    def to_nir(self, p, scale):
        return "IF", {"r": p["r"] / scale, **self.hard_reset_fields(p)}

    @classmethod
    def from_nir(cls, node_type, f, dt, options):
        return cls(dt=dt, **cls.options_from_nir(options)), {k: f[k] for k in ("r", "v_threshold", "v_reset")}


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

    nir_types = ("LIF",)

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

    def derivative(self, x, s, p):
        """``tau dv/dt = v_leak - v + r x``; with ``decay_input=False`` (a discrete variant)
        the input is not filtered by ``dt/tau``: ``dv/dt = (v_leak - v) / tau + r x / dt``."""
        if self.decay_input:
            return ((p.v_leak - s[0] + p.r * x) / p.tau,)
        return ((p.v_leak - s[0]) / p.tau + p.r * x / self.dt,)

    def to_nir(self, p, scale):
        # NIR's LIF is the decay-input form; decay_input=False is the same ODE with r * tau / dt
        r = p["r"] if self.decay_input else p["r"] * p["tau"] / self.dt
        return "LIF", {"tau": p["tau"] * scale, "r": r, "v_leak": p["v_leak"], **self.hard_reset_fields(p)}

    @classmethod
    def from_nir(cls, node_type, f, dt, options):
        decay_input = bool(options.get("decay_input", True))   # from a spikeforge export's metadata
        p = {k: f[k] for k in ("tau", "r", "v_leak", "v_threshold", "v_reset")}
        if not decay_input:
            p["r"] = f["r"] * dt / f["tau"]
        return cls(dt=dt, decay_input=decay_input, **cls.options_from_nir(options)), p


@register_neuron
@dataclass(frozen=True)
class PLIF(LIF):
    """Parametric LIF (Fang et al. 2021): the LIF equations with a learnable ``tau``."""

    params = {**LIF.params, "tau": Param(2.0, "time", positive=True, learnable=True)}
    nir_types = ()   # exports as NIR's LIF; a foreign LIF node imports as LIF


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

    nir_types = ("LI",)

    def step(self, x, s, p, fire):
        v = s[0] + self.dt / p.tau * (p.v_leak - s[0] + p.r * x)
        return v, (v,)

    def rest(self, p):
        return (p.v_leak,)

    def derivative(self, x, s, p):
        """``tau dv/dt = v_leak - v + r x``."""
        return ((p.v_leak - s[0] + p.r * x) / p.tau,)

    def to_nir(self, p, scale):
        return "LI", {"tau": p["tau"] * scale, "r": p["r"], "v_leak": p["v_leak"]}

    @classmethod
    def from_nir(cls, node_type, f, dt, options):
        return cls(dt=dt), {k: f[k] for k in ("tau", "r", "v_leak")}
