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

Both calls run inside one generic custom op, ``spikeforge::fused`` (with its backward
op ``spikeforge::fused_backward``, fake implementations and an autograd formula), so
``torch.compile`` sees a neuron layer as one node instead of breaking the graph. Which
spec, surrogate and backend the op runs is named by a string (``variant``) that maps to
them here.
"""
from __future__ import annotations

import math
import os
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


@torch.compiler.assume_constant_result
def variant(backend: str, spec, surrogate, layout: tuple, want: tuple | None) -> str:
    """The op's name for this combination (registered on first use)."""
    key = (backend, spec, surrogate, layout, want)
    if key not in _IDS:
        name = f"{backend}:{len(_IDS)}:{spec.key()}"
        _IDS[key], _VARIANTS[name] = name, key
    return _IDS[key]


def _kernel(name: str, dtype):
    from . import _get
    backend, spec, surrogate, layout, want = _VARIANTS[name]
    return _get(backend).kernel(spec, surrogate, dtype, layout, want), len(spec.state)


def _placeholder(like: Tensor) -> Tensor:
    return like.new_empty(0)


@torch.library.custom_op("spikeforge::fused", mutates_args=())
def fused(variant: str, x: Tensor, state: list[Tensor], params: list[Tensor], record: bool,
          grad: bool) -> tuple[Tensor, list[Tensor], list[Tensor], list[Tensor]]:
    """Run a neuron over ``x`` (T, B, ...): ``(z, final state, trace, saved)``."""
    k, _ = _kernel(variant, x.dtype)
    z, final, trace, saved = k.forward(x, state, params, record, grad)
    return z, list(final), list(trace), list(saved)


@fused.register_fake
def _(variant, x, state, params, record, grad):
    k, _ = _kernel(variant, x.dtype)
    trace = [x.new_empty(x.shape) for _ in state] if record else []
    saved = [x.new_empty(s) for s in k.saved_shapes(tuple(x.shape), record, grad)]
    return torch.empty_like(x), [torch.empty_like(s) for s in state], trace, saved


@torch.library.custom_op("spikeforge::fused_backward", mutates_args=())
def fused_backward(variant: str, x: Tensor, state0: list[Tensor], saved: list[Tensor], params: list[Tensor],
                   gz: Tensor, gstate: list[Tensor], gtrace: list[Tensor | None]) -> tuple[
                       Tensor, list[Tensor], list[Tensor]]:
    """Reverse time: ``(gx, gradients of the initial state, gradients of the parameters)``;
    gradients nobody wants are empty tensors."""
    k, _ = _kernel(variant, x.dtype)
    _, B, N = dims(x)
    gstate = [g.contiguous().clone() for g in gstate]
    gx, gstate, gp = k.backward(x, state0, saved, params, gz, gstate, list(gtrace))
    gparams = [_placeholder(p) if g is None else
               (g.view(B, N).sum(0) if p.numel() > 1 else g.sum().reshape(1)).to(p.dtype)
               for g, p in zip(gp, params)]
    return (_placeholder(x) if gx is None else gx), list(gstate), gparams


@fused_backward.register_fake
def _(variant, x, state0, saved, params, gz, gstate, gtrace):
    want = _VARIANTS[variant][4] or (True,) * (1 + len(params))
    return ((torch.empty_like(x) if want[0] else _placeholder(x)), [torch.empty_like(s) for s in state0],
            [torch.empty_like(p) if w else _placeholder(p) for p, w in zip(params, want[1:])])


def _setup(ctx, inputs, output) -> None:
    name, x, state, params, record, _ = inputs
    _, _, trace, saved = output
    ctx.name, ctx.record, ctx.ns = name, record, len(state)
    ctx.save_for_backward(x, *state, *params, *(trace if record else saved))


def _backward(ctx, gz, gfinal, gtrace, _gsaved):
    x, *rest = ctx.saved_tensors
    ns, np_ = ctx.ns, len(_VARIANTS[ctx.name][3])
    state0, params, saved = rest[:ns], rest[ns: ns + np_], rest[ns + np_:]
    if gz is None:  # only the final state or the trace is used: a broadcast zero, never materialised
        gz = x.new_zeros(()).expand(x.shape)
    gfinal = [torch.zeros_like(s) if g is None else g for g, s in zip(gfinal, state0)]
    gtrace = list(gtrace) if ctx.record else [None] * ns
    gx, gs, gp = fused_backward(ctx.name, x, list(state0), list(saved), list(params), gz, gfinal, gtrace)
    want = _VARIANTS[ctx.name][4] or (True,) * (1 + np_)
    return (None, gx if want[0] else None, gs, [g if w else None for g, w in zip(gp, want[1:])], None, None)


fused.register_autograd(_backward, setup_context=_setup)


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
        z, final, trace, _ = torch.ops.spikeforge.fused(name, x, state, flat, record, grad)
        return z, tuple(final), (tuple(trace) if record else None)

    def stepper(self, spec, surrogate, params, x):
        """``step(x_t, state) -> (z, state)`` for streaming ``x``-like inputs (B, ...): a
        one-step kernel call with no autograd bookkeeping when nothing needs a gradient
        (the op's dispatch costs more than the step), the op otherwise."""
        flat = flat_params(params, x.shape[1:])
        k = self.kernel(spec, surrogate, x.dtype, tuple(p.numel() > 1 for p in flat))
        State, grad_params = spec.State, any(p.requires_grad for p in flat)

        def step(x_t, state):
            if torch.is_grad_enabled() and (grad_params or x_t.requires_grad or any(s.requires_grad for s in state)):
                z, final, _ = self.run(spec, surrogate, x_t.unsqueeze(0), state, params, False)
            else:
                z, final, _, _ = k.forward(x_t.unsqueeze(0).contiguous(), state, flat, False, False)
            return z[0], State(*final)

        return step
