"""Neurons written as equations (Brian2 / SPAIC style): ``from_equations``.

    EqLIF = from_equations("dv/dt = (v_leak - v + r*I) / tau",
                           threshold="v > v_threshold", reset="v = v_reset",
                           params={"tau": (10.0, "ms"), "v_leak": (0.0, "mV"), "r": (1.0, "MOhm"),
                                   "v_threshold": (1.0, "mV"), "v_reset": (0.0, "mV")},
                           name="EqLIF")

builds a registered ``NeuronSpec`` subclass: its continuous-time face (``derivative``,
``threshold``, ``jump``) evaluates the text as written, and its Euler ``step`` advances every
state by ``dt * (right-hand side)`` (explicit, or ``euler="sequential"``), then fires where the
threshold holds and applies the reset where a spike was fired. So the modules
(``spikeforge.nn.<name>``), the functional shortcuts and every backend (the fused kernels
trace ``step``) work as for a hand-written spec. See docs/equations.md.
"""
from __future__ import annotations

import sys
import weakref

import torch
from dataclasses import dataclass

from ._equations._model import Model, as_params, build_model
from ._equations._parse import DT, EquationError
from ._spec import REGISTRY, NeuronSpec, register_neuron

__all__ = ["from_equations", "EquationError"]


def from_equations(equations: str, *, name: str, threshold: str | None = None, reset: str | None = None,
                   params: dict | None = None, input: str = "I", units: dict | None = None,
                   rest: dict | None = None, euler: str = "explicit", dt: float = 1.0, output: str | None = None,
                   nir_as: type[NeuronSpec] | None = None, register: bool = True,
                   module: str | None = None) -> type[NeuronSpec]:
    """A neuron spec class named ``name`` from its equations.

    ``equations``: one ``d<state>/dt = <expression>`` per line, in the time unit of ``dt``;
    the expression may use the state variables, the parameters, the input (``input``, ``I``
    by default), numbers, ``+ - * / **`` and ``exp log sqrt tanh sigmoid atan erf abs relu
    sign floor min max clamp``. ``threshold``: ``"<expr> > <expr>"`` (or ``>=``, ``<``,
    ``<=``); a spike is ``fire(high - low)``. ``reset``: assignments ``v = e``, ``v -= e``,
    ``u += e`` separated by ``;``, applied where a spike fired, all from the pre-reset state.
    Without ``threshold`` the neuron does not spike and outputs the state ``output``.
    ``params``: name -> number, ``(number, unit)`` or ``Param``. ``units``: units of the state
    variables, the input and ``"t"`` (time), for the dimension check (see
    ``_equations._units``). ``rest``: state -> number or expression of parameters (0 if not
    given). ``euler="sequential"``: each state advances with the already advanced ones
    before it (as ``CubaLIF``'s membrane uses the new current). ``dt`` is the default of the
    spec's ``dt`` option; spiking specs also get ``detach_reset``. ``register=False`` keeps
    the class out of ``REGISTRY`` (no module, no shortcuts). The class is placed in the
    module ``module`` (the caller's by default): bind it there under ``name`` so that it
    pickles by reference; its instances pickle by value (they carry their equations).
    ``nir_as``: a built-in spec with NIR export (``LIF``, ``CubaLIF``, ``IF``, ``LI``...)
    whose dynamics these equations are; checked now on random states (``derivative``,
    ``threshold``, ``jump`` and ``step`` must agree), then NIR export writes that spec's node.
    Without it the spec has no NIR mapping (export raises ``NotExpressible``).
    """
    if not (isinstance(name, str) and name.isidentifier() and name[0].isupper()):
        raise ValueError(f"from_equations: name must be a Python identifier starting with a capital letter "
                         f"(a class name such as 'EqLIF'), got {name!r}")
    if isinstance(dt, bool) or not isinstance(dt, (int, float)) or not 0 < dt < float("inf"):
        raise ValueError(f"from_equations: dt must be a finite number > 0 (the default time step), got {dt!r}")
    if not isinstance(register, bool):
        raise TypeError(f"from_equations: register must be True or False, got {register!r}")
    ps = as_params(params)
    model = build_model(equations, threshold, reset, ps, input, euler, rest, output, units)
    recipe = dict(equations=equations, name=name, threshold=threshold, reset=reset,
                  params=ps, input=input, units=units, rest=rest, euler=euler,
                  dt=dt, output=output, nir_as=nir_as, register=register)
    module = module or sys._getframe(1).f_globals.get("__name__", "__main__")
    cls = _make_class(name, model, recipe, float(dt), module)
    if nir_as is not None:
        cls.to_nir = _nir_exporter(cls, nir_as)
    _BUILT[(module, name)] = cls
    return register_neuron(cls) if register else cls


