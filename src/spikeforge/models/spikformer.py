"""Spikformer (Zhou et al. 2023, "Spikformer: When Spiking Neural Network Meets Transformer",
ICLR): a spiking patch splitting stem (SPS), ``depth`` encoder blocks of spiking self-attention
(``spikeforge.nn.SpikingSelfAttention``) and a spiking MLP, each with a residual
connection, then a linear head on the tokens' mean.

SPS: four ``conv3x3 -> BN -> SN`` stages with ``dim/8, dim/4, dim/2, dim`` channels, a 3x3/2
max pool after each of the last ``log2(patch_size)`` stages, then a relative position
embedding ``x + SN(BN(conv3x3(x)))``. Block: ``x = x + SSA(x)``, ``x = x + MLP(x)`` with
``MLP = SN(BN(W_2 SN(BN(W_1 x))))`` (1x1, ``mlp_ratio * dim`` hidden, with bias as in the
paper's ImageNet code; ``mlp_bias=False`` as SpikingJelly's). Parameter counts: 16.81 M for
Spikformer-8-384 on ImageNet and 9.32 M for Spikformer-4-384 on CIFAR-10 (the paper's Tables).
"""
from __future__ import annotations

import math

from torch import Tensor, nn

from ..nn import MaxPool2d, TimeDistributed
from ..nn.attention import SpikingSelfAttention
from ..nn.stream import step
from ..surrogate import Surrogate
from ._blocks import NeuronArg, NeuronFactory, call, check_images, check_step, conv_bn, neuron_factory, positive_int

__all__ = ["SpikformerMLP", "SpikformerBlock", "SpikingPatchSplitting", "Spikformer", "spikformer"]


