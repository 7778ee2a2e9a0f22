"""What the fused backends (C on CPU, Triton on GPU) share: the ``torch.library`` op.

A fused backend is a ``FusedBackend`` that supplies ``kernel(spec, surrogate, dtype,
layout, want)`` (cached): ``layout`` says which parameters are per-neuron vectors rather
than scalars, ``want`` which of (x, *params) will want a gradient (``None``: all). The
kernel object has ``layout`` and:

* ``forward(x, state, params, record, grad) -> (z, final, trace, saved)``: ``trace`` is
  the list of (T, B, ...) traces of every state when ``record`` (else ``[]``); ``saved``
  is whatever else its backward needs when ``grad`` (checkpoints; kernel-private; never
  ``x`` or the trace themselves);
* ``saved_shapes(x_shape, record, grad)``: the shapes of ``saved``, for tracing;
* ``backward(x, state0, saved, params, gz, gstate, gtrace) -> (gx, gstate, gparams)``:
  ``saved`` is the trace when ``record``, else the forward's ``saved``; ``gz`` may be
  broadcast (stride 0, e.g. the gradient of ``sum()``); ``gtrace[k]`` is the gradient of the
  recorded trace of state ``k`` or ``None``; ``gstate`` may be overwritten; ``gparams[k]``
  holds one gradient per (batch, neuron) lane, ``None`` where not wanted.

Both calls are generic ``torch.library`` ops, ``spikeforge::fused`` and
``spikeforge::fused_backward`` (with fake implementations), inside one autograd Function,
so ``torch.compile`` sees a neuron layer as one node instead of breaking the graph; eager
calls run the same functions without the dispatcher. Which spec, surrogate and backend an
op runs is named by a string (``variant``) that maps to them here.
"""
from __future__ import annotations

import functools
import math
import os
import threading
from pathlib import Path

import torch
from torch import Tensor

__all__ = ["FusedBackend", "cache_dir", "flat_params", "dims"]


def cache_dir() -> Path:
    """``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge`` (created)."""
    d = Path(os.environ.get("SPIKEFORGE_CACHE") or Path.home() / ".cache" / "spikeforge")
    d.mkdir(parents=True, exist_ok=True)
    return d


def flat_params(params, features):
    """Each parameter as a 1-element tensor or a contiguous per-neuron vector of length N."""
    n = math.prod(features)
    return [p.reshape(1) if p.numel() == 1 else p.expand(features).reshape(n).contiguous() for p in params]


def dims(x):
    """(T, B, N): time, batch and the number of neurons per batch row."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


# -- variants: the op's string argument names (backend, spec, surrogate, layout, want) -------
_VARIANTS: dict[str, tuple] = {}
_IDS: dict[tuple, str] = {}
_LOCK = threading.Lock()


@torch.compiler.assume_constant_result
def variant(backend: str, spec, surrogate, layout: tuple, want: tuple | None) -> str:
    """The op's name for this combination (registered on first use)."""
    key = (backend, spec, surrogate, layout, want)
    with _LOCK:
        if key not in _IDS:
            name = f"{backend}:{len(_IDS)}:{spec.key()}"
            _IDS[key], _VARIANTS[name] = name, key
        return _IDS[key]


_KERNELS: dict[tuple, object] = {}


def _kernel(name: str, dtype):
    """The kernel object of a variant for ``dtype`` (cached: streaming calls it every step)."""
    key = (name, dtype, os.environ.get("TRITON_INTERPRET"))   # triton kernels differ when interpreted
    k = _KERNELS.get(key)
    if k is None:
        from . import _get
        backend, spec, surrogate, layout, want = _VARIANTS[name]
        k = _KERNELS[key] = _get(backend).kernel(spec, surrogate, dtype, layout, want)
    return k


def _placeholder(like: Tensor) -> Tensor:
    return like.new_empty(0)


