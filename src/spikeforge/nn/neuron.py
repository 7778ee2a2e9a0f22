"""Stateful neuron modules, one class per registered spec, all made by ``neuron_module``.

``module(x)`` on (T, B, ...) (or (B, T, ...) with ``batch_first=True``) returns the output
sequence and starts from rest unless ``carry_state=True``; ``module.step(x_t)`` advances
one step and always carries the state (streaming); ``module.reset()`` or
``spikeforge.reset(net)`` returns to rest.

The classes are generated from the specs, but they are real classes bound in this
module's namespace (``spikeforge.nn.neuron.LIF``) with a signature listing every option
and parameter, so ``pickle``, ``torch.save(model)``, ``copy.deepcopy`` and ``help()`` work.
A neuron registered later (``register_neuron``) gets its class the same way.
"""
from __future__ import annotations

import inspect
import sys

import torch
from torch import Tensor, nn

from .. import _validation
from .. import functional as F
from .. import kernels
from ..neurons import REGISTRY, NeuronSpec
from ..neurons._spec import ON_REGISTER
from ..surrogate import Surrogate

__all__ = ["Neuron", "neuron_module", "MODULES", "where"]


class Neuron(nn.Module):
    """A layer of neurons of one spec. Keyword arguments: the spec's options (e.g.
    ``reset="soft"`` or ``reset=Reset.SOFT``), its parameters (scalar or per-neuron tensors),
    ``learn_<param>`` flags, ``surrogate``, ``backend`` (``None`` = automatic), ``record``
    (keep the per-step states in ``.trace``), ``carry_state`` and ``batch_first``."""

    spec_type: type[NeuronSpec] = NeuronSpec

    def __init__(self, *, surrogate: Surrogate | None = None, backend: str | None = None,
                 record: bool = False, carry_state: bool = False, batch_first: bool = False, **kw) -> None:
        super().__init__()
        options, values, learn = F.split_kwargs(self.spec_type, kw)
        self.spec = self.spec_type(**options)
        self.surrogate = F.DEFAULT_SURROGATE if surrogate is None else surrogate
        if not isinstance(self.surrogate, Surrogate):
            raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {surrogate!r}")
        if backend is not None:
            kernels.check_name(backend, "backend")
        for name, flag in (("record", record), ("carry_state", carry_state), ("batch_first", batch_first)):
            if not isinstance(flag, bool):
                raise TypeError(f"{name} must be True or False, got {flag!r}")
        self.backend, self.record, self.carry_state, self.batch_first = backend, record, carry_state, batch_first
        params = F.make_params(self.spec, values, dtype=torch.get_default_dtype())
        for (name, p), t in zip(self.spec_type.params.items(), params):
            t = t.detach().clone()
            if learn.get(name, p.learnable):
                self.register_parameter(name, nn.Parameter(t))
            else:
                self.register_buffer(name, t)
        self.state = None          # carried state (a State tuple) or None = rest
        self.trace = None          # per-step states of the last call (record=True)
        self.last_backend = None   # name of the backend that ran the last call
        self._stepper = None       # (key, step function) for streaming; see _step_fn

    def params(self) -> tuple:
        return self.spec_type.Params(*(getattr(self, n) for n in self.spec_type.params))

    # -- trace: a sequence call sets it; step calls append one step each ------------------
    @property
    def trace(self):
        if self._steps:
            parts = ([self._trace] if self._trace is not None else []) + [
                self.spec.State(*(v.unsqueeze(0) for v in s)) for s in self._steps]
            self._trace = self.spec.State(*(torch.cat(v) for v in zip(*parts)))
            self._steps = []
        return self._trace

    @trace.setter
    def trace(self, value) -> None:
        self._trace, self._steps = value, []

    # -- calls -------------------------------------------------------------------------
    def forward(self, x: Tensor) -> Tensor:
        if self.batch_first and isinstance(x, Tensor):
            if x.dim() < 3:   # named with the shape given (not the transposed one)
                raise ValueError(f"{where(self)}: x must be a sequence, (T, B, ...) time first or, with batch_first=True "
                                 f"as here, (B, T, ...); got shape {tuple(x.shape)}; for one time step of shape "
                                 f"(B, ...) use .step()")
            if x.shape[1] == 0:
                raise ValueError(f"{where(self)}: x has no time steps: shape {tuple(x.shape)} (B, T, ...) has T = 0")
            x = x.transpose(0, 1)
        state = self.state if self.carry_state else None
        try:
            z, s, trace, self.last_backend = F.run(self.spec, x, state, self.params(), surrogate=self.surrogate,
                                                   backend=self.backend, record=self.record)
        except _validation.NotFiniteError as e:
            raise _validation.NotFiniteError(f"{where(self)}: {e}") from None
        if self.carry_state:
            self.state = s
        self.trace = trace
        return z.transpose(0, 1) if self.batch_first else z

    def step(self, x: Tensor) -> Tensor:
        """One time step on (B, ...); the state is carried to the next call. Runs on the
        module's backend (a fused kernel for one step when it can), honours ``record``
        (``trace`` grows by one step) and sets ``last_backend``."""
        fn = self._step_fn(x)
        state = self.state
        if state is None:
            state = F.rest_state(self.spec, fn.params, x)
        elif state[0].shape != x.shape or state[0].dtype != x.dtype or state[0].device != x.device:
            raise ValueError(f"{where(self)}: x is {tuple(x.shape)} {x.dtype} on {x.device} but the carried state."
                             f"{self.spec.state[0]} is {tuple(state[0].shape)} {state[0].dtype} on {state[0].device}; "
                             f"call reset() before a stream of another shape or dtype")
        new_stream = self.state is None
        try:
            z, state = fn(x, state, self._fresh_params(x) if fn.fresh else None)
        except _validation.NotFiniteError as e:
            raise _validation.NotFiniteError(f"{where(self)}: {e}") from None
        self.__dict__["state"] = state   # a plain attribute: skip nn.Module.__setattr__ (per step)
        if self.record:
            self._steps.append(state)
        for hook in self._step_hooks.values():
            hook(self, x, z, new_stream)
        return z

    @property
    def _step_hooks(self) -> dict:
        return self.__dict__.setdefault("_step_hooks_dict", {})

    def _step_fn(self, x: Tensor):
        """The step function for ``x``'s dtype, device and shape, with the parameters
        validated once (again only when one changes: its version counter moves)."""
        if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 1:
            F.check_input(x, "x", 1, finite=False)
        own, buffers = self._parameters, self._buffers   # (getattr on a module is slow per step)
        tensors = [own[n] if n in own else buffers[n] for n in self.spec_type.params]
        grad = torch.is_grad_enabled()
        key = (x.dtype, x.device, x.shape[1:], grad, self.backend, _validation.enabled(),
               *[(id(t), t.data_ptr(), t._version, t.requires_grad) for t in tensors])
        cached = self._stepper
        if cached is not None and cached[0] == key:
            return cached[1]
        params = F.make_params(self.spec, dict(zip(self.spec_type.params, tensors)), features=x.shape[1:],
                               dtype=x.dtype, device=x.device)
        backend = kernels.select(self.backend, self.spec, self.surrogate, x.unsqueeze(0))
        fn = backend.stepper(self.spec, self.surrogate, params, x)
        # a parameter that wants a gradient enters each step's graph afresh (validated once here)
        fn.params, fn.backend, fn.fresh = params, backend.name, grad and any(t.requires_grad for t in params)
        self._stepper = (key, fn)
        self.last_backend = backend.name
        return fn

    def _fresh_params(self, x: Tensor) -> tuple:
        return self.spec_type.Params(*(t if t.dtype == x.dtype and t.device == x.device else t.to(x)
                                       for t in self.params()))

    def reset(self) -> None:
        self.state = None
        self.trace = None

    def _apply(self, fn, *args, **kwargs):
        """``.to()``, ``.double()``, ``.cuda()``...: the carried state follows the parameters."""
        out = super()._apply(fn, *args, **kwargs)
        if self.state is not None:
            self.__dict__["state"] = type(self.state)(*(fn(s) for s in self.state))
        return out

    def detach_state(self) -> None:
        """Cut the graph through the carried state (truncated BPTT)."""
        if self.state is not None:
            self.state = type(self.state)(*(s.detach() for s in self.state))

    def extra_repr(self) -> str:
        ps = ", ".join(f"{n}={_short(getattr(self, n))}" for n in self.spec_type.params)
        bf = ", batch_first=True" if self.batch_first else ""
        return f"{self.spec.key()}, {ps}, surrogate={self.surrogate!r}{bf}"

    def __getstate__(self):
        """For pickle and deepcopy: carried state and trace are copied detached (a copy
        cannot share the autograd graph); the step cache and hooks are not copied."""
        d = dict(self.__dict__)
        d["_stepper"] = None        # rebuilt on the next step (holds compiled-kernel handles)
        d.pop("_step_hooks_dict", None)
        trace = self.trace          # (joins pending steps)
        d["_trace"], d["_steps"] = _detached(trace), []
        d["state"] = _detached(self.state)
        return d


