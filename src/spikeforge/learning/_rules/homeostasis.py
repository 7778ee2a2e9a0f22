"""Homeostasis by adaptive thresholds (Diehl & Cook 2015), applied by ``Learner.apply``.

Each learned layer's post neurons keep an offset ``theta`` (one per neuron, per output
channel for a Conv2d) on top of the threshold they had when attached:
``threshold = base + theta``. Between two ``apply`` calls the learner counts each neuron's
spikes ``n`` (summed over time and batch) and the time steps ``k`` it ran; ``apply`` then sets

``theta <- theta * exp(-k * dt / tau_theta) + theta_plus * n``

and writes ``base + theta`` into the neuron layer's parameter ``param`` (a per-neuron
tensor from then on). A neuron that fires a lot becomes harder to excite, so in a
competitive layer every neuron gets its share of the inputs. Diehl & Cook raise
``theta`` at every spike; here it moves once per ``apply`` (per sample or per batch),
which is the same to first order when ``theta_plus`` is small next to the threshold.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

__all__ = ["AdaptiveThreshold"]


@dataclass(frozen=True)
class AdaptiveThreshold:
    """``theta_plus`` (>= 0, potential per spike), ``tau_theta`` (> 0, the decay time
    constant in the unit of ``dt``; ``math.inf`` = no decay), ``param``: the neuron
    parameter that holds the threshold (``"v_threshold"``)."""

    theta_plus: float = 0.05
    tau_theta: float = 1e7
    dt: float = 1.0
    param: str = "v_threshold"

    def __post_init__(self) -> None:
        for name, lo, finite in (("theta_plus", 0.0, True), ("tau_theta", None, False), ("dt", None, True)):
            v = getattr(self, name)
            ok = isinstance(v, (int, float)) and not isinstance(v, bool) and not math.isnan(v)
            ok = ok and (math.isfinite(v) or not finite) and (v >= lo if lo is not None else v > 0)
            if not ok:
                kind = "a non-negative finite" if lo is not None else ("a positive finite" if finite else "a positive")
                raise ValueError(f"AdaptiveThreshold: {name} must be {kind} number, got {v!r}")
        if not isinstance(self.param, str) or not self.param:
            raise TypeError(f"AdaptiveThreshold: param must be the name of a neuron parameter, got {self.param!r}")

    def check(self, neuron: nn.Module, name: str) -> None:
        if self.param not in neuron.spec_type.params:
            raise ValueError(f"homeostasis: layer {name!r} ({type(neuron).__name__}) has no parameter {self.param!r}; "
                             f"its parameters: {tuple(neuron.spec_type.params)}")

    def update(self, theta: Tensor, counts: Tensor, steps: int) -> Tensor:
        """``theta * exp(-steps * dt / tau_theta) + theta_plus * counts`` (a new tensor)."""
        return theta * math.exp(-steps * self.dt / self.tau_theta) + self.theta_plus * counts

    def set_threshold(self, neuron: nn.Module, base: Tensor, theta: Tensor, feature_dims: int) -> None:
        """Write ``base + theta`` (``theta`` per neuron, shaped for a Linear's ``(out,)`` or a
        Conv2d's ``(C, 1, 1)`` features) into ``neuron.<param>`` under ``torch.no_grad()``."""
        shaped = theta.view(theta.shape + (1,) * (feature_dims - 1))
        with torch.no_grad():
            new = (base.to(shaped) + shaped).to(base.dtype)
            current = getattr(neuron, self.param)
            if current.shape == new.shape:
                current.copy_(new)
            elif isinstance(current, nn.Parameter):
                raise ValueError(f"homeostasis: the learnable {self.param} of {type(neuron).__name__} has shape "
                                 f"{tuple(current.shape)}; give it one value per neuron {tuple(new.shape)}")
            else:
                setattr(neuron, self.param, new)
