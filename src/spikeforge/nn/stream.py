"""Whole networks one time step at a time: ``spikeforge.step(net, x_t)`` and ``spikeforge.reset(net)``.

Every spikeforge layer has ``step(x_t)`` on one step ``(B, ...)`` and keeps what it needs
between steps (neuron states, recurrent spikes, delay lines). ``step(net, x_t)`` calls it
layer by layer through ``nn.Sequential`` containers; a torch layer without ``step`` (e.g.
``nn.Linear``, ``nn.ReLU``) is applied to the step as it is, which is right for layers
that treat each sample on its own. A stream of steps equals the sequence call on the whole
input; ``reset(net)`` starts a new stream.
"""
from __future__ import annotations

from torch import Tensor, nn

__all__ = ["step", "reset", "detached_dict"]


def step(net: nn.Module, x: Tensor) -> Tensor:
    """Advance ``net`` by one time step on ``x`` (B, ...), carrying every state."""
    if not isinstance(net, nn.Module):
        raise TypeError(f"net must be a torch.nn.Module, got {type(net).__name__}")
    own = getattr(net, "step", None)
    if callable(own):
        return own(x)
    if isinstance(net, nn.Sequential):
        for m in net:
            x = step(m, x)
        return x
    return net(x)


def reset(net: nn.Module) -> None:
    """Return every stateful layer in ``net`` to rest (neuron states and traces, recurrent
    spikes, delay lines): the next call or step starts a new sequence. A stateful layer is
    one with both ``step`` and ``reset`` methods (your own layers can join that way)."""
    for m in net.modules():
        if callable(getattr(m, "step", None)) and callable(getattr(m, "reset", None)):
            m.reset()


def detached_dict(module: nn.Module, *names: str) -> dict:
    """``module.__dict__`` with the carried tensors ``names`` detached: what a stateful
    layer pickles or deep-copies (a copy cannot share the autograd graph)."""
    d = dict(module.__dict__)
    for n in names:
        if isinstance(d.get(n), Tensor):
            d[n] = d[n].detach()
    return d
