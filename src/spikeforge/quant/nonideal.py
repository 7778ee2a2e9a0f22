"""Device non-idealities of analog (memristive) crossbars as seeded weight transforms.

Each non-ideality is a frozen dataclass; ``chain(a, b, ...)`` composes them in order, and
``apply(model, transform, seed=...)`` puts them on the weight of every ``nn.Linear`` of a
model (or the ones named in ``layers``) for as long as the returned handle lives (a context
manager; ``remove()`` ends it)::

    noisy = nonideal.chain(nonideal.Quantize(16), nonideal.Variation(0.1), nonideal.ReadNoise(0.02))
    with nonideal.apply(model, noisy, seed=0):
        loss = loss_fn(model(x), y)      # training (gradients reach the float weights) or evaluation
        loss.backward()

The model: a weight is one device's conductance G, its sign set by the pair of devices it is
routed to; the layer's largest ``|w|`` (seen by the transform, without gradient) is the top of
the conductance range, ``G_max``. Per layer, a ``torch.Generator`` seeded from ``seed`` and the
layer's position among the model's ``Linear`` s draws the fixed device-to-device quantities
once (variation factors, drift exponents, stuck cells) when the transform is applied, and the
cycle-to-cycle read noise afresh at every forward pass: the same seed gives the same numbers,
call after call. Gradients: straight-through over quantisation; the others are smooth (a
factor, an added constant) and differentiate as they are; a stuck cell has no gradient.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

__all__ = ["Transform", "Quantize", "Variation", "ReadNoise", "Drift", "StuckAt", "IRDrop", "Chain", "chain",
           "apply", "NonIdeal", "Devices"]


def _number(owner: str, name: str, value, lo: float = 0.0, hi: float = math.inf, hi_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
    if not ok or value < lo or value > hi or (hi_open and value == hi):
        rng = f"[{lo:g}, {hi:g}{')' if hi_open else ']'}" if math.isfinite(hi) else f">= {lo:g}"
        raise ValueError(f"{owner}: {name} must be a finite number in {rng}, got {value!r}")


def g_max(w: Tensor) -> Tensor:
    """The top of the layer's conductance range: its largest ``|w|`` (no gradient; 1 if all 0)."""
    m = w.detach().abs().amax()
    return torch.where(m > 0, m, torch.ones_like(m))


class Transform:
    """A non-ideality: ``draw(shape, g)`` makes its fixed per-device quantities (a dict of
    tensors, drawn once per seed), ``__call__(w, fixed, g)`` transforms a weight, drawing any
    per-call noise from ``g``."""

    def draw(self, shape: torch.Size, g: torch.Generator) -> dict[str, Tensor]:
        return {}

    def __call__(self, w: Tensor, fixed: dict[str, Tensor], g: torch.Generator) -> Tensor:
        raise NotImplementedError


@dataclass(frozen=True)
class Quantize(Transform):
    """Conductance quantisation: ``|w|`` rounded to one of ``levels`` equally spaced conductances
    in ``[0, G_max]`` (0 included), straight-through in the backward pass."""

    levels: int

    def __post_init__(self):
        if not isinstance(self.levels, int) or isinstance(self.levels, bool) or self.levels < 2:
            raise ValueError(f"Quantize: levels must be an integer >= 2, got {self.levels!r}")

    def __call__(self, w, fixed, g):
        step = g_max(w) / (self.levels - 1)
        q = torch.sign(w) * torch.round(w.abs() / step) * step
        return w + (q - w).detach()


@dataclass(frozen=True)
class Variation(Transform):
    """Device-to-device variation: ``w * exp(sigma * n)``, ``n ~ N(0, 1)`` per device, fixed per
    seed (a lognormal factor of median 1)."""

    sigma: float

    def __post_init__(self):
        _number("Variation", "sigma", self.sigma)

    def draw(self, shape, g):
        return {"factor": torch.exp(self.sigma * torch.randn(shape, generator=g, dtype=torch.float64))}

    def __call__(self, w, fixed, g):
        return w * fixed["factor"].to(w.dtype)