def _fused(variant: str, x: Tensor, state: list[Tensor], params: list[Tensor], record: bool,
           grad: bool) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Run a neuron over ``x`` (T, B, ...): ``(z, final state, trace, saved)``."""
    k = _kernel(variant, x.dtype)
    z, final, trace, saved = k.forward(x, state, params, record, grad)
    return z, list(final), list(trace), list(saved)


def _fused_backward(variant: str, x: Tensor, state0: list[Tensor], saved: list[Tensor], params: list[Tensor],
                    gz: Tensor, gstate: list[Tensor], gtrace: list[Tensor | None]) -> tuple[
                        Tensor, list[Tensor], list[Tensor]]:
    """Reverse time: ``(gx, gradients of the initial state, gradients of the parameters)``;
    gradients nobody wants are empty tensors."""
    k = _kernel(variant, x.dtype)
    _, B, N = dims(x)
    gstate = [g.contiguous().clone() for g in gstate]
    gx, gstate, gp = k.backward(x, state0, saved, params, gz, gstate, list(gtrace))
    gparams = [_placeholder(p) if g is None else
               (g.view(B, N).sum(0) if p.numel() > 1 else g.sum().reshape(1)).to(p.dtype)
               for g, p in zip(gp, params)]
    return (_placeholder(x) if gx is None else gx), list(gstate), gparams


# The same two functions as torch.library ops, for torch.compile; eager calls skip the
# dispatcher (it costs more than a streaming step takes).
_op = torch.library.custom_op("spikeforge::fused", _fused, mutates_args=())
_op_backward = torch.library.custom_op("spikeforge::fused_backward", _fused_backward, mutates_args=())


@_op.register_fake
def _(variant, x, state, params, record, grad):
    k = _kernel(variant, x.dtype)
    trace = [x.new_empty(x.shape) for _ in state] if record else []
    saved = [x.new_empty(s) for s in k.saved_shapes(tuple(x.shape), record, grad)]
    return torch.empty_like(x), [torch.empty_like(s) for s in state], trace, saved


@_op_backward.register_fake
def _(variant, x, state0, saved, params, gz, gstate, gtrace):
    want = _VARIANTS[variant][4] or (True,) * (1 + len(params))
    return ((torch.empty_like(x) if want[0] else _placeholder(x)), [torch.empty_like(s) for s in state0],
            [torch.empty_like(p) if w else _placeholder(p) for p, w in zip(params, want[1:])])


def first_order(advice: str):
    """Decorator for the backward of an ``autograd.Function`` whose gradients come from kernels
    that autograd does not see: it refuses ``create_graph=True`` (the one case where autograd runs
    a backward with grad enabled: higher-order gradients, a gradient penalty, a Hessian, MAML) with
    an error that says what to use instead (``advice``), rather than returning gradients that
    silently count as constants."""
    def wrap(fn):
        @functools.wraps(fn)
        def backward(ctx, *grads):
            if torch.is_grad_enabled():
                raise RuntimeError(f"spikeforge's fused kernels give first-order gradients only: "
                                   f"create_graph=True (higher-order gradients) needs {advice}")
            return fn(ctx, *grads)
        return backward
    return wrap


def _call(eager, op):
    return op if torch.compiler.is_compiling() else eager


class Fused(torch.autograd.Function):
    """Autograd around the fused forward (the op when compiling) and its reverse-time backward.
    ``fixed``: the parameters as one plain argument when none wants a gradient (fewer
    tensor arguments make ``apply`` cheaper per streaming step), else ``None`` and they
    follow the state in ``tensors``."""

    @staticmethod
    def forward(ctx, name, want, record, ns, fixed, x, *tensors):
        state = list(tensors[:ns])
        params = list(tensors[ns:]) if fixed is None else fixed
        z, final, trace, saved = _call(_fused, _op)(name, x, state, params, record, True)
        ctx.name, ctx.want, ctx.record, ctx.ns, ctx.np, ctx.fixed = name, want, record, ns, len(params), fixed
        # a carried state made under inference_mode cannot be saved: its values are (B * N of them, per state)
        saved_state = state if torch.compiler.is_compiling() else [
            t.clone() if t.is_inference() and not torch.is_inference_mode_enabled() else t for t in state]
        ctx.save_for_backward(x, *saved_state, *params, *(trace if record else saved))
        ctx.set_materialize_grads(False)  # unused outputs (often the final state) cost nothing
        return (z, *final, *trace)

    @staticmethod
    @first_order("backend='reference'")
    def backward(ctx, gz, *grads):
        x, *rest = ctx.saved_tensors
        ns, np_, want = ctx.ns, ctx.np, ctx.want
        state0, params, saved = rest[:ns], rest[ns: ns + np_], rest[ns + np_:]
        if gz is None:  # only the final state or the trace is used: a broadcast zero, never materialised
            gz = x.new_zeros(()).expand(x.shape)
        gfinal = [torch.zeros_like(s) if g is None else g for g, s in zip(grads[:ns], state0)]
        # the kernels read each step's trace gradient as contiguous (T, B, N) rows: a broadcast (v.sum())
        # or transposed gradient is laid out first
        gtrace = [None if g is None else g.contiguous() for g in grads[ns:]] if ctx.record else [None] * ns
        gx, gs, gp = _call(_fused_backward, _op_backward)(ctx.name, x, list(state0), list(saved), list(params),
                                                           gz, gfinal, gtrace)
        gp = () if ctx.fixed is not None else [g if w else None for g, w in zip(gp, want[1:])]
        return (None, None, None, None, None, gx if want[0] else None, *gs, *gp)


class FusedBackend:
    """A backend whose kernels are printed from the traced step (see module docstring)."""

    name = "fused"
    checks_finite = False   # True where the forward kernel reports a NaN or inf in x

    def kernel(self, spec, surrogate, dtype, layout, want=None):
        raise NotImplementedError

    def run(self, spec, surrogate, x, state, params, record):
        """``(z, final state, trace or None)`` over ``x`` (T, B, ...), through the op."""
        x = x.contiguous()
        flat = flat_params(params, x.shape[2:])
        state = [s.contiguous() for s in state]
        grad = torch.is_grad_enabled() and any(t.requires_grad for t in (x, *state, *flat))
        want = (x.requires_grad, *(p.requires_grad for p in flat)) if grad else None
        name = variant(self.name, spec, surrogate, tuple(p.numel() > 1 for p in flat), want)
        ns = len(state)
        if grad:
            out = Fused.apply(name, want, record, ns, None, x, *state, *flat)
            z, final, trace = out[0], out[1: 1 + ns], out[1 + ns:]
        else:
            z, final, trace, _ = _call(_fused, _op)(name, x, state, flat, record, False)
        return z, tuple(final), (tuple(trace) if record else None)

    def stepper(self, spec, surrogate, params, x):
        """``step(x_t, state, fresh=None) -> (z, state)`` for streaming ``x``-like inputs
        (B, ...): one kernel call per step, through ``Fused`` when something needs a gradient;
        ``fresh``: this step's parameters (learnable ones enter each step's graph anew)."""
        flat = flat_params(params, x.shape[1:])
        layout = tuple(p.numel() > 1 for p in flat)
        k = self.kernel(spec, surrogate, x.dtype, layout)
        State, ns, names = spec.State, len(spec.state), {}
        pwant = tuple(p.requires_grad for p in flat)
        grad_params = any(pwant)

        def step(x_t, state, fresh=None):
            x1 = x_t.unsqueeze(0).contiguous()
            if torch.is_grad_enabled() and (grad_params or x_t.requires_grad or any(s.requires_grad for s in state)):
                want = (x_t.requires_grad, *pwant)
                name = names.get(want) or names.setdefault(want, variant(self.name, spec, surrogate, layout, want))
                if grad_params:
                    p = flat if fresh is None else flat_params(fresh, x_t.shape[1:])
                    out = Fused.apply(name, want, False, ns, None, x1, *state, *p)
                else:
                    out = Fused.apply(name, want, False, ns, flat, x1, *state)
                return out[0][0], State(*out[1:])
            z, final, _, _ = k.forward(x1, state, flat, False, False)
            return z[0], State(*final)

        return step
