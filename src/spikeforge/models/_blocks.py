"""Pieces every model of the zoo shares: the neuron factory, conv + BatchNorm over time,
and the input check.

A model's neurons come from one argument, ``neuron``: the name of a registered neuron
(``"LIF"``, ``"PLIF"``, ...; see ``spikeforge.nn.MODULES``) or any callable returning an
``nn.Module`` that maps a sequence ``(T, B, ...)`` to a sequence of the same shape (a neuron
class such as ``spikeforge.nn.IF``, a ``functools.partial``, ...). ``surrogate`` and the
remaining keyword arguments are passed to every neuron the model builds.
"""
from __future__ import annotations

from typing import Callable, Union

from torch import Tensor, nn

from ..nn import MODULES, TimeDistributed
from ..surrogate import Surrogate

__all__ = ["NeuronArg", "NeuronFactory", "neuron_factory", "conv_bn", "check_images", "check_step", "call"]

NeuronArg = Union[str, Callable[..., nn.Module]]


class NeuronFactory:
    """A zero-argument neuron maker: ``factory()`` (or ``factory(v_threshold=0.5)`` to
    override one of the keyword arguments) builds a fresh neuron layer."""

    def __init__(self, make: Callable[..., nn.Module], kwargs: dict) -> None:
        self.make, self.kwargs = make, kwargs

    def __call__(self, **overrides) -> nn.Module:
        module = self.make(**{**self.kwargs, **overrides})
        if not isinstance(module, nn.Module):
            raise TypeError(f"neuron must build a torch.nn.Module, got {type(module).__name__} from {self.make!r}")
        return module

    def __repr__(self) -> str:
        name = getattr(self.make, "__name__", repr(self.make))
        return f"NeuronFactory({name}, {self.kwargs})"


def neuron_factory(neuron: NeuronArg, surrogate: Surrogate | None = None, **kwargs) -> NeuronFactory:
    """Resolve a model's ``neuron`` argument (a registered name or a callable) into a
    ``NeuronFactory`` that passes ``surrogate`` (when given) and ``kwargs`` to each neuron."""
    if isinstance(neuron, NeuronFactory):
        make, base = neuron.make, dict(neuron.kwargs)
    elif isinstance(neuron, str):
        if neuron not in MODULES:
            raise ValueError(f"neuron must be a registered neuron name ({', '.join(MODULES)}) or a callable "
                             f"returning a module, got {neuron!r}")
        make, base = MODULES[neuron], {}
    elif callable(neuron):
        make, base = neuron, {}
    else:
        raise TypeError(f"neuron must be a registered neuron name or a callable returning a module, "
                        f"got {type(neuron).__name__}")
    if surrogate is not None:
        if not isinstance(surrogate, Surrogate):
            raise TypeError(f"surrogate must be a spikeforge.surrogate.Surrogate, got {surrogate!r}")
        base["surrogate"] = surrogate
    return NeuronFactory(make, {**base, **kwargs})


def conv_bn(in_channels: int, out_channels: int, kernel_size: int, stride: int = 1, padding: int = 0, *,
            bias: bool = False, dims: int = 2) -> TimeDistributed:
    """``Conv{dims}d`` then ``BatchNorm{dims}d`` on every step of ``(T, B, C, ...)`` with time
    folded into the batch, so the normalisation statistics are taken over time, batch and
    space together (tdBN with ``alpha = v_threshold = 1``; SpikingJelly's
    ``SeqToANNContainer(conv, bn)``)."""
    conv = (nn.Conv2d if dims == 2 else nn.Conv1d)(in_channels, out_channels, kernel_size, stride, padding,
                                                    bias=bias)
    norm = (nn.BatchNorm2d if dims == 2 else nn.BatchNorm1d)(out_channels)
    return TimeDistributed(nn.Sequential(conv, norm))


def check_images(x, in_channels: int, model: str, min_side: int = 1) -> Tensor:
    """``x`` must be a floating ``(T, B, C, H, W)`` tensor with ``C == in_channels`` and
    ``H, W >= min_side``."""
    if not isinstance(x, Tensor):
        raise TypeError(f"{model}: x must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() != 5:
        raise ValueError(f"{model}: x must have shape (T, B, C, H, W) (time first; repeat a static image over T), "
                         f"got shape {tuple(x.shape)}")
    if x.shape[2] != in_channels:
        raise ValueError(f"{model}: x must have in_channels={in_channels} channels at dim 2 of (T, B, C, H, W), "
                         f"got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"{model}: x must be a floating-point tensor, got dtype {x.dtype}")
    if min(x.shape[3:]) < min_side:
        raise ValueError(f"{model}: x must be at least {min_side}x{min_side} pixels (H, W), got shape {tuple(x.shape)}")
    return x


def check_step(model, x, in_channels: int, name: str) -> Tensor:
    """One step ``x`` of ``(B, C, H, W)`` for ``model.step``; the model must be in ``eval()``
    (its BatchNorm takes statistics over the whole sequence in training)."""
    if model.training:
        raise RuntimeError(f"{name} normalises over time and batch together, so it steps only in eval() mode; "
                           f"call net.eval() before stepping (or train on whole sequences)")
    if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != in_channels:
        shape = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"{name}.step: x must have shape (B, C={in_channels}, H, W) (one time step), got {shape}")
    return x


def call(module: nn.Module, x: Tensor) -> Tensor:
    """A whole-sequence call (the counterpart of ``spikeforge.step`` for one step)."""
    return module(x)


def positive_int(value, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def scaled(channels: int, width: float) -> int:
    """``channels * width`` rounded, at least 1."""
    return max(1, int(round(channels * width)))


def check_width(width) -> float:
    if isinstance(width, bool) or not isinstance(width, (int, float)) or not width > 0:
        raise ValueError(f"width must be a positive number (a multiplier of every layer's channels), got {width!r}")
    return float(width)
