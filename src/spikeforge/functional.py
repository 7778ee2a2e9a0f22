"""Neuron dynamics as pure functions with explicit state.

``run(spec, x, state, params)`` runs a whole sequence ``(T, B, ...)``; ``step`` advances
one time step ``(B, ...)``. Each registered neuron also gets two named shortcuts, e.g.
``lif(x, state=None, **kw) -> (z, state)`` and ``lif_step(x_t, state=None, **kw)``,
where ``kw`` holds the spec's options, its parameters and ``surrogate``/``backend``.
"""
from __future__ import annotations

import os
from functools import partial

import torch
from torch import Tensor

from . import _validation, kernels
from ._validation import all_finite
from .neurons import REGISTRY, NeuronSpec
from .neurons._spec import ON_REGISTER
from .surrogate import ATan, Surrogate, spike

__all__ = ["run", "step", "make_params", "rest_state", "set_validation", "split_kwargs", "check_input",
           "DEFAULT_SURROGATE"]

DEFAULT_SURROGATE = ATan()


def set_validation(on: bool) -> bool:
    """Turn the per-call input checks (finite values, positive time constants) on or off;
    returns the previous setting."""
    return _validation.set_enabled(on)


def check_input(x, name: str, min_rank: int, finite: bool = True) -> None:
    """``x`` must be a floating tensor: a sequence (``min_rank=2``: (T, B, ...) with at least
    one feature dim and one step) or one step (``min_rank=1``: (B, ...))."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if not x.is_floating_point():
        raise TypeError(f"{name} must have a floating dtype, got {x.dtype}; convert it with .float()")
    if min_rank == 2 and x.dim() < 3:
        raise ValueError(f"{name} must be a sequence of shape (T, B, ...) (time first; batch_first=True on a "
                         f"module takes (B, T, ...)), got shape {tuple(x.shape)}; for one time step of shape "
                         f"(B, ...) use module.step(x) or functional.step, for a sequence add the missing dim")
    if min_rank == 1 and x.dim() < 1:
        raise ValueError(f"{name} must have shape (B, ...) (at least 1 dim), got shape {tuple(x.shape)}")
    if min_rank == 2 and x.shape[0] == 0:
        raise ValueError(f"{name} has no time steps: shape {tuple(x.shape)} has T = 0")
    if finite and _validation.checking() and not all_finite(x):
        raise _validation.not_finite(name)


def make_params(spec: type[NeuronSpec] | NeuronSpec, values: dict | None = None, *,
                features=None, dtype=None, device=None) -> tuple:
    """The spec's ``Params`` tuple: ``values`` override the defaults; each entry is a
    scalar or a tensor that broadcasts to the neuron ``features`` shape."""
    values = dict(values or {})
    unknown = set(values) - set(spec.params)
    if unknown:
        raise TypeError(f"{_name(spec)} has no parameter(s) {sorted(unknown)}; expected some of {list(spec.params)}")
    out = []
    for name, p in spec.params.items():
        v = values.get(name, p.default)
        if not isinstance(v, Tensor):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise TypeError(f"{_name(spec)} parameter {name} must be a number or a tensor, got {v!r}")
            v = torch.as_tensor(v, dtype=dtype or torch.get_default_dtype())
        t = v
        if dtype is not None and t.dtype != dtype:
            t = t.to(dtype)
        if device is not None:
            t = t.to(device)
        _check_param(spec, name, p, t, features)
        out.append(t)
    return spec.Params(*out)


def _check_param(spec, name, p, t: Tensor, features) -> None:
    if not t.is_floating_point():
        raise TypeError(f"{_name(spec)} parameter {name} must be floating point, got {t.dtype}")
    if features is not None:
        try:
            ok = torch.broadcast_shapes(t.shape, tuple(features)) == tuple(features)
        except RuntimeError:
            ok = False
        if not ok:
            raise ValueError(f"{_name(spec)} parameter {name} has shape {tuple(t.shape)}, which does not broadcast "
                             f"to the neuron shape {tuple(features)}")
    if _validation.checking():
        if not all_finite(t):
            raise ValueError(f"{_name(spec)} parameter {name} must be finite, got {_show(t)}")
        if p.positive and not bool((t > 0).all()):
            raise ValueError(f"{_name(spec)} parameter {name} must be > 0, got {_show(t)}")
        if (p.low is not None and not bool((t >= p.low).all())) or (p.high is not None and not bool((t <= p.high).all())):
            raise ValueError(f"{_name(spec)} parameter {name} must be in {p.bounds()}, got {_show(t)}")


def rest_state(spec: NeuronSpec, params: tuple, like: Tensor) -> tuple:
    """The resting state, one tensor of ``like``'s shape per state variable."""
    out = []
    for r in spec.rest(params):
        t = torch.as_tensor(r, dtype=like.dtype, device=like.device)
        out.append(t.expand(like.shape).clone())
    return spec.State(*out)


