"""The built-in IF, LIF, CubaLIF and Izhikevich written as equations (``from_equations``).

``RECIPES`` maps each to ``(from_equations keyword arguments, the built-in it equals, the
built-in's options)``; ``build`` makes the classes. Nothing is registered on import, unless
``SPIKEFORGE_EQUATION_NEURONS=1``: then they are registered as ``Equation<Name>`` so that the
registry-driven test matrix runs them too, e.g.

    SPIKEFORGE_EQUATION_NEURONS=1 PYTHONPATH=tests .venv/bin/python -m pytest -p equation_neurons \
        tests/test_neurons.py tests/test_kernels_cpu.py tests/test_nir.py tests/test_module_classes.py \
        tests/test_eventprop.py tests/test_errors.py tests/test_functional.py tests/test_custom_ops.py \
        tests/test_triton.py tests/test_distributed.py -q -k Equation

(2 December 2026: 705 passed; test_nir.py and test_module_classes.py also pass in full.)
"""
from __future__ import annotations

import os

from spikeforge.neurons import Param, from_equations

_FIRE = dict(threshold="v > v_threshold", reset="v = v_reset")
_THRESH = {"v_threshold": Param(1.0, "potential"), "v_reset": Param(0.0, "potential")}

RECIPES = {
    "IF": (dict(equations="dv/dt = r*I", params={"r": Param(1.0, "resistance"), **_THRESH},
                rest={"v": "v_reset"}, **_FIRE), {}),
    "LIF": (dict(equations="dv/dt = (v_leak - v + r*I) / tau",
                 params={"tau": Param(2.0, "time", positive=True), "v_leak": Param(0.0, "potential"),
                         "r": Param(1.0, "resistance"), **_THRESH},
                 rest={"v": "v_leak"}, **_FIRE), {}),
    "CubaLIF": (dict(equations="di/dt = (I - i) / tau_syn\ndv/dt = (v_leak - v + r*i) / tau_mem",
                     params={"tau_syn": Param(5.0, "time", positive=True),
                             "tau_mem": Param(10.0, "time", positive=True),
                             "v_leak": Param(0.0, "potential"), "r": Param(1.0, "resistance"), **_THRESH},
                     rest={"v": "v_leak"}, euler="sequential", **_FIRE), {}),
    "Izhikevich": (dict(equations="dv/dt = 0.04*v*v + 5*v + 140 - u + r*I\ndu/dt = a*(b*v - u)",
                        params={"a": Param(0.02, "1/time"), "b": Param(0.2, ""), "c": Param(-65.0, "potential"),
                                "d": Param(8.0, "potential"), "r": Param(1.0, "resistance"),
                                "v_threshold": Param(30.0, "potential")},
                        rest={"v": "c", "u": "b*c"}, threshold="v >= v_threshold", reset="v = c; u += d"), {}),
    "LIF-soft": (dict(equations="dv/dt = (v_leak - v + r*I) / tau",
                      params={"tau": Param(2.0, "time", positive=True), "v_leak": Param(0.0, "potential"),
                              "r": Param(1.0, "resistance"), **_THRESH},
                      rest={"v": "v_leak"}, threshold="v > v_threshold", reset="v -= v_threshold"),
                 {"reset": "soft"}),
}


def builtin_name(key: str) -> str:
    return key.split("-")[0]


def build(key: str, register: bool = False, name: str | None = None):
    kw, _ = RECIPES[key]
    return from_equations(**kw, name=name or "Eq" + key.replace("-", "_"), register=register, module=__name__)


if os.environ.get("SPIKEFORGE_EQUATION_NEURONS") == "1":
    REGISTERED = {k: build(k, register=True, name="Equation" + k) for k in RECIPES if "-" not in k}
    globals().update({cls.__name__: cls for cls in REGISTERED.values()})   # bound by name: they pickle