@dataclass(frozen=True)
class ReadNoise(Transform):
    """Cycle-to-cycle read noise: ``w + sigma * G_max * n``, ``n ~ N(0, 1)`` drawn afresh at
    every forward pass (from the layer's seeded generator)."""

    sigma: float

    def __post_init__(self):
        _number("ReadNoise", "sigma", self.sigma)

    def __call__(self, w, fixed, g):
        n = torch.randn(w.shape, generator=g, dtype=torch.float64).to(w.device, w.dtype)
        return w + self.sigma * g_max(w) * n


@dataclass(frozen=True)
class Drift(Transform):
    """Power-law conductance drift at time ``t`` after programming (PCM-style):
    ``G(t) = G0 (t / t0)^-nu``, with each device's ``nu ~ N(nu, nu_std)`` fixed per seed."""

    t: float
    nu: float = 0.05
    t0: float = 1.0
    nu_std: float = 0.0

    def __post_init__(self):
        _number("Drift", "t0", self.t0, lo=0.0)
        if self.t0 == 0:
            raise ValueError("Drift: t0 must be > 0, got 0")
        _number("Drift", "t", self.t, lo=self.t0)
        _number("Drift", "nu", self.nu, lo=-math.inf)
        _number("Drift", "nu_std", self.nu_std)

    def draw(self, shape, g):
        return {"nu": self.nu + self.nu_std * torch.randn(shape, generator=g, dtype=torch.float64)}

    def __call__(self, w, fixed, g):
        return w * (self.t / self.t0) ** (-fixed["nu"].to(w.dtype))


@dataclass(frozen=True)
class StuckAt(Transform):
    """Stuck-at faults, fixed per seed: a fraction ``p_zero`` of the devices reads 0 and a
    fraction ``p_max`` reads ``G_max`` (with the weight's sign; + for a zero weight)."""

    p_zero: float = 0.0
    p_max: float = 0.0

    def __post_init__(self):
        _number("StuckAt", "p_zero", self.p_zero, hi=1.0)
        _number("StuckAt", "p_max", self.p_max, hi=1.0)
        if self.p_zero + self.p_max > 1.0:
            raise ValueError(f"StuckAt: p_zero + p_max must be <= 1, got {self.p_zero} + {self.p_max}")

    def draw(self, shape, g):
        u = torch.rand(shape, generator=g, dtype=torch.float64)
        return {"zero": u < self.p_zero, "max": (u >= self.p_zero) & (u < self.p_zero + self.p_max)}

    def __call__(self, w, fixed, g):
        top = torch.where(w >= 0, 1.0, -1.0).to(w.dtype) * g_max(w)
        w = torch.where(fixed["max"].to(w.device), top, w)
        return torch.where(fixed["zero"].to(w.device), torch.zeros_like(w), w)


@dataclass(frozen=True)
class IRDrop(Transform):
    """A simplified IR drop: inputs drive the crossbar's rows (``in`` index j), outputs are read
    on its columns (``out`` index i), and the wire resistance attenuates a cell the more the
    farther it is from both drivers: ``w_ij * (1 - alpha * (j / (in - 1) + i / (out - 1)) / 2)``
    (the far corner by ``alpha``, the near one not at all)."""

    alpha: float

    def __post_init__(self):
        _number("IRDrop", "alpha", self.alpha, hi=1.0, hi_open=True)

    def __call__(self, w, fixed, g):
        if w.dim() != 2:
            raise ValueError(f"IRDrop: expects a 2-D (out, in) weight, got shape {tuple(w.shape)}")
        n_out, n_in = w.shape
        col = torch.arange(n_out, dtype=w.dtype, device=w.device) / max(n_out - 1, 1)
        row = torch.arange(n_in, dtype=w.dtype, device=w.device) / max(n_in - 1, 1)
        return w * (1.0 - self.alpha * (col[:, None] + row[None, :]) / 2)