def _check_state(spec, state, like: Tensor) -> tuple:
    """``state`` as the spec's State, each tensor of ``like``'s shape, dtype and device (a fused
    kernel reads its memory as x's dtype: none is cast silently)."""
    if len(state) != len(spec.state):
        raise ValueError(f"state must hold {len(spec.state)} tensors {spec.state}, got {len(state)}")
    for name, s in zip(spec.state, state):
        if not isinstance(s, Tensor) or tuple(s.shape) != tuple(like.shape):
            got = tuple(s.shape) if isinstance(s, Tensor) else type(s).__name__
            raise ValueError(f"state.{name} must have shape {tuple(like.shape)}, got {got}")
        if s.dtype != like.dtype or s.device != like.device:
            raise ValueError(f"state.{name} must have x's dtype {like.dtype} on {like.device}, got {s.dtype} on "
                             f"{s.device} (a module's carried state follows .to()/.double(); else reset())")
    return spec.State(*state)


def param_values(spec, params) -> dict | None:
    """``params`` as a dict by name: a dict or ``None`` as given; a sequence (such as the spec's
    ``Params`` tuple) must hold one value per parameter, in the spec's order."""
    check_spec(spec)
    if params is None or isinstance(params, dict):
        return params
    if isinstance(params, Tensor) or not hasattr(params, "__len__"):
        raise TypeError(f"params must be a dict by name or a sequence of {len(spec.params)} values "
                        f"{list(spec.params)}, got {type(params).__name__}")
    if len(params) != len(spec.params):
        raise ValueError(f"params must hold {len(spec.params)} values for {_name(spec)}'s parameters "
                         f"{list(spec.params)}, got {len(params)}")
    return dict(zip(spec.params, params))


def check_spec(spec) -> None:
    """Refuses anything but a neuron spec instance, naming what was given."""
    if not isinstance(spec, NeuronSpec):
        hint = " (a neuron module: pass its .spec)" if hasattr(spec, "spec") else ""
        raise TypeError(f"spec must be a NeuronSpec instance such as spikeforge.neurons.LIF(), got "
                        f"{type(spec).__name__}{hint}")


def _prepare(spec, x, state, params, surrogate, min_rank, finite=True):
    check_spec(spec)
    surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate
    if not isinstance(surrogate, Surrogate):
        raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {type(surrogate).__name__}")
    check_input(x, "x", min_rank, finite)
    features = x.shape[min_rank:]
    params = make_params(spec, param_values(spec, params), features=features, dtype=x.dtype, device=x.device)
    like = x[0] if min_rank == 2 else x
    state = rest_state(spec, params, like) if state is None else _check_state(spec, state, like)
    return surrogate, state, params


def run(spec: NeuronSpec, x: Tensor, state=None, params=None, *, surrogate: Surrogate | None = None,
        backend: str | None = None, record: bool = False):
    """Run ``spec`` over a sequence ``x`` of shape (T, B, ...).

    Returns ``(z, state, trace, backend_name)``: outputs (T, B, ...), the final state,
    the per-step states (a ``State`` of (T, B, ...) tensors, or ``None`` unless
    ``record``) and the name of the backend that ran. bfloat16/float16 input on CPU is
    computed in float32 and rounded back (see ``_cpu_half``).
    """
    half = _cpu_half(x, backend)
    if half is not None:   # the CPU kernels compute in float32: up-cast, round back once (as Triton does)
        x, state = x.float(), (None if state is None else tuple(t.float() for t in state))
    surrogate, state, params = _prepare(spec, x, state, params, surrogate, 2, finite=False)
    b = kernels.select(backend, spec, surrogate, x)
    if not b.checks_finite and _validation.checking() and not all_finite(x):
        raise _validation.not_finite("x")  # (a backend that checks raises the same from its kernel)
    z, s, trace = b.run(spec, surrogate, x, state, params, record)
    if half is not None:
        z, s = z.to(half), tuple(t.to(half) for t in s)
        trace = None if trace is None else tuple(t.to(half) for t in trace)
    State = spec.State
    return z, State(*s), (State(*trace) if trace is not None else None), b.name