def _detached(s):
    return None if s is None else type(s)(*(v.detach() for v in s))


def _short(t: Tensor) -> str:
    return f"{t.item():.4g}" if t.numel() == 1 else f"tensor{tuple(t.shape)}"


def where(module: nn.Module) -> str:
    """``"net[1] (LIF)"``: the module's path in the outermost module being called (found on
    the call stack; only used to word an error), else its class name."""
    root, frame = None, sys._getframe(1)
    while frame is not None:
        obj = frame.f_locals.get("net") if frame.f_code is _STREAM_STEP else frame.f_locals.get("self")
        if isinstance(obj, nn.Module) and obj is not module:
            root = obj
        frame = frame.f_back
    name = type(module).__name__
    for path, m in (root.named_modules() if root is not None else ()):
        if m is module:
            parts = "".join(f"[{p}]" if p.isdigit() else f".{p}" for p in path.split("."))
            return f"net{parts} ({name})"
    return name


def _signature(spec_type: type[NeuronSpec]) -> inspect.Signature:
    kw = inspect.Parameter.KEYWORD_ONLY
    ps = [inspect.Parameter("self", inspect.Parameter.POSITIONAL_ONLY)]
    ps += [inspect.Parameter(n, kw, default=d, annotation=type(d).__name__)
           for n, d in ((f, getattr(spec_type, f)) for f in spec_type.options())]
    ps += [inspect.Parameter(n, kw, default=p.default, annotation="float | Tensor")
           for n, p in spec_type.params.items()]
    ps += [inspect.Parameter(f"learn_{n}", kw, default=p.learnable, annotation="bool")
           for n, p in spec_type.params.items()]
    base = inspect.signature(Neuron.__init__).parameters
    ps += [base[n] for n in ("surrogate", "backend", "record", "carry_state", "batch_first")]
    return inspect.Signature(ps)


