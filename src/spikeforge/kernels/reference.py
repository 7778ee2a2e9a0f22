"""The reference backend: the spec's step function in a Python time loop (autograd).

This is the ground truth every fused backend is tested against.
"""
from __future__ import annotations

from functools import partial

import torch

from .. import _validation
from ..surrogate import spike


def scan(spec, surrogate, x, state, params, record=False):
    """Run ``spec.step`` over ``x`` (T, B, ...). Returns ``(z, final_state, trace)`` where
    ``trace`` stacks every step's state (T, B, ...) per variable, or is ``None``."""
    fire = partial(spike, surrogate=surrogate)
    zs, trace = [], []
    s = tuple(state)
    for x_t in x.unbind(0):  # unbind, not x[t]: indexing makes backward O(T^2)
        z, s = spec.step(x_t, s, params, fire)
        zs.append(z)
        if record:
            trace.append(s)
    stacked = tuple(torch.stack(v) for v in zip(*trace)) if record else None
    return torch.stack(zs), tuple(s), stacked


class Reference:
    name = "reference"
    description = "plain PyTorch time loop with autograd (ground truth)"
    checks_finite = False

    def unavailable_reason(self, device, dtype):
        return None

    def support_reason(self, spec, surrogate, dtype):
        return None

    def run(self, spec, surrogate, x, state, params, record):
        return scan(spec, surrogate, x, state, params, record)

    def stepper(self, spec, surrogate, params, x):
        fire, State = partial(spike, surrogate=surrogate), spec.State

        def step(x_t, state, fresh=None):
            if _validation.checking() and not _validation.all_finite(x_t):
                raise _validation.not_finite("x")
            z, s = spec.step(x_t, tuple(state), params if fresh is None else fresh, fire)
            return z, State(*s)

        return step
