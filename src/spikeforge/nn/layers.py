"""Layers for time-first sequences ``(T, B, ...)``.

``TimeDistributed`` runs any per-sample layer on every step by folding time into the
batch; the pools and ``Flatten`` are thin versions of it. ``TimeDropout`` draws one mask
per sequence; ``BatchNorm1d/2d`` normalise over time and batch together (tdBN);
``Recurrent`` feeds a neuron layer's spikes back into its input; ``Delay`` shifts spikes
by integer synaptic delays (see ``spikeforge.nn.delay``).

Every layer takes ``batch_first=True`` for ``(B, T, ...)`` input (as ``nn.LSTM``) and has
``step(x_t)`` for one time step ``(B, ...)`` (see ``spikeforge.step``). Layers that treat
time and batch alike (``TimeDistributed``, pools, ``Flatten``, ``BatchNorm``) give the same
result in either layout; the flag is accepted there so a network is configured once.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from ..functional import DEFAULT_SURROGATE
from ..surrogate import spike
from . import stream
from .neuron import Neuron
from .stream import detached_dict

__all__ = [
    "TimeDistributed", "Flatten", "TimeDropout", "time_dropout", "BatchNorm1d", "BatchNorm2d",
    "Recurrent", "MaxPool1d", "MaxPool2d", "AvgPool1d", "AvgPool2d", "AdaptiveAvgPool2d", "SumPool2d",
    "Scale", "Threshold", "Residual",
]


def _check_flag(name: str, value) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def _check_seq(x, name: str = "x", min_rank: int = 2) -> Tensor:
    if not isinstance(x, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.dim() < min_rank:
        raise ValueError(f"{name} must have shape (T, B, ...) with at least {min_rank} dims, "
                         f"got shape {tuple(x.shape)}")
    return x


class TimeDistributed(nn.Module):
    """Apply ``module`` to every time step of ``(T, B, ...)`` at once: time is folded into
    the batch, ``(T*B, ...)``, and unfolded again. For layers that treat samples
    independently (conv, pool, linear, norm in eval); see ``BatchNorm2d`` for training norm."""

    def __init__(self, module: nn.Module, *, batch_first: bool = False) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module
        self.batch_first = _check_flag("batch_first", batch_first)

    def forward(self, x: Tensor) -> Tensor:
        _check_seq(x)
        y = self.module(x.flatten(0, 1))
        if not isinstance(y, Tensor):
            raise TypeError(f"TimeDistributed needs a module that returns one tensor; "
                            f"{type(self.module).__name__} returned {type(y).__name__}")
        return y.unflatten(0, x.shape[:2])

    def step(self, x: Tensor) -> Tensor:
        """One step ``(B, ...)``: the wrapped module itself."""
        return self.module(x)


def _distributed(layer: type[nn.Module]) -> type[TimeDistributed]:
    def __init__(self, *args, batch_first: bool = False, **kwargs) -> None:
        TimeDistributed.__init__(self, layer(*args, **kwargs), batch_first=batch_first)

    doc = f"``torch.nn.{layer.__name__}`` on every step of ``(T, B, ...)`` (same arguments)."
    return type(layer.__name__, (TimeDistributed,), {"__init__": __init__, "__doc__": doc, "__module__": __name__})


MaxPool1d = _distributed(nn.MaxPool1d)
MaxPool2d = _distributed(nn.MaxPool2d)
AvgPool1d = _distributed(nn.AvgPool1d)
AvgPool2d = _distributed(nn.AvgPool2d)
AdaptiveAvgPool2d = _distributed(nn.AdaptiveAvgPool2d)


class SumPool2d(TimeDistributed):
    """Sum (not mean) over each window of ``(T, B, C, H, W)``: ``nn.AvgPool2d`` with
    ``divisor_override=1`` (zero padding counts as zeros); NIR's ``SumPool2d``."""

    def __init__(self, kernel_size, stride=None, padding=0, *, batch_first: bool = False) -> None:
        super().__init__(nn.AvgPool2d(kernel_size, stride, padding, divisor_override=1), batch_first=batch_first)


class Scale(nn.Module):
    """Elementwise gain over the features: ``y = x * scale`` (``scale`` broadcasts to the
    feature shape; a buffer, not trained); NIR's ``Scale``."""

    def __init__(self, scale, *, batch_first: bool = False) -> None:
        super().__init__()
        self.register_buffer("scale", torch.as_tensor(scale, dtype=torch.get_default_dtype()).clone())
        self.batch_first = _check_flag("batch_first", batch_first)

    def forward(self, x: Tensor) -> Tensor:
        return _check_seq(x) * self.scale

    def step(self, x: Tensor) -> Tensor:
        return x * self.scale