def _doc(spec_type: type[NeuronSpec]) -> str:
    lines = [inspect.cleandoc(spec_type.__doc__ or spec_type.__name__), "", "Parameters (default, unit):"]
    lines += [f"    {n} = {p.default!r} [{p.unit or '-'}]{' (learnable by default)' if p.learnable else ''}"
              + ("" if p.low is None and p.high is None else f" (in {p.bounds()})")
              for n, p in spec_type.params.items()]
    lines += ["", inspect.cleandoc(Neuron.__doc__)]
    return "\n".join(lines)


MODULES: dict[str, type[Neuron]] = {}
_STREAM_STEP = None   # the code object of spikeforge.step (set below; where() reads its net)


def neuron_module(spec_type: type[NeuronSpec]) -> type[Neuron]:
    """The module class of a spec: named like it, with its docstring and a real signature,
    bound in this module (so it pickles). Registered specs get theirs on registration."""
    name = spec_type.__name__
    old = globals().get(name)
    if getattr(old, "spec_type", None) is spec_type:
        return old
    taken = globals().get(name)
    if taken is not None and not (isinstance(taken, type) and issubclass(taken, Neuron) and taken is not Neuron):
        raise ValueError(f"a neuron cannot be named {name!r}: the name is taken in {__name__}")
    registered = REGISTRY.get(name)
    if registered is not None and registered is not spec_type:
        raise ValueError(f"a neuron named {name!r} is registered ({registered.__module__}.{registered.__qualname__}); "
                         f"give {spec_type.__qualname__} another name")

    def __init__(self, **kw):
        Neuron.__init__(self, **kw)

    __init__.__signature__ = _signature(spec_type)
    __init__.__qualname__ = f"{name}.__init__"
    cls = type(name, (Neuron,), {"spec_type": spec_type, "__doc__": _doc(spec_type), "__module__": __name__,
                                 "__qualname__": name, "__init__": __init__})
    globals()[name] = cls
    if REGISTRY.get(name) is spec_type:
        MODULES[name] = cls
    return cls


def _stream_step_code():
    from .stream import step
    return step.__code__


for _spec in REGISTRY.values():
    neuron_module(_spec)
ON_REGISTER.append(neuron_module)
del _spec
_STREAM_STEP = _stream_step_code()
