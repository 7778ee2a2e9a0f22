"""What the fused backends (C on CPU, Triton on GPU) share.

A backend supplies ``kernel(spec, surrogate, dtype, layout, want=None)`` (cached; ``want``
says which of x and the parameters will want a gradient, default all) returning an object
with ``layout`` and:

* ``forward(x, state, params, record, grad) -> (z, final_state, trace, saved)``: ``trace``
  holds the (T, B, ...) trace of every state when ``record`` (else ``None``); ``saved`` is
  whatever the kernel's backward needs when ``grad`` (x, checkpoints, traces; kernel-private);
* ``backward(state0, saved, params, gz, gstate, gtrace, need, record) -> (gx, gstate, gparams)``,
  where ``gz`` may be broadcast (stride 0, e.g. the gradient of ``sum()``), ``gtrace[k]`` is
  the gradient of the recorded trace of state ``k`` (or ``None``), ``need`` says which of
  (x, *state, *params) want a gradient and ``gparams[k]`` holds one gradient per
  (batch, neuron) lane (``None`` where not needed).

Everything around those two calls — flattening parameters, the autograd Function,
reducing per-lane parameter gradients, the backend's ``run`` — lives here once.
"""
from __future__ import annotations

import math
import os
from pathlib import Path

import torch



def cache_dir() -> Path:
    """``$SPIKEFORGE_CACHE`` or ``~/.cache/spikeforge`` (created)."""
    d = Path(os.environ.get("SPIKEFORGE_CACHE") or Path.home() / ".cache" / "spikeforge")
    d.mkdir(parents=True, exist_ok=True)
    return d


def flat_params(params, features):
    """Each parameter as a 1-element tensor or a contiguous per-neuron vector of length N."""
    n = 1
    for f in features:
        n *= f
    return [p.reshape(1) if p.numel() == 1 else p.expand(features).reshape(n).contiguous() for p in params]


def dims(x):
    """(T, B, N): time, batch and the number of neurons per batch row."""
    return x.shape[0], x.shape[1], math.prod(x.shape[2:])


class Fused(torch.autograd.Function):
    """Forward through ``kernel(...).forward``; backward through its reverse-time kernel."""

    @staticmethod
    def forward(ctx, kernel, spec, surrogate, record, x, *tensors):
        ns = len(spec.state)
        state, params = tensors[:ns], tensors[ns:]
        nig = ctx.needs_input_grad
        k = kernel(spec, surrogate, x.dtype, tuple(p.numel() > 1 for p in params), (nig[4], *nig[5 + ns:]))
        z, final, trace, saved = k.forward(x, state, params, record, True)
        ctx.k, ctx.ns, ctx.record, ctx.seq = k, ns, record, (x.shape, x.dtype, x.device)
        ctx.save_for_backward(*state, *params, *saved)
        ctx.set_materialize_grads(False)  # unused outputs (often the final state) cost nothing
        return (z, *final, *(tuple(trace) if record else ()))

    @staticmethod
    def backward(ctx, gz, *grads):
        k, ns = ctx.k, ctx.ns
        st = ctx.saved_tensors
        npar = len(k.layout)
        state, params, saved = st[:ns], st[ns: ns + npar], st[ns + npar:]
        shape, dtype, device = ctx.seq
        if gz is None:  # only the final state or the trace is used: a broadcast zero, never materialised
            gz = torch.zeros((), dtype=dtype, device=device).expand(shape)
        _, B, N = dims(gz)
        gstate = [torch.zeros_like(s) if g is None else g.contiguous().clone() for g, s in zip(grads[:ns], state)]
        gtrace = [None if g is None else g.contiguous() for g in grads[ns:2 * ns]] or [None] * ns
        need = ctx.needs_input_grad[4:]
        gx, gstate, gp = k.backward(state, saved, params, gz, gstate, gtrace, need, ctx.record)
        gparams = [None if g is None or not w else
                   (g.view(B, N).sum(0) if p.numel() > 1 else g.sum().reshape(1)).to(p.dtype)
                   for g, p, w in zip(gp, params, need[1 + ns:])]
        return (None, None, None, None, gx, *gstate, *gparams)


def run(kernel, spec, surrogate, x, state, params, record):
    """A fused backend's ``run``: autograd when something needs a gradient, else a plain
    forward call (``kernel`` is the backend's cached kernel factory)."""
    x = x.contiguous()
    flat = flat_params(params, x.shape[2:])
    state = [s.contiguous() for s in state]
    ns = len(state)
    if torch.is_grad_enabled() and any(t.requires_grad for t in (x, *state, *flat)):
        out = Fused.apply(kernel, spec, surrogate, record, x, *state, *flat)
        z, final, rec = out[0], out[1: 1 + ns], out[1 + ns:]
    else:
        k = kernel(spec, surrogate, x.dtype, tuple(p.numel() > 1 for p in flat))
        z, final, rec, _ = k.forward(x, state, flat, record, False)
    return z, tuple(final), (tuple(rec) if record else None)