class Threshold(nn.Module):
    """Spikes where the input reaches ``threshold``: ``z = H(x - threshold)`` (no state; the
    surrogate gives the gradient); NIR's ``Threshold``."""

    def __init__(self, threshold, surrogate=None, *, batch_first: bool = False) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.as_tensor(threshold, dtype=torch.get_default_dtype()).clone())
        self.surrogate = DEFAULT_SURROGATE if surrogate is None else surrogate
        self.batch_first = _check_flag("batch_first", batch_first)

    def forward(self, x: Tensor) -> Tensor:
        return self.step(_check_seq(x))

    def step(self, x: Tensor) -> Tensor:
        return spike(x - self.threshold, self.surrogate)


class Residual(nn.Module):
    """A skip connection: ``y = x + module(x)`` (``module`` keeps the shape), per sequence
    and per step."""

    def __init__(self, module: nn.Module) -> None:
        super().__init__()
        if not isinstance(module, nn.Module):
            raise TypeError(f"module must be a torch.nn.Module, got {type(module).__name__}")
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return x + self.module(x)

    def step(self, x: Tensor) -> Tensor:
        return x + stream.step(self.module, x)


class Flatten(nn.Module):
    """Flatten the feature dims, keeping ``(T, B)``: ``(T, B, C, H, W) -> (T, B, C*H*W)``."""

    def __init__(self, start_dim: int = 2, *, batch_first: bool = False) -> None:
        super().__init__()
        if isinstance(start_dim, bool) or not isinstance(start_dim, int) or start_dim < 2:
            raise ValueError(f"start_dim must be an int >= 2 (dims 0 and 1 are time and batch), got {start_dim!r}")
        self.start_dim = start_dim
        self.batch_first = _check_flag("batch_first", batch_first)

    def forward(self, x: Tensor) -> Tensor:
        return _check_seq(x, min_rank=self.start_dim).flatten(self.start_dim)

    def step(self, x: Tensor) -> Tensor:
        return _check_seq(x, min_rank=self.start_dim - 1).flatten(self.start_dim - 1)

    def extra_repr(self) -> str:
        return f"start_dim={self.start_dim}"


def _check_p(p) -> float:
    if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
        raise ValueError(f"p must be a probability in [0, 1], got {p!r}")
    return float(p)


def time_dropout(x: Tensor, p: float, training: bool = True, generator: torch.Generator | None = None,
                 batch_first: bool = False) -> Tensor:
    """Dropout with one mask per sequence: an element of ``(B, ...)`` is zeroed at every step
    or at none; kept elements are scaled by ``1 / (1 - p)``. Identity when not ``training``."""
    _check_seq(x)
    p = _check_p(p)
    if not training or p == 0.0:
        return x
    if p == 1.0:
        return x * 0.0
    shape = (x.shape[0], 1, *x.shape[2:]) if batch_first else x.shape[1:]
    keep = torch.full(shape, 1.0 - p, dtype=x.dtype, device=x.device)
    return x * (torch.bernoulli(keep, generator=generator) / (1.0 - p))


class TimeDropout(nn.Module):
    """``time_dropout(x, p, self.training)``: one dropout mask per sequence, shared over time."""

    def __init__(self, p: float = 0.5, *, batch_first: bool = False) -> None:
        super().__init__()
        self.p = _check_p(p)
        self.batch_first = _check_flag("batch_first", batch_first)

    def forward(self, x: Tensor) -> Tensor:
        return time_dropout(x, self.p, self.training, batch_first=self.batch_first)

    def step(self, x: Tensor) -> Tensor:
        if self.training and self.p > 0:
            raise RuntimeError("TimeDropout draws one mask per sequence, so it cannot be stepped in training "
                               "mode; call net.eval() before stepping (or train on whole sequences)")
        return x

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _TimeBatchNorm(nn.Module):
    _norm: type[nn.Module] = nn.Module
    _ranks: tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float | None = 0.1, affine: bool = True,
                 track_running_stats: bool = True, *, alpha: float = 1.0, v_threshold: float = 1.0,
                 batch_first: bool = False) -> None:
        super().__init__()
        self.batch_first = _check_flag("batch_first", batch_first)
        self.norm = self._norm(num_features, eps, momentum, affine=False, track_running_stats=track_running_stats)
        self.scale = float(alpha) * float(v_threshold)
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features))
            self.bias = nn.Parameter(torch.zeros(num_features))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)

    def forward(self, x: Tensor) -> Tensor:
        _check_seq(x)
        if x.dim() not in self._ranks:
            raise ValueError(f"x must have {' or '.join(map(str, self._ranks))} dims (T, B, C, ...) for "
                             f"{type(self).__name__}, got shape {tuple(x.shape)}")
        return self._normalise(x.flatten(0, 1)).unflatten(0, x.shape[:2])

    def _normalise(self, y: Tensor) -> Tensor:
        y = self.norm(y)
        shape = (-1,) + (1,) * (y.dim() - 2)
        if self.weight is not None:
            y = y * (self.weight * self.scale).view(shape) + self.bias.view(shape)
        elif self.scale != 1.0:
            y = y * self.scale
        return y

    def step(self, x: Tensor) -> Tensor:
        """One step ``(B, C, ...)`` normalised with the running estimates (``eval()`` only:
        training statistics are taken over the whole sequence)."""
        if self.training or not self.norm.track_running_stats:
            raise RuntimeError(f"{type(self).__name__} normalises over time and batch together, so it steps only "
                               f"in eval() mode with running statistics; call net.eval() before stepping")
        if x.dim() + 1 not in self._ranks:
            raise ValueError(f"x must have {' or '.join(str(r - 1) for r in self._ranks)} dims (B, C, ...) for "
                             f"{type(self).__name__}.step, got shape {tuple(x.shape)}")
        return self._normalise(x)

    def extra_repr(self) -> str:
        return f"scale=alpha*v_threshold={self.scale:g}, affine={self.weight is not None}"


