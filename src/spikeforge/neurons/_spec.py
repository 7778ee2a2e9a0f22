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
from collections import namedtuple
from dataclasses import dataclass, fields
from typing import Callable, ClassVar, NamedTuple

from torch import Tensor

__all__ = ["NeuronSpec", "FireReset", "Param", "Reset", "register_neuron", "REGISTRY", "reset_membrane",
           "THRESHOLD_PARAMS", "NotExpressible"]


class Reset(enum.Enum):
    """What happens to the membrane after a spike."""

    HARD = "hard"      # v <- v_reset
    SOFT = "soft"      # v <- v - v_threshold (reset by subtraction)
    NONE = "none"      # no reset


class NotExpressible(ValueError):
    """A neuron (or one of its options or fields) that a target such as NIR cannot express;
    ``field`` names what is in the way."""

    def __init__(self, neuron: str, field: str, why: str) -> None:
        super().__init__(f"{neuron}: {field}: {why}")
        self.neuron, self.field, self.why = neuron, field, why


class Param(NamedTuple):
    """A parameter's default, unit and constraint.

    ``positive`` parameters (time constants) must be > 0; ``learnable`` says whether a
    module makes it an ``nn.Parameter`` unless told otherwise (``learn_<name>=``); ``low`` /
    ``high`` bound the values, inclusive (hardware registers: a value outside is refused, never
    clamped).
    """

    default: float
    unit: str = ""
    positive: bool = False
    learnable: bool = False
    low: float | None = None
    high: float | None = None

    def bounds(self) -> str:
        """``low`` and ``high`` as ``[low, high]`` (``...`` for no bound)."""
        return "[" + ", ".join("..." if b is None else f"{b:g}" for b in (self.low, self.high)) + "]"


REGISTRY: dict[str, type["NeuronSpec"]] = {}
#: called with each newly registered spec (the module classes and functional shortcuts are
#: derived this way, so a neuron registered later gets them too)
ON_REGISTER: list[Callable[[type["NeuronSpec"]], None]] = []


def register_neuron(cls: type["NeuronSpec"]) -> type["NeuronSpec"]:
    """Class decorator: add a spec to the registry (tests and modules iterate over it).

    Registering a name again replaces the old spec when the new one is a re-run of the same
    definition (same module and qualified name, as when a notebook cell runs twice); a
    different class under a registered name is an error."""
    if not (isinstance(cls, type) and issubclass(cls, NeuronSpec)):
        raise TypeError(f"register_neuron decorates a NeuronSpec subclass, got {cls!r}")
    if not cls.state or not isinstance(cls.params, dict):
        raise TypeError(f"{cls.__name__}: a NeuronSpec needs a non-empty 'state' tuple and a 'params' dict")
    old = REGISTRY.get(cls.__name__)
    if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
        raise ValueError(f"a neuron named {cls.__name__!r} is already registered (from {old.__module__}); "
                         f"give {cls.__module__}.{cls.__qualname__} another name")
    REGISTRY[cls.__name__] = cls
    try:
        for fn in ON_REGISTER:
            fn(cls)
    except Exception:
        if old is None:
            del REGISTRY[cls.__name__]
        else:
            REGISTRY[cls.__name__] = old
        raise
    return cls


