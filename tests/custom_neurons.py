"""Neurons a user might write outside the library, each the natural way (``torch.where``,
``clamp``, ``relu``), and a one-op neuron per op that the fused backends claim to support.

None of them is registered (``@register_neuron``): tests pass the instances directly to
``functional.run``, so the library's registry-driven matrix does not see them.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as nnf

from spikeforge.neurons import NeuronSpec, Param


@dataclass(frozen=True)
class RefractoryLIF(NeuronSpec):
    """LIF that ignores its input for ``t_ref`` after a spike (a refractory counter ``r``):
    ``h = v + dt/tau (x - v)`` outside the refractory period, ``v`` inside;
    ``z = H(h - v_threshold)``; hard reset; ``r = t_ref`` on a spike, else ``max(r - dt, 0)``."""

    dt: float = 1.0

    state = ("v", "r")
    params = {"tau": Param(2.0, "time", positive=True), "v_threshold": Param(1.0, "potential"),
              "v_reset": Param(0.0, "potential"), "t_ref": Param(2.0, "time")}

    def step(self, x, s, p, fire):
        v, r = s
        h = v + torch.where(r > 0, 0.0, self.dt / p.tau * (x - v))
        z = fire(h - p.v_threshold)
        v = h * (1.0 - z) + p.v_reset * z
        r = torch.where(z > 0, p.t_ref, torch.clamp_min(r - self.dt, 0.0))
        return z, (v, r)


@dataclass(frozen=True)
class BoundedLIF(NeuronSpec):
    """LIF whose membrane is kept in ``[v_min, v_max]``: ``h = clamp(v + dt/tau (x - v), v_min, v_max)``,
    ``z = H(h - v_threshold)``, soft reset."""

    dt: float = 1.0

    state = ("v",)
    params = {"tau": Param(2.0, "time", positive=True), "v_threshold": Param(1.0, "potential"),
              "v_min": Param(-0.5, "potential"), "v_max": Param(1.5, "potential")}

    def step(self, x, s, p, fire):
        h = torch.clamp(s[0] + self.dt / p.tau * (x - s[0]), p.v_min, p.v_max)
        z = fire(h - p.v_threshold)
        return z, (h - p.v_threshold * z,)


@dataclass(frozen=True)
class ReluAdaptiveLIF(NeuronSpec):
    """Adaptive threshold driven by the depolarisation: ``h = v + dt/tau (x - v)``,
    ``z = H(h - v_threshold - a)``, hard reset to 0, ``a = a + dt/tau_a (beta relu(h) - a)``."""

    dt: float = 1.0

    state = ("v", "a")
    params = {"tau": Param(2.0, "time", positive=True), "tau_a": Param(5.0, "time", positive=True),
              "v_threshold": Param(1.0, "potential"), "beta": Param(0.5)}

    def step(self, x, s, p, fire):
        v, a = s
        h = v + self.dt / p.tau * (x - v)
        z = fire(h - (p.v_threshold + a))
        a = a + self.dt / p.tau_a * (p.beta * torch.relu(h) - a)
        return z, (h * (1.0 - z), a)


@dataclass(frozen=True)
class GatedLIF(NeuronSpec):
    """A LIF whose input only opens a gate: ``h = v + dt/tau (1 - v)`` where ``x > x_gate``,
    else ``v - dt/tau v``; ``z = H(h - v_threshold)``, soft reset. x reaches the state's gradient
    through a comparison only (the fused backward keeps that boolean, not x: csource.kept)."""

    dt: float = 1.0

    state = ("v",)
    params = {"tau": Param(2.0, "time", positive=True), "v_threshold": Param(0.6, "potential"),
              "x_gate": Param(0.5, "current")}

    def step(self, x, s, p, fire):
        v = s[0]
        h = torch.where(x > p.x_gate, v + self.dt / p.tau * (1.0 - v), v - self.dt / p.tau * v)
        z = fire(h - p.v_threshold)
        return z, (h - p.v_threshold * z,)


@dataclass(frozen=True)
class ExpGatedLIF(NeuronSpec):
    """Two exponentials on parallel chains and a gate between them: ``h = exp(exp(x) / 4 - 1)``
    where ``exp(v) > gate``, else ``v + x``; ``z = H(h - v_threshold)``, soft reset. Enough arithmetic that
    the fused forward step runs as two loops, and the cut carrying the fewest values carries the gate,
    a truth value (csource._staged)."""

    state = ("v",)
    params = {"v_threshold": Param(1.0, "potential"), "gate": Param(1.5, "potential")}

    def step(self, x, s, p, fire):
        v = s[0]
        h = torch.where(torch.exp(v) > p.gate, torch.exp(torch.exp(x) * 0.5 * 0.5 - 1.0), v + x)
        z = fire(h - p.v_threshold)
        return z, (h - p.v_threshold * z,)


CUSTOM_NEURONS = {cls.__name__: cls for cls in (RefractoryLIF, BoundedLIF, ReluAdaptiveLIF, GatedLIF, ExpGatedLIF)}


# One step per supported op: u = OPS[op](x, w) with x the input and w a parameter (0.5 by
# default); positive arguments where the op needs them (log, sqrt, rsqrt, pow). Boundary
# values of x (0, +-1, 0.5 = w) are where the derivative conventions show.
def _pos(x):
    return 1.0 + x * x


OPS = {
    "add": lambda x, w: x + w, "sub": lambda x, w: x - w, "mul": lambda x, w: x * w, "div": lambda x, w: x / w,
    "neg": lambda x, w: -x, "reciprocal": lambda x, w: torch.reciprocal(_pos(x)),
    "pow": lambda x, w: _pos(x) ** 1.5 + x ** 2,
    "exp": lambda x, w: torch.exp(x), "log": lambda x, w: torch.log(_pos(x)), "sqrt": lambda x, w: torch.sqrt(_pos(x)),
    "rsqrt": lambda x, w: torch.rsqrt(_pos(x)), "tanh": lambda x, w: torch.tanh(x),
    "sigmoid": lambda x, w: torch.sigmoid(x), "atan": lambda x, w: torch.atan(x), "erf": lambda x, w: torch.erf(x),
    "abs": lambda x, w: torch.abs(x), "sign": lambda x, w: x * torch.sign(x - w),
    "floor": lambda x, w: x + torch.floor(4.0 * x) * w,
    "sgn": lambda x, w: x * torch.sgn(x), "relu": lambda x, w: torch.relu(x - w) + nnf.relu(x),
    "heaviside": lambda x, w: x * torch.heaviside((x - w).detach(), torch.full_like(x, 0.25)),
    "clamp": lambda x, w: torch.clamp(x, -1.0, 1.0) + torch.clamp(x, min=-w, max=w),
    "clamp_min": lambda x, w: torch.clamp_min(x, 0.0) + x.clamp_min(w),
    "clamp_max": lambda x, w: torch.clamp_max(x, 1.0) + x.clamp_max(w),
    "maximum": lambda x, w: torch.maximum(x, w), "minimum": lambda x, w: torch.minimum(x, w * x),
    "hardtanh": lambda x, w: nnf.hardtanh(x), "leaky_relu": lambda x, w: nnf.leaky_relu(x, 0.1),
    "where": lambda x, w: torch.where(x > w, x, 0.0) + torch.where(x < 0, 1.0, w * x),
    "masked_fill": lambda x, w: x.masked_fill(x > 1.0, 0.5) + (x * w).masked_fill(x < 0, -1.0),
    "lt": lambda x, w: x * (x < w), "le": lambda x, w: x * (x <= w), "gt": lambda x, w: x * (x > w),
    "ge": lambda x, w: x * (x >= w), "eq": lambda x, w: x * (x == w), "ne": lambda x, w: x * (x != 0),
    "isnan": lambda x, w: torch.where(torch.isnan(torch.sqrt(x)), w, x),
    "logical_and": lambda x, w: x * torch.logical_and(x > 0, x < 1), "logical_or": lambda x, w: x * ((x < 0) | (x > 1)),
    "logical_xor": lambda x, w: x * torch.logical_xor(x > 0, x > w), "logical_not": lambda x, w: x * ~(x > w),
    "zeros_like": lambda x, w: x + torch.zeros_like(x), "ones_like": lambda x, w: x * torch.ones_like(x),
    "full_like": lambda x, w: x * torch.full_like(x, 0.25), "detach": lambda x, w: x * x.detach(),
    "to": lambda x, w: x * (x > w).to(x.dtype) + (x < 0).float().to(x.dtype) + x * (x * w).to(torch.bool),
}


@dataclass(frozen=True)
class OpLIF(NeuronSpec):
    """A LIF driven by ``OPS[op](x, w)``: ``h = v + (u - v) / tau``, ``z = H(h - 1)``, hard reset to 0."""

    op: str = "add"

    state = ("v",)
    params = {"tau": Param(2.0, "time", positive=True), "w": Param(0.5)}

    def step(self, x, s, p, fire):
        h = s[0] + (OPS[self.op](x, p.w) - s[0]) / p.tau
        z = fire(h - 1.0)
        return z, (h * (1.0 - z),)