_HALF = (torch.bfloat16, torch.float16)


def _cpu_half(x, backend: str | None):
    """The half dtype of CPU input that ``run`` computes in float32 (``None``: none). The CPU
    kernels take float32/float64 only; bfloat16/float16 input on CPU (e.g. under
    ``torch.autocast``) is up-cast to float32, computed there, and the outputs, final state and
    trace are rounded back to the input dtype, like the Triton kernels do. Logged once. Asking
    for ``backend="reference"`` runs the reference in the half dtype itself."""
    if not (isinstance(x, Tensor) and x.dtype in _HALF and x.device.type == "cpu"):
        return None
    requested = backend or os.environ.get("SPIKEFORGE_BACKEND") or None
    if requested == "reference":
        return None
    if x.dtype not in _UPCAST_LOGGED:
        _UPCAST_LOGGED.add(x.dtype)
        kernels.log.info("spikeforge: %s input on CPU is computed in float32 (up-cast) and rounded back "
                         "to %s at the output", x.dtype, x.dtype)
    return x.dtype


_UPCAST_LOGGED: set = set()


def step(spec: NeuronSpec, x: Tensor, state=None, params=None, *, surrogate: Surrogate | None = None):
    """Advance ``spec`` by one step on ``x`` of shape (B, ...). Returns ``(z, state)``."""
    surrogate, state, params = _prepare(spec, x, state, params, surrogate, 1)
    z, s = spec.step(x, tuple(state), params, partial(spike, surrogate=surrogate))
    return z, spec.State(*s)


def split_kwargs(spec_cls: type[NeuronSpec], kw: dict) -> tuple[dict, dict, dict]:
    """Split keyword arguments into (spec options, parameter values, ``learn_<name>`` flags)."""
    options, values, learn = {}, {}, {}
    for k, v in kw.items():
        if k in spec_cls.params:
            values[k] = v
        elif k.startswith("learn_") and k[6:] in spec_cls.params:
            learn[k[6:]] = bool(v)
        elif k in spec_cls.options():
            options[k] = v
        else:
            raise TypeError(f"{spec_cls.__name__} got an unexpected argument {k!r}; options: "
                            f"{list(spec_cls.options())}, parameters: {list(spec_cls.params)}")
    return options, values, learn


def _shortcuts(spec_cls):
    def seq(x, state=None, *, surrogate=None, backend=None, **kw):
        options, values, _ = split_kwargs(spec_cls, kw)
        z, s, _, _ = run(spec_cls(**options), x, state, values, surrogate=surrogate, backend=backend)
        return z, s

    def one(x, state=None, *, surrogate=None, **kw):
        options, values, _ = split_kwargs(spec_cls, kw)
        return step(spec_cls(**options), x, state, values, surrogate=surrogate)

    name = spec_cls.__name__.lower()
    seq.__name__, one.__name__ = name, name + "_step"
    seq.__doc__ = f"Run {spec_cls.__name__} over (T, B, ...); returns (z, state).\n\n{spec_cls.__doc__}"
    one.__doc__ = f"One {spec_cls.__name__} step on (B, ...); returns (z, state)."
    return seq, one


def _name(spec) -> str:
    return spec.__name__ if isinstance(spec, type) else type(spec).__name__


def _show(t: Tensor) -> str:
    return repr(t.item()) if t.numel() == 1 else f"a tensor with min {t.min().item():.4g}"


def _add_shortcuts(spec_cls) -> None:
    for f in _shortcuts(spec_cls):
        globals()[f.__name__] = f
        if f.__name__ not in __all__:
            __all__.append(f.__name__)


for _cls in REGISTRY.values():
    _add_shortcuts(_cls)
ON_REGISTER.append(_add_shortcuts)
del _cls
