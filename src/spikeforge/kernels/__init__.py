"""Backends that run a neuron spec over time, and the explicit choice between them.

``backends()`` lists every backend with ``None`` (available) or the reason it is not.
The backend is chosen by argument, else by ``SPIKEFORGE_BACKEND``, else automatically
(fused when it can run the spec, reference otherwise). A forced backend that cannot run
raises; an automatic fallback is logged once with its reason — never silent.
"""
from __future__ import annotations

import importlib
import logging
import os
from typing import Callable, Protocol

import torch

from .reference import Reference

__all__ = ["Backend", "backends", "select", "check_name", "BackendError", "NAMES"]


class Backend(Protocol):
    """What every backend provides (``reference``, and the fused ``cpu`` and ``triton``)."""

    name: str
    description: str
    checks_finite: bool   # its run raises the NaN/inf error for x itself

    def unavailable_reason(self, device: torch.device, dtype: torch.dtype) -> str | None: ...

    def support_reason(self, spec, surrogate, dtype: torch.dtype) -> str | None: ...

    def run(self, spec, surrogate, x, state, params, record: bool) -> tuple:
        """``(z, final state, trace or None)`` over ``x`` of shape (T, B, ...)."""

    def stepper(self, spec, surrogate, params, x) -> Callable:
        """``step(x_t, state) -> (z, state)`` for streaming inputs shaped like ``x`` (B, ...)."""

log = logging.getLogger("spikeforge")

NAMES = ("reference", "cpu", "triton")
_MODULES = {"cpu": ".cpu", "triton": ".triton"}
_CACHE: dict = {"reference": Reference()}
_WARNED: set = set()


class BackendError(RuntimeError):
    """A backend that was asked for cannot run."""


def _get(name: str):
    """The backend object, or a string saying why it could not be loaded."""
    if name not in _CACHE:
        try:
            _CACHE[name] = importlib.import_module(_MODULES[name], __name__).BACKEND
        except Exception as e:  # report any import problem as the reason
            _CACHE[name] = f"cannot be loaded: {type(e).__name__}: {e}"
    return _CACHE[name]


def backends(device="cpu", dtype=torch.float32) -> dict[str, str | None]:
    """Every backend name mapped to ``None`` if usable on ``device``/``dtype``, else the reason."""
    out = {}
    for name in NAMES:
        b = _get(name)
        out[name] = b if isinstance(b, str) else b.unavailable_reason(torch.device(device), dtype)
    return out


def check_name(name: str, origin: str) -> str:
    if name not in NAMES:
        raise ValueError(f"{origin} must be one of {', '.join(NAMES)}, got {name!r}")
    return name


def _why_not(name, spec, surrogate, device, dtype):
    b = _get(name)
    if isinstance(b, str):
        return b
    return b.unavailable_reason(device, dtype) or b.support_reason(spec, surrogate, dtype)


def select(requested: str | None, spec, surrogate, x):
    """The backend object that will run ``spec`` on ``x``."""
    return _CACHE[select_name(requested, spec, surrogate, x.device, x.dtype)]


@torch.compiler.assume_constant_result  # torch.compile takes the choice as a constant
def select_name(requested: str | None, spec, surrogate, device: torch.device, dtype: torch.dtype) -> str:
    """The name of the backend that will run ``spec`` on ``device``/``dtype``: ``requested``,
    else ``$SPIKEFORGE_BACKEND``, else the fused one when it can, else ``reference`` (logged
    once with the reason). A backend that was asked for and cannot run raises."""
    if requested is None and os.environ.get("SPIKEFORGE_BACKEND"):
        requested = check_name(os.environ["SPIKEFORGE_BACKEND"], "SPIKEFORGE_BACKEND")
    if requested is not None:
        check_name(requested, "backend")
        reason = _why_not(requested, spec, surrogate, device, dtype)
        if reason:
            raise BackendError(f"backend {requested!r} cannot run {spec.key()} with {surrogate!r}: {reason}")
        return requested
    first = "triton" if device.type == "cuda" else "cpu"
    reason = _why_not(first, spec, surrogate, device, dtype)
    if not reason:
        return first
    key = (first, reason)
    if key not in _WARNED:
        _WARNED.add(key)
        log.warning("spikeforge: using the reference backend: %s backend %s", first, reason)
    return "reference"
