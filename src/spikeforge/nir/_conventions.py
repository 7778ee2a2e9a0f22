"""What each framework's NIR import assumes, as checks on an exported graph.

A convention is the time step a peer imports with (``None``: any) and, per NIR node type,
the field values it can reproduce (read from the peers' sources; ``docs/nir.md``, tested in
``tests/interop``). ``export(..., convention=...)`` checks the graph against it and raises
``NIRError`` naming the node, the field and the peer, instead of writing a graph that the
peer would load into different dynamics.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ._errors import NIRError

__all__ = ["Convention", "CONVENTIONS", "check"]


def _zero(a, node, dt):
    return bool(np.all(a == 0)), "must be 0"


def _one(a, node, dt):
    return bool(np.all(a == 1)), "must be 1"


def _uniform(a, node, dt):
    return bool(np.all(a == a.ravel()[0])) if a.size else True, "must be the same for every neuron"


def _equals_v_reset(a, node, dt):
    return bool(np.array_equal(a, node.v_reset)), "must equal v_reset"


def _one_or_tau_over_dt(a, node, dt):
    return bool(np.allclose(a, 1) or np.allclose(a, node.tau / dt)), "must be 1 or tau / dt"


def _inv_dt(a, node, dt):
    return bool(np.allclose(a, 1 / dt)), "must be 1 / dt"


def _tau_mem_over_dt(a, node, dt):
    return bool(np.allclose(a, node.tau_mem / dt)), "must be tau_mem / dt"


def _tau_syn_over_dt(a, node, dt):
    return bool(np.allclose(a, node.tau_syn / dt)), "must be tau_syn / dt (spikeforge writes w_in = 1)"


@dataclass(frozen=True)
class Convention:
    name: str
    dt: float | None = None                              # the peer imports with this dt
    rules: dict = field(default_factory=dict)            # node type -> {field: check}
    refused: dict = field(default_factory=dict)          # node type -> why the peer cannot take it


CONVENTIONS = {c.name: c for c in [
    Convention("euler"),
    Convention("snntorch", 1e-4, {
        "LIF": {"v_leak": _zero, "v_reset": _zero, "v_threshold": _uniform},
        "CubaLIF": {"v_leak": _zero, "v_reset": _zero, "v_threshold": _uniform, "r": _tau_mem_over_dt}},
        {"IF": "snnTorch 1.0 imports IF as a leaky neuron (beta = 0.9) with a subtractive reset",
         "Delay": "snnTorch has no Delay", "LI": "snnTorch 1.0 has no mapping for NIR's LI",
         "Flatten": "snnTorch 1.0 imports NIR's Flatten start_dim as a torch dim that counts the batch, so the flattened layer gets the wrong shape"}),
    Convention("spikingjelly", None, {
        "LIF": {"v_leak": _equals_v_reset, "r": _one_or_tau_over_dt, "tau": _uniform, "v_threshold": _uniform,
                "v_reset": _uniform},
        "IF": {"r": _inv_dt, "v_threshold": _uniform, "v_reset": _uniform},
        "CubaLIF": {"v_leak": _zero, "r": _tau_mem_over_dt, "w_in": _tau_syn_over_dt}},
        {"Delay": "SpikingJelly has no Delay", "LI": "SpikingJelly 2.0 has no mapping for NIR's LI"}),
    Convention("norse", None, {
        "LIF": {"r": _one, "v_reset": _zero}, "IF": {"r": _one, "v_reset": _zero},
        "CubaLIF": {"v_reset": _zero}},
        {"Delay": "Norse has no Delay", "LI": "Norse 1.1 drops NIR's LI without a word",
         "AvgPool2d": "Norse 1.1 drops NIR's AvgPool2d without a word", "Flatten": "Norse 1.1 imports NIR's Flatten start_dim as a torch dim that counts the batch, so the flattened layer gets the wrong shape"}),
]}


def check(graph, convention: str, dt: float, path: str = "") -> None:
    """Raise ``NIRError`` where ``graph`` asks more of the peer than it does."""
    c = CONVENTIONS[convention]
    if c.dt is not None and not np.isclose(dt, c.dt, rtol=1e-12, atol=0):
        raise NIRError(f"convention {c.name!r}: {c.name} imports with dt={c.dt}; export with dt={c.dt}")
    for name, node in graph.nodes.items():
        kind, where = type(node).__name__, f"{path}{name}"
        if kind == "NIRGraph":
            check(node, convention, dt, f"{where}.")
            continue
        if kind in c.refused:
            raise NIRError(f"convention {c.name!r}: node {where!r} ({kind}): {c.refused[kind]}")
        for fld, rule in c.rules.get(kind, {}).items():
            ok, need = rule(np.asarray(getattr(node, fld)), node, dt)
            if not ok:
                raise NIRError(f"convention {c.name!r}: node {where!r} ({kind}): field {fld} {need} for {c.name}")
