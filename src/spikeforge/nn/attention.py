"""Spiking self-attention (SSA; Zhou et al. 2023, "Spikformer: When Spiking Neural Network
Meets Transformer", ICLR) on time-first token sequences ``(T, B, D, N)`` (D channels, N tokens).

``Q, K, V = SN(BN(W_{q,k,v} x))`` are spike tensors, so ``Q K^T`` is non-negative and needs no
softmax: ``SSA(x) = SN(BN(W_o SN_attn(Q K^T V * scale)))`` per head, with ``SN_attn`` firing at
``v_threshold = attn_threshold`` (0.5 in the paper) and ``scale = 0.125``. Without a softmax the
product is associative, so it is computed as ``Q (K^T V)`` when there are more tokens than
channels per head (cost ``N d^2`` instead of ``N^2 d``).
"""
from __future__ import annotations

from typing import Callable

from torch import Tensor, nn

from .layers import TimeDistributed
from .stream import step

__all__ = ["SpikingSelfAttention", "spiking_attention"]


def spiking_attention(q: Tensor, k: Tensor, v: Tensor, scale: float) -> Tensor:
    """``(Q K^T V) * scale`` for channel-first heads ``(..., d, N)`` (each column a token):
    returns ``(..., d, N)``, the transpose of ``softmax``-free attention ``Q K^T V``."""
    d, n = q.shape[-2:]
    if n > d:       # (V^T K) Q^T: d x d in the middle
        return (v @ k.transpose(-2, -1)) @ q * scale
    return v @ (k.transpose(-2, -1) @ q) * scale


def _call(module: nn.Module, x: Tensor) -> Tensor:
    return module(x)


def _conv_bn1d(c_in: int, c_out: int) -> TimeDistributed:
    return TimeDistributed(nn.Sequential(nn.Conv1d(c_in, c_out, 1, bias=False), nn.BatchNorm1d(c_out)))


class SpikingSelfAttention(nn.Module):
    """SSA over ``(T, B, dim, N)``; returns ``(T, B, dim, N)`` spikes. ``neuron`` builds each
    neuron layer: it is called as ``neuron()`` and, for the attention neuron, as
    ``neuron(v_threshold=attn_threshold)`` (a neuron class such as ``spikeforge.nn.LIF`` or
    a ``spikeforge.models`` neuron factory). Q, K and V come from one 1x1 convolution without
    bias (``dim -> 3 dim``) and one BatchNorm, as three separate ones would give (same
    parameter count)."""

    def __init__(self, dim: int, num_heads: int, neuron: Callable[..., nn.Module], *, scale: float = 0.125,
                 attn_threshold: float = 0.5) -> None:
        super().__init__()
        for name, value in (("dim", dim), ("num_heads", num_heads)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive int, got {value!r}")
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        if not callable(neuron):
            raise TypeError(f"neuron must be a callable returning a neuron module, got {type(neuron).__name__}")
        self.dim, self.num_heads, self.scale = dim, num_heads, float(scale)
        self.qkv, self.qkv_sn = _conv_bn1d(dim, 3 * dim), neuron()
        self.attn_sn = neuron(v_threshold=attn_threshold)
        self.proj, self.proj_sn = _conv_bn1d(dim, dim), neuron()

    def forward(self, x: Tensor) -> Tensor:
        return self._run(self._check(x, 4, "(T, B, dim={}, N)"), _call)

    def step(self, x: Tensor) -> Tensor:
        """One time step ``(B, dim, N)``: attention is within each step, so a stream of steps
        equals the sequence call (BatchNorm in ``eval()``)."""
        return self._run(self._check(x, 3, "(B, dim={}, N) for step"), step)

    def _check(self, x, rank: int, shape: str) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != rank or x.shape[-2] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise ValueError(f"SpikingSelfAttention: x must have shape {shape.format(self.dim)}, got {got}")
        return x

    def _run(self, x: Tensor, run) -> Tensor:
        lead, n = x.shape[:-2], x.shape[-1]
        qkv = run(self.qkv_sn, run(self.qkv, x)).reshape(*lead, 3, self.num_heads, self.dim // self.num_heads, n)
        q, k, v = qkv.unbind(-4)
        y = spiking_attention(q, k, v, self.scale).reshape(*lead, self.dim, n)
        return run(self.proj_sn, run(self.proj, run(self.attn_sn, y)))

    def extra_repr(self) -> str:
        return f"dim={self.dim}, num_heads={self.num_heads}, scale={self.scale}"

