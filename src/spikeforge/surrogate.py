"""Spike functions and their surrogate derivatives.

Every surrogate is a frozen dataclass with a sharpness ``alpha`` and one method,
``grad(x)``: the derivative used in place of the Heaviside step's Dirac delta, where
``x = v - v_threshold``. The forward pass is always the Heaviside step ``x >= 0``.

``grad`` is written with elementwise torch operations only, so the same definition
runs on the reference path and is traced into the fused kernels (see
``spikeforge.kernels``). A user-supplied surrogate is any ``Surrogate`` subclass, or
``Custom(fn)`` with ``fn(x, alpha)`` returning the derivative.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import Tensor

__all__ = [
    "Surrogate", "StraightThrough", "Sigmoid", "ATan", "FastSigmoid", "SuperSpike",
    "Triangle", "Erf", "PiecewiseQuadratic", "Gaussian", "Custom", "spike", "BUILTIN",
]


@dataclass(frozen=True)
class Surrogate:
    """Base class: Heaviside forward, ``grad(x)`` backward."""

    alpha: float = 1.0

    def __post_init__(self) -> None:
        a = self.alpha
        if isinstance(a, bool) or not isinstance(a, (int, float)) or not math.isfinite(a) or a <= 0:
            raise ValueError(f"{type(self).__name__}: alpha must be a positive finite number, got {self.alpha!r}")

    def grad(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    @property
    def support(self) -> float | None:
        """Half-width ``w`` of the bounded support: ``grad(x) == 0`` wherever ``|x| >= w``;
        ``None`` where the derivative is nonzero everywhere (the sparse backward then needs a
        cut-off, see ``spikeforge.kernels.sparse_backward``)."""
        return None

    def __call__(self, x: Tensor) -> Tensor:
        return spike(x, self)


@dataclass(frozen=True)
class StraightThrough(Surrogate):
    """Straight-through estimator: ``g(x) = alpha`` (the step's gradient is passed on, scaled)."""

    alpha: float = 1.0

    def grad(self, x: Tensor) -> Tensor:
        return torch.full_like(x, self.alpha)


@dataclass(frozen=True)
class Sigmoid(Surrogate):
    """``g(x) = alpha * s(alpha x) * s(-alpha x)`` with the logistic ``s``
    (= ``alpha * s * (1 - s)``, written so that the tails keep their precision)."""

    alpha: float = 4.0

    def grad(self, x: Tensor) -> Tensor:
        y = self.alpha * x
        return self.alpha * torch.sigmoid(y) * torch.sigmoid(-y)


@dataclass(frozen=True)
class ATan(Surrogate):
    """``g(x) = alpha / 2 / (1 + (pi/2 * alpha * x)^2)``."""

    alpha: float = 2.0

    def grad(self, x: Tensor) -> Tensor:
        y = (math.pi / 2 * self.alpha) * x
        return (self.alpha / 2) / (1.0 + y * y)


@dataclass(frozen=True)
class FastSigmoid(Surrogate):
    """SuperSpike (Zenke & Ganguli 2018): ``g(x) = 1 / (1 + alpha * |x|)^2``."""

    alpha: float = 25.0

    def grad(self, x: Tensor) -> Tensor:
        d = 1.0 + self.alpha * torch.abs(x)
        return 1.0 / (d * d)


SuperSpike = FastSigmoid


@dataclass(frozen=True)
class Triangle(Surrogate):
    """``g(x) = alpha * max(0, 1 - alpha * |x|)``."""

    alpha: float = 1.0

    def grad(self, x: Tensor) -> Tensor:
        return self.alpha * torch.clamp(1.0 - self.alpha * torch.abs(x), min=0.0)

    @property
    def support(self) -> float:
        return 1.0 / self.alpha


@dataclass(frozen=True)
class Erf(Surrogate):
    """Derivative of ``erfc(-alpha x) / 2``: ``g(x) = alpha / sqrt(pi) * exp(-(alpha x)^2)``."""

    alpha: float = 2.0

    def grad(self, x: Tensor) -> Tensor:
        y = self.alpha * x
        return (self.alpha / math.sqrt(math.pi)) * torch.exp(-(y * y))


@dataclass(frozen=True)
class PiecewiseQuadratic(Surrogate):
    """``g(x) = alpha - alpha^2 |x|`` for ``|x| <= 1/alpha``, else 0 (Esser et al. 2016)."""

    alpha: float = 1.0

    def grad(self, x: Tensor) -> Tensor:
        a = torch.abs(x)
        return torch.where(a <= 1.0 / self.alpha, self.alpha - self.alpha * self.alpha * a, torch.zeros_like(x))

    @property
    def support(self) -> float:
        return 1.0 / self.alpha


@dataclass(frozen=True)
class Gaussian(Surrogate):
    """Normal density with standard deviation ``1/alpha``: ``alpha/sqrt(2 pi) exp(-(alpha x)^2 / 2)``."""

    alpha: float = 2.0

    def grad(self, x: Tensor) -> Tensor:
        y = self.alpha * x
        return (self.alpha / math.sqrt(2 * math.pi)) * torch.exp(-0.5 * (y * y))


@dataclass(frozen=True)
class Custom(Surrogate):
    """A user-supplied derivative ``fn(x, alpha) -> Tensor`` (elementwise torch ops).

    Fused kernels trace ``fn``; an op the kernel printers do not know is reported by
    name and that neuron runs on the reference backend.
    """

    fn: Callable[[Tensor, float], Tensor] | None = None
    alpha: float = field(default=1.0, kw_only=True)  # keyword-only, so ``Custom(fn)`` binds fn

    def __post_init__(self) -> None:
        super().__post_init__()
        if not callable(self.fn):
            raise TypeError(f"Custom: fn must be a callable fn(x, alpha) -> Tensor, got {self.fn!r}")

    def grad(self, x: Tensor) -> Tensor:
        return self.fn(x, self.alpha)


BUILTIN: tuple[type[Surrogate], ...] = (
    StraightThrough, Sigmoid, ATan, FastSigmoid, Triangle, Erf, PiecewiseQuadratic, Gaussian,
)


class _Spike(torch.autograd.Function):
    generate_vmap_rule = True  # elementwise, so torch.func.vmap can batch it

    @staticmethod
    def forward(x: Tensor, surrogate: Surrogate) -> Tensor:
        return (x >= 0).to(x.dtype)

    @staticmethod
    def setup_context(ctx, inputs, output) -> None:
        ctx.save_for_backward(inputs[0])
        ctx.surrogate = inputs[1]

    @staticmethod
    def backward(ctx, grad_out: Tensor):
        (x,) = ctx.saved_tensors
        return grad_out * ctx.surrogate.grad(x), None


def spike(x: Tensor, surrogate: Surrogate) -> Tensor:
    """Heaviside step ``(x >= 0)`` whose backward is ``grad_out * surrogate.grad(x)``."""
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {type(surrogate).__name__}")
    return _Spike.apply(x, surrogate)