@dataclass(frozen=True)
class NeuronSpec:
    """Base of all neuron definitions (see module docstring)."""

    state: ClassVar[tuple[str, ...]] = ()
    params: ClassVar[dict[str, Param]] = {}
    spiking: ClassVar[bool] = True
    #: named tuples of the state variables and of the parameters, made for each subclass
    #: (``LIF.State(v=...)``); importable as ``<module>.<Spec>.State``, so they pickle
    State: ClassVar[type] = tuple
    Params: ClassVar[type] = tuple

    def __init_subclass__(cls, **kw) -> None:
        super().__init_subclass__(**kw)
        cls.State = _named(cls, "State", tuple(cls.state))
        cls.Params = _named(cls, "Params", tuple(cls.params))

    def __post_init__(self) -> None:
        for f in fields(self):
            value = _check_option(type(self).__name__, f.name, getattr(self, f.name), f.default)
            object.__setattr__(self, f.name, value)

    def step(self, x: Tensor, s: tuple, p: tuple, fire: Callable[[Tensor], Tensor]) -> tuple[Tensor, tuple]:
        raise NotImplementedError

    def rest(self, p: tuple) -> tuple:
        """State at rest, as tensors or floats broadcastable to the neuron shape."""
        return tuple(0.0 for _ in self.state)

    # -- the continuous-time face (NIR, exact gradients) ----------------------------------
    #: NIR node types this spec reads (``from_nir``); empty: none
    nir_types: ClassVar[tuple[str, ...]] = ()

    def derivative(self, x: Tensor, s: tuple, p: tuple) -> tuple:
        """The sub-threshold dynamics ``ds/dt`` per unit of time (the unit of ``dt``), one
        entry per state variable. ``step`` is its Euler step with ``dt`` (explicit, or
        sequential where a spec says so in ``euler``), followed by fire and reset."""
        raise NotImplementedError(f"{type(self).__name__} declares no continuous-time form")

    #: "explicit": all states advance from the old state; "sequential": each state variable
    #: advances using the already advanced ones before it (e.g. CubaLIF's current, then v)
    euler: ClassVar[str] = "explicit"

    def to_nir(self, p: dict, scale: float) -> tuple[str, dict]:
        """``(NIR node type, fields)`` for parameters ``p`` (name -> tensor); ``scale`` is
        NIR time per unit of this spec's time (export ``dt`` / ``self.dt``)."""
        raise NotExpressible(type(self).__name__, "neuron", "has no NIR mapping (NIR has no node for this model)")

    @classmethod
    def from_nir(cls, node_type: str, fields: dict, dt: float, options: dict) -> tuple["NeuronSpec", dict]:
        """``(spec, parameter values)`` for a NIR node of one of ``nir_types`` whose fields
        (name -> tensor) are in NIR time, for a time step ``dt``; ``options`` are the spec
        options a spikeforge export wrote into the node's metadata (empty for others)."""
        raise NotExpressible(cls.__name__, "neuron", "reads no NIR node")

    # -- derived helpers -------------------------------------------------------------
    @classmethod
    def options(cls) -> tuple[str, ...]:
        return tuple(f.name for f in fields(cls))

    def key(self) -> str:
        """A stable text identifying the spec and its options (for kernel caching)."""
        opts = ",".join(f"{f.name}={getattr(self, f.name)!r}" for f in fields(self))
        return f"{type(self).__name__}({opts})"


def _check_option(owner: str, name: str, value, default):
    """An option must have its default's type (an Enum member or its value, e.g. ``"soft"``
    for ``Reset.SOFT``; a bool; a finite number, ``dt`` > 0). Returns it normalised."""
    if isinstance(default, enum.Enum):
        if isinstance(value, str) and not isinstance(value, enum.Enum):
            match = [m for m in type(default) if str(m.value).lower() == value.lower()]
            value = match[0] if match else value
        if not isinstance(value, type(default)):
            kind = " or ".join(f"{m} ({str(m.value)!r})" for m in type(default))
            raise TypeError(f"{owner}: option {name} must be {kind}, got {value!r}")
    elif isinstance(default, bool):
        if not isinstance(value, bool):
            raise TypeError(f"{owner}: option {name} must be True or False, got {value!r}")
    elif isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise TypeError(f"{owner}: option {name} must be a number, got {value!r}")
        if not math.isfinite(value) or (name == "dt" and value <= 0):
            raise ValueError(f"{owner}: option {name} must be finite{' and > 0' if name == 'dt' else ''}, "
                             f"got {value!r}")
        value = float(value)  # dt=1 and dt=1.0 give the same key()
    return value


def _named(owner: type, kind: str, names: tuple[str, ...]) -> type:
    """``owner.<kind>``: a named tuple that pickle finds as an attribute of its spec class."""
    t = namedtuple(f"{owner.__name__}{kind}", names)
    t.__module__, t.__qualname__ = owner.__module__, f"{owner.__qualname__}.{kind}"
    return t


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

    # -- the continuous-time face's spike condition and reset jump (exact gradients) -------
    def threshold(self, s: tuple, p: tuple) -> Tensor:
        """A spike is emitted where this crosses 0 from below: ``v - v_threshold``."""
        return s[self.state.index("v")] - p.v_threshold

    def jump(self, s: tuple, p: tuple) -> tuple:
        """The state right after a spike, from the state right before it (``reset``)."""
        k = self.state.index("v")
        v = reset_membrane(s[k], 1.0, p.v_threshold, p.v_reset, self.reset, False)
        return s[:k] + (v,) + s[k + 1:]

    def hard_reset_fields(self, p: dict) -> dict:
        """NIR's threshold and reset fields; NIR resets to ``v_reset`` (a hard reset)."""
        if self.reset is not Reset.HARD:
            raise NotExpressible(type(self).__name__, "reset", f"{self.reset} has no NIR equivalent (NIR neurons "
                                 f"reset to v_reset); use reset=Reset.HARD to export")
        return {"v_threshold": p["v_threshold"], "v_reset": p["v_reset"]}

    @staticmethod
    def options_from_nir(options: dict) -> dict:
        return {"reset": Reset.HARD, "detach_reset": bool(options.get("detach_reset", False))}
