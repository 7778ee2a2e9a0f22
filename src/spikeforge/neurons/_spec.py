"""The neuron definition: one frozen dataclass per model, and the registry.

A spec holds the model's *options* (dataclass fields: Enums, bools, ``dt``), names its
*state* variables and its *parameters* (with defaults and units), and defines one pure
single-step update ``step(x, s, p, fire) -> (z, s')`` written with elementwise torch
operations: charge, fire (``fire(v - threshold)``), reset. Everything else — modules,
the functional form, the reference scan and the fused kernels — is derived from it.
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass, fields
from typing import Callable, ClassVar, NamedTuple

from torch import Tensor

__all__ = ["NeuronSpec", "FireReset", "Param", "Reset", "register_neuron", "REGISTRY", "reset_membrane",
           "THRESHOLD_PARAMS"]


class Reset(enum.Enum):
    """What happens to the membrane after a spike."""

    HARD = "hard"      # v <- v_reset
    SOFT = "soft"      # v <- v - v_threshold (reset by subtraction)
    NONE = "none"      # no reset


class Param(NamedTuple):
    """A parameter's default, unit and constraint.

    ``positive`` parameters (time constants) must be > 0; ``learnable`` says whether a
    module makes it an ``nn.Parameter`` unless told otherwise (``learn_<name>=``).
    """

    default: float
    unit: str = ""
    positive: bool = False
    learnable: bool = False


REGISTRY: dict[str, type["NeuronSpec"]] = {}


def register_neuron(cls: type["NeuronSpec"]) -> type["NeuronSpec"]:
    """Class decorator: add a spec to the registry (tests and modules iterate over it)."""
    if cls.__name__ in REGISTRY:
        raise ValueError(f"a neuron named {cls.__name__!r} is already registered")
    if not cls.state or not isinstance(cls.params, dict):
        raise TypeError(f"{cls.__name__}: a NeuronSpec needs a non-empty 'state' tuple and a 'params' dict")
    REGISTRY[cls.__name__] = cls
    return cls


@dataclass(frozen=True)
class NeuronSpec:
    """Base of all neuron definitions (see module docstring)."""

    state: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[dict[str, Param]] = {}
    spiking: ClassVar[bool] = True

    def __post_init__(self) -> None:
        for f in fields(self):
            _check_option(type(self).__name__, f.name, getattr(self, f.name), f.default)
            if isinstance(f.default, float):  # dt=1 and dt=1.0 give the same key()
                object.__setattr__(self, f.name, float(getattr(self, f.name)))

    def step(self, x: Tensor, s: tuple, p: tuple, fire: Callable[[Tensor], Tensor]) -> tuple[Tensor, tuple]:
        raise NotImplementedError

    def rest(self, p: tuple) -> tuple:
        """State at rest, as tensors or floats broadcastable to the neuron shape."""
        return tuple(0.0 for _ in self.state)

    # -- derived helpers -------------------------------------------------------------
    @classmethod
    def options(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    @classmethod
    def State(cls) -> type:
        return _named(cls.__name__ + "State", cls.state)

    @classmethod
    def Params(cls) -> type:
        return _named(cls.__name__ + "Params", tuple(cls.params))

    def key(self) -> str:
        """A stable text identifying the spec and its options (for kernel caching)."""
        opts = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({opts})"


def _check_option(owner: str, name: str, value, default) -> None:
    """An option must have its default's type (an Enum member, a bool, a finite number; ``dt`` > 0)."""
    if isinstance(default, (enum.Enum, bool)):
        if not isinstance(value, type(default)):
            kind = " or ".join(str(m) for m in type(default)) if isinstance(default, enum.Enum) else "True or False"
            raise TypeError(f"{owner}: option {name} must be {kind}, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: option {name} must be a number, got {value!r}")
        if not math.isfinite(value) or (name == "dt" and value <= 0):
            raise ValueError(f"{owner}: option {name} must be finite{' and > 0' if name == 'dt' else ''}, "
                             f"got {value!r}")


_NAMED: dict[tuple, type] = {}


def _named(name: str, names: tuple[str, ...]) -> type:
    key = (name, names)
    if key not in _NAMED:
        from collections import namedtuple

        _NAMED[key] = namedtuple(name, names)
    return _NAMED[key]


def reset_membrane(h: Tensor, z: Tensor, v_threshold, v_reset, mode: Reset, detach: bool) -> Tensor:
    """Apply ``mode`` to the pre-reset membrane ``h`` given spikes ``z``."""
    if detach:
        z = z.detach()
    if mode is Reset.HARD:
        return h * (1.0 - z) + v_reset * z
    if mode is Reset.SOFT:
        return h - v_threshold * z
    return h


THRESHOLD_PARAMS = {"v_threshold": Param(1.0, "potential"), "v_reset": Param(0.0, "potential")}


@dataclass(frozen=True)
class FireReset(NeuronSpec):
    """Options and the fire-then-reset tail shared by the integrate-and-fire models:
    ``z = H(h - b)`` with ``b = v_threshold`` unless given, then ``reset`` (see
    ``reset_membrane``; SOFT subtracts ``b``)."""

    reset: Reset = Reset.HARD
    detach_reset: bool = False
    dt: float = 1.0

    def fire_reset(self, h: Tensor, p: tuple, fire: Callable[[Tensor], Tensor], b=None) -> tuple[Tensor, Tensor]:
        b = p.v_threshold if b is None else b
        z = fire(h - b)
        return z, reset_membrane(h, z, b, p.v_reset, self.reset, self.detach_reset)