#: (module, name) -> the class last built there, so unpickling in this process finds it
_BUILT: "weakref.WeakValueDictionary[tuple[str, str], type]" = weakref.WeakValueDictionary()


def _make_class(name: str, model: Model, recipe: dict, dt: float, module: str) -> type[NeuronSpec]:
    spiking = model.fire is not None
    ann = {"detach_reset": bool, "dt": float} if spiking else {"dt": float}
    ns = {"__annotations__": ann, "dt": dt, "__module__": module, "__qualname__": name,
          "__doc__": _doc(recipe), "state": model.state, "params": dict(recipe["params"]), "spiking": spiking,
          "euler": "sequential" if model.sequential else "explicit", "_model": model, "_recipe": recipe,
          "step": _step, "derivative": _derivative, "rest": _rest, "__reduce__": _reduce}
    if spiking:
        ns.update(detach_reset=False, threshold=_threshold, jump=_jump)
    cls = dataclass(frozen=True)(type(name, (NeuronSpec,), ns))
    for kind in ("State", "Params"):     # their instances pickle by value too (a module's carried state)
        getattr(cls, kind).__reduce__ = _tuple_reducer(cls, kind)
    return cls


def _tuple_reducer(cls, kind: str):
    def __reduce__(self):
        return _rebuild_tuple, (cls._recipe, cls.__module__, kind, tuple(self))
    return __reduce__


def _rebuild_tuple(recipe: dict, module: str, kind: str, values: tuple):
    return getattr(_class_for(recipe, module), kind)(*values)


def _doc(r: dict) -> str:
    lines = [f"{r['name']}: a neuron written as equations (spikeforge.neurons.from_equations).", ""]
    lines += ["    " + ln.strip() for ln in r["equations"].strip().splitlines() if ln.strip()]
    if r["threshold"]:
        lines += ["", f"spike where {r['threshold']}; then {r['reset'] or 'no reset'}"]
    lines += ["", f"input: {r['input']}; Euler step: {r['euler']}"]
    return "\n".join(lines)


def _env(self, s, p) -> dict:
    m = self._model
    env = dict(zip(m.params, p))
    env.update(zip(m.state, s))
    env[DT] = self.dt
    return env


def _step(self, x, s, p, fire):
    """One Euler step: charge (every state by ``dt * rhs``), fire, reset."""
    m = self._model
    env = _env(self, s, p)
    env[m.input] = x
    new = list(s)
    for k, (var, term) in enumerate(zip(m.state, m.euler_terms)):
        new[k] = env[var] + term(env)
        if m.sequential:
            env[var] = new[k]
    env.update(zip(m.state, new))
    if m.fire is None:
        return new[m.output], tuple(new)
    z = fire(m.fire[0](env) - m.fire[1](env))
    return z, _apply_reset(m, env, new, z.detach() if self.detach_reset else z)


#: a reset assignment's operator -> the state after it, from ``h`` (before), ``value`` and the spike ``z``
_RESET_OPS = {"=": lambda h, value, z: h * (1.0 - z) + value * z,
              "-=": lambda h, value, z: h - value * z,
              "+=": lambda h, value, z: h + value * z}


def _apply_reset(m: Model, env: dict, h: list, z) -> tuple:
    """The reset where ``z`` (1: spiked), all values from the pre-reset state ``env``."""
    values = [(k, op, f(env)) for k, op, f in m.resets]
    out = list(h)
    for k, op, value in values:
        out[k] = _RESET_OPS[op](h[k], value, z)
    return tuple(out)