@dataclass(frozen=True)
class Chain(Transform):
    """Transforms applied in order (see ``chain``)."""

    parts: tuple = field(default=())

    def __post_init__(self):
        bad = [type(p).__name__ for p in self.parts if not isinstance(p, Transform)]
        if bad:
            raise TypeError(f"chain: every part must be a nonideal Transform, got {bad}")

    def draw(self, shape, g):
        return {f"{k}.{name}": t for k, part in enumerate(self.parts) for name, t in part.draw(shape, g).items()}

    def __call__(self, w, fixed, g):
        for k, part in enumerate(self.parts):
            mine = {name[len(f"{k}."):]: t for name, t in fixed.items() if name.startswith(f"{k}.")}
            w = part(w, mine, g)
        return w


def chain(*parts: Transform) -> Chain:
    """``parts`` one after another, e.g. programming (``Quantize``, ``StuckAt``, ``Variation``),
    then time (``Drift``), then reading (``ReadNoise``, ``IRDrop``)."""
    return Chain(tuple(parts))


class Devices(nn.Module):
    """``transform`` bound to one weight: its fixed draws (buffers, so they follow ``.to()``)
    and the generator of its per-call noise, seeded by ``seed``. ``devices(w)`` transforms ``w``."""

    def __init__(self, transform: Transform, weight: Tensor, seed: int) -> None:
        super().__init__()
        if not isinstance(transform, Transform):
            raise TypeError(f"transform must be a nonideal Transform (or chain(...)), got {type(transform).__name__}")
        self.transform, self.seed = transform, int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self._names = []
        for k, (name, t) in enumerate(transform.draw(weight.shape, self.generator).items()):
            self.register_buffer(f"fixed{k}", t.to(weight.device))
            self._names.append(name)

    def forward(self, w: Tensor) -> Tensor:
        fixed = {name: getattr(self, f"fixed{k}") for k, name in enumerate(self._names)}
        return self.transform(w, fixed, self.generator)


class NonIdeal:
    """What ``apply`` returns: the ``Devices`` put on each chosen layer (``devices[name]``);
    ``remove()`` (or leaving the ``with`` block) restores the plain weights."""

    def __init__(self, model: nn.Module, transform: Transform, seed: int, layers) -> None:
        if not isinstance(model, nn.Module):
            raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}")
        if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
            raise ValueError(f"seed must be an integer >= 0, got {seed!r}")
        linears = [(n or "model", m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise ValueError(f"model has no nn.Linear layer to apply non-idealities to ({type(model).__name__})")
        names = dict(linears)
        chosen = list(names) if layers is None else list(layers)
        unknown = [n for n in chosen if n not in names]
        if unknown:
            raise ValueError(f"layers: {unknown} are not nn.Linear layers of the model; its Linear layers: "
                             f"{list(names)}")
        self.devices: dict[str, Devices] = {}
        for k, (name, m) in enumerate(linears):   # the seed follows the layer's place among all Linears
            if name in chosen:
                d = Devices(transform, m.weight, seed * 1_000_003 + k)
                parametrize.register_parametrization(m, "weight", d)
                self.devices[name] = d
        self._modules = {name: names[name] for name in self.devices}

    def remove(self) -> None:
        for name, m in self._modules.items():
            plist = m.parametrizations["weight"]
            if len(plist) > 1:   # other parametrizations stay
                del plist[[p is self.devices[name] for p in plist].index(True)]
            else:
                parametrize.remove_parametrizations(m, "weight", leave_parametrized=False)
        self._modules = {}

    def __enter__(self) -> "NonIdeal":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


def apply(model: nn.Module, transform: Transform | Iterable[Transform], *, seed: int = 0,
          layers: Iterable[str] | None = None) -> NonIdeal:
    """Put ``transform`` (or the chain of a sequence of them) on the weight of every
    ``nn.Linear`` of ``model`` (or those named in ``layers``), seeded by ``seed``."""
    if not isinstance(transform, Transform):
        transform = chain(*transform) if isinstance(transform, (list, tuple)) else transform
    return NonIdeal(model, transform, seed, layers)