class SpikingPatchSplitting(nn.Module):
    """SPS: ``(T, B, C, H, W) -> (T, B, dim, H / patch_size, W / patch_size)`` spikes (plus the
    position embedding's, so values up to 2)."""

    def __init__(self, in_channels: int, dim: int, patch_size: int, make: NeuronFactory) -> None:
        super().__init__()
        if patch_size not in (1, 2, 4, 8, 16):
            raise ValueError(f"patch_size must be 1, 2, 4, 8 or 16 (one 2x pool per stage), got {patch_size!r}")
        if dim % 8:
            raise ValueError(f"dim must be a multiple of 8 (SPS stages have dim/8, dim/4, dim/2, dim channels), "
                             f"got {dim}")
        pools = int(math.log2(patch_size))
        layers, c = [], in_channels
        for i, out in enumerate((dim // 8, dim // 4, dim // 2, dim)):
            layers += [conv_bn(c, out, 3, 1, 1), make()]
            if i >= 4 - pools:
                layers.append(MaxPool2d(3, 2, 1))
            c = out
        self.stages = nn.Sequential(*layers)
        self.rpe = nn.Sequential(conv_bn(dim, dim, 3, 1, 1), make())

    def forward(self, x: Tensor, run=call) -> Tensor:
        x = run(self.stages, x)
        return x + run(self.rpe, x)

    def step(self, x: Tensor) -> Tensor:
        return self.forward(x, step)


class SpikformerMLP(nn.Module):
    """``SN(BN(W_2 SN(BN(W_1 x))))`` on tokens ``(T, B, dim, N)``, 1x1 convolutions."""

    def __init__(self, dim: int, hidden: int, make: NeuronFactory, bias: bool = True) -> None:
        super().__init__()
        self.fc1 = TimeDistributed(nn.Sequential(nn.Conv1d(dim, hidden, 1, bias=bias), nn.BatchNorm1d(hidden)))
        self.sn1 = make()
        self.fc2 = TimeDistributed(nn.Sequential(nn.Conv1d(hidden, dim, 1, bias=bias), nn.BatchNorm1d(dim)))
        self.sn2 = make()

    def forward(self, x: Tensor, run=call) -> Tensor:
        return run(self.sn2, run(self.fc2, run(self.sn1, run(self.fc1, x))))

    def step(self, x: Tensor) -> Tensor:
        return self.forward(x, step)


class SpikformerBlock(nn.Module):
    """``x + SSA(x)`` then ``+ MLP``, on tokens ``(T, B, dim, N)``."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: float, make: NeuronFactory, mlp_bias: bool = True):
        super().__init__()
        self.attn = SpikingSelfAttention(dim, num_heads, make)
        self.mlp = SpikformerMLP(dim, int(dim * mlp_ratio), make, mlp_bias)

    def forward(self, x: Tensor, run=call) -> Tensor:
        x = x + run(self.attn, x)
        return x + run(self.mlp, x)

    def step(self, x: Tensor) -> Tensor:
        return self.forward(x, step)


class Spikformer(nn.Module):
    """Spikformer-``depth``-``dim`` on ``(T, B, in_channels, H, W)`` (H and W multiples of
    ``patch_size``); returns per-step logits ``(T, B, num_classes)`` of the tokens' mean
    (classify with ``out.mean(0)``, which equals the paper's head on the time-mean)."""

    def __init__(self, *, num_classes: int = 1000, in_channels: int = 3, dim: int = 384, depth: int = 8,
                 num_heads: int = 12, mlp_ratio: float = 4.0, patch_size: int = 16, mlp_bias: bool = True,
                 neuron: NeuronArg = "LIF", surrogate: Surrogate | None = None, **neuron_kwargs) -> None:
        super().__init__()
        self.in_channels = positive_int(in_channels, "in_channels")
        for name, value in (("num_classes", num_classes), ("depth", depth), ("dim", dim), ("num_heads", num_heads)):
            positive_int(value, name)
        if isinstance(mlp_ratio, bool) or not isinstance(mlp_ratio, (int, float)) or not mlp_ratio * dim >= 1:
            raise ValueError(f"mlp_ratio must be a positive number (mlp_ratio * dim >= 1), got {mlp_ratio!r}")
        if not isinstance(mlp_bias, bool):
            raise TypeError(f"mlp_bias must be True or False, got {mlp_bias!r}")
        if dim % num_heads:
            raise ValueError(f"dim must be divisible by num_heads, got dim={dim}, num_heads={num_heads}")
        self.patch_size = patch_size
        make = neuron_factory(neuron, surrogate, **neuron_kwargs)
        self.patch_embed = SpikingPatchSplitting(in_channels, dim, patch_size, make)
        self.blocks = nn.Sequential(*(SpikformerBlock(dim, num_heads, mlp_ratio, make, mlp_bias)
                                      for _ in range(depth)))
        self.head = nn.Linear(dim, num_classes)
        self.name = f"Spikformer-{depth}-{dim}"
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, self.name)
        if x.shape[3] % self.patch_size or x.shape[4] % self.patch_size:
            raise ValueError(f"{self.name}: x's height and width must be multiples of patch_size={self.patch_size}, "
                             f"got shape {tuple(x.shape)}")
        tokens = self.blocks(self.patch_embed(x).flatten(3))      # (T, B, dim, N)
        return self.head(tokens.mean(3))

    def step(self, x: Tensor) -> Tensor:
        """One time step ``(B, C, H, W) -> (B, num_classes)`` in ``eval()`` (``spikeforge.step``)."""
        check_step(self, x, self.in_channels, self.name)
        tokens = step(self.blocks, self.patch_embed.step(x).flatten(2))     # (B, dim, N)
        return self.head(tokens.mean(2))


def _init_weights(model: nn.Module) -> None:
    """The paper code's initialisation: truncated normal (std 0.02) for the linear head, biases 0."""
    for m in model.modules():
        if isinstance(m, nn.Linear):
            nn.init.trunc_normal_(m.weight, std=0.02)
            nn.init.zeros_(m.bias)


def spikformer(*, num_classes: int = 1000, in_channels: int = 3, dim: int = 384, depth: int = 8,
               num_heads: int = 12, patch_size: int = 16, neuron: NeuronArg = "LIF",
               surrogate: Surrogate | None = None, **kwargs) -> Spikformer:
    """Spikformer-``depth``-``dim`` (default: Spikformer-8-384, ImageNet, 224x224 inputs,
    16x16 patches). CIFAR-10's Spikformer-4-384: ``depth=4, patch_size=4, num_classes=10``
    on 32x32. ``kwargs``: ``mlp_ratio``, ``mlp_bias`` and the neurons' keyword arguments (the
    paper's LIF: ``tau=2.0, detach_reset=True``)."""
    return Spikformer(num_classes=num_classes, in_channels=in_channels, dim=dim, depth=depth, num_heads=num_heads,
                      patch_size=patch_size, neuron=neuron, surrogate=surrogate, **kwargs)