class BatchNorm1d(_TimeBatchNorm):
    """Threshold-dependent batch norm (tdBN, Zheng et al. 2021) of ``(T, B, C)`` or
    ``(T, B, C, L)``, per channel C:
    ``y = weight * alpha * v_threshold * (x - mean) / sqrt(var + eps) + bias``
    (``bias`` is not scaled; without ``affine``, ``weight = 1`` and ``bias = 0``).

    In training, ``mean`` and ``var`` (biased) are those of this input over time, batch (and
    ``L``) together, and they update the running estimates (``momentum`` as in
    ``nn.BatchNorm1d``); in ``eval()`` the running estimates are used, so every step and
    sample is normalised alike (with ``track_running_stats=False``, this input's statistics
    again). ``weight`` and ``bias`` are this module's; the running estimates live in
    ``self.norm`` (an ``nn.BatchNorm1d`` without affine parameters, run on time folded into
    the batch)."""

    _norm = nn.BatchNorm1d
    _ranks = (3, 4)


class BatchNorm2d(_TimeBatchNorm):
    """tdBN of ``(T, B, C, H, W)``, per channel C: ``BatchNorm1d``'s equation, options and
    training/eval behaviour, with ``mean`` and ``var`` over time, batch, H and W together
    (``self.norm`` is an ``nn.BatchNorm2d`` without affine parameters, run on ``(T * B, C, H, W)``)."""

    _norm = nn.BatchNorm2d
    _ranks = (5,)


class Recurrent(nn.Module):
    """A neuron layer whose spikes are fed back through ``recurrent`` (a weight module, or
    ``hidden_size`` for a ``Linear(hidden_size, hidden_size)``): at each step
    ``z_t = neuron.step(x_t + recurrent(z_{t-1}))`` with ``z_{-1} = 0``. It runs step by
    step (the feedback needs each spike before the next input). The input ``x`` is
    ``(T, B, hidden)`` — project it first, e.g. with ``nn.Linear``. Starts from rest unless
    the neuron has ``carry_state=True``; ``neuron.record`` fills ``neuron.trace`` as usual."""

    def __init__(self, neuron: Neuron, recurrent: int | nn.Module, *, bias: bool = False,
                 batch_first: bool = False) -> None:
        super().__init__()
        self.batch_first = _check_flag("batch_first", batch_first)
        if not isinstance(neuron, Neuron):
            raise TypeError(f"neuron must be a spikeforge.nn.Neuron layer, got {type(neuron).__name__}")
        if isinstance(recurrent, bool) or not isinstance(recurrent, (int, nn.Module)):
            raise TypeError(f"recurrent must be a hidden size (int) or a torch.nn.Module, got {recurrent!r}")
        if isinstance(recurrent, int):
            if recurrent < 1:
                raise ValueError(f"recurrent (the hidden size) must be >= 1, got {recurrent}")
            recurrent = nn.Linear(recurrent, recurrent, bias=bias)
        self.neuron = neuron
        self.recurrent = recurrent
        self.last_spikes: Tensor | None = None

    def step(self, x: Tensor) -> Tensor:
        """One step on ``(B, hidden)``; neuron state and last spikes carry to the next call."""
        prev = self.last_spikes if self.neuron.state is not None else None
        if prev is None:
            prev = torch.zeros_like(x)
        self.last_spikes = self.neuron.step(x + self.recurrent(prev))
        return self.last_spikes

    def forward(self, x: Tensor) -> Tensor:
        t = 1 if self.batch_first else 0
        if _check_seq(x, min_rank=3).shape[t] < 1:
            raise ValueError(f"x must hold at least one time step, got shape {tuple(x.shape)}")
        carry = self.neuron.carry_state
        if not carry:
            self.reset()
        self.neuron.trace = None          # the steps below append to it when neuron.record
        out = torch.stack([self.step(x_t) for x_t in x.unbind(t)], dim=t)
        trace = self.neuron.trace
        if not carry:
            self.reset()
        self.neuron.trace = trace
        return out

    def reset(self) -> None:
        self.neuron.reset()
        self.last_spikes = None

    def __getstate__(self):
        return detached_dict(self, "last_spikes")