def _derivative(self, x, s, p):
    """``ds/dt`` as written in the equations."""
    env = _env(self, s, p)
    env[self._model.input] = x
    return tuple(f(env) for f in self._model.derivatives)


def _threshold(self, s, p):
    """``high - low`` of the threshold condition (a spike where it crosses 0 from below)."""
    env = _env(self, s, p)
    return self._model.fire[0](env) - self._model.fire[1](env)


def _jump(self, s, p):
    """The state right after a spike: the reset with ``z = 1``."""
    return _apply_reset(self._model, _env(self, s, p), list(s), 1.0)


def _rest(self, p):
    env = dict(zip(self._model.params, p))
    return tuple(0.0 if f is None else f(env) for f in self._model.rest)


def _nir_exporter(cls, like):
    """``to_nir`` of ``like`` for equations that are its dynamics (checked here)."""
    if not (isinstance(like, type) and issubclass(like, NeuronSpec)) or like.to_nir is NeuronSpec.to_nir:
        raise TypeError(f"from_equations: nir_as must be a NeuronSpec class with a NIR mapping (such as LIF, "
                        f"CubaLIF, IF, LI), got {like!r}")
    if (like.state, set(like.params), like.spiking) != (cls.state, set(cls.params), cls.spiking):
        raise ValueError(f"from_equations: nir_as={like.__name__} needs the state {like.state} and the parameters "
                         f"{sorted(like.params)}; these equations have {cls.state} and {sorted(cls.params)}")
    _check_same_dynamics(cls(), like(), like.__name__)

    def to_nir(self, p, scale):
        options = {k: getattr(self, k) for k in self.options() if k in like.options()}
        return like(**options).to_nir(p, scale)

    to_nir.__doc__ = f"NIR export as {like.__name__} (the equations were checked to be its dynamics)."
    return to_nir


def _check_same_dynamics(eq: NeuronSpec, ref: NeuronSpec, name: str) -> None:
    g = torch.Generator().manual_seed(0)
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(64, generator=g, dtype=torch.float64)  # noqa: E731
    p = ref.Params(*(u(0.5, 2.0) if q.positive else u(-1.0, 1.0) for q in (ref.params[k] for k in ref.params)))
    pe = eq.Params(*(getattr(p, k) for k in eq.params))
    s, x = tuple(u(-1.0, 2.0) for _ in ref.state), u(-1.0, 2.0)
    fire = lambda v: (v >= 0).to(v.dtype)  # noqa: E731
    faces = {"derivative": lambda sp, pp: sp.derivative(x, s, pp),
             "step": lambda sp, pp: (lambda r: (r[0], *r[1]))(sp.step(x, s, pp, fire))}
    if ref.spiking:
        faces.update(threshold=lambda sp, pp: (sp.threshold(s, pp),), jump=lambda sp, pp: sp.jump(s, pp))
    for face, f in faces.items():
        for a, b in zip(f(eq, pe), f(ref, p)):
            if not torch.allclose(torch.as_tensor(a), torch.as_tensor(b), rtol=1e-9, atol=1e-12):
                raise ValueError(f"from_equations: nir_as={name}: these equations are not {name}'s dynamics "
                                 f"({face} differs on random states and parameters)")


def _reduce(self):
    opts = {k: getattr(self, k) for k in self.options()}
    return _rebuild, (type(self)._recipe, type(self).__module__, opts)


def _rebuild(recipe: dict, module: str, options: dict) -> NeuronSpec:
    """Unpickle a spec instance."""
    return _class_for(recipe, module)(**options)


def _class_for(recipe: dict, module: str) -> type[NeuronSpec]:
    """The class with these equations: the registered one, the one built here, or built again."""
    name = recipe["name"]
    for cls in (REGISTRY.get(name), _BUILT.get((module, name)), getattr(sys.modules.get(module), name, None)):
        if getattr(cls, "_recipe", None) == recipe:
            return cls
    return from_equations(**recipe, module=module)
