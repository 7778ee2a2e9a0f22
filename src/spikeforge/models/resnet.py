"""Spiking ResNet (He et al. 2016, ReLU -> neuron) and SEW-ResNet (Fang et al. 2021,
"Deep Residual Learning in Spiking Neural Networks"), with basic blocks (ResNet-18/34).

Spiking ResNet block (the residual is added to the membrane input of the last neuron):
``z = SN(BN(conv(SN(BN(conv(x))))) + shortcut(x))``, ``shortcut`` = identity or conv1x1 + BN.

SEW block (the residual is added to the spikes): ``a = SN(BN(conv(SN(BN(conv(s))))))``,
``out = g(a, shortcut(s))`` with ``shortcut`` = identity or conv1x1 + BN + SN and the connect
function ``g`` = ADD ``a + s``, AND ``a * s`` or IAND ``(1 - a) * s`` (``ConnectFunction``).

The stem is torchvision's (conv7x7/2 + BN + SN + maxpool3x3/2, ``Stem.IMAGENET``) or, for
small images, conv3x3/1 + BN + SN (``Stem.SMALL``). At the paper configuration (``width=1``,
ImageNet stem, 1000 classes) the parameter count is torchvision's: 11,689,512 (ResNet-18)
and 21,797,672 (ResNet-34), the same for SEW (its connect functions have no parameters).
"""
from __future__ import annotations

from enum import Enum
from functools import partial

from torch import Tensor, nn

from ..nn import AdaptiveAvgPool2d, Flatten, MaxPool2d
from ..nn.stream import step
from ..surrogate import Surrogate
from ._blocks import (NeuronArg, NeuronFactory, call, check_images, check_step, check_width, conv_bn, neuron_factory,
                      positive_int, scaled)

__all__ = ["ConnectFunction", "Stem", "SpikingBasicBlock", "SEWBasicBlock", "SpikingResNet",
           "resnet18", "resnet34", "sew_resnet18", "sew_resnet34"]


def _add(a: Tensor, s: Tensor) -> Tensor:
    return a + s


def _and(a: Tensor, s: Tensor) -> Tensor:
    return a * s


def _iand(a: Tensor, s: Tensor) -> Tensor:
    return (1.0 - a) * s


class ConnectFunction(Enum):
    """SEW's element-wise connect function ``g(a, s)`` of the block's output spikes ``a``
    and its shortcut ``s``: ADD ``a + s`` (outputs may exceed 1), AND ``a * s``, IAND
    ``(1 - a) * s`` (not-a and s)."""

    ADD = "add"
    AND = "and"
    IAND = "iand"

    def __call__(self, a: Tensor, s: Tensor) -> Tensor:
        return _CONNECT[self](a, s)


_CONNECT = {ConnectFunction.ADD: _add, ConnectFunction.AND: _and, ConnectFunction.IAND: _iand}


class Stem(Enum):
    """The layers before the first stage: IMAGENET conv7x7/2 + maxpool3x3/2 (divides the
    side by 4; torchvision's), SMALL conv3x3/1 without pooling (CIFAR-sized inputs)."""

    IMAGENET = "imagenet"
    SMALL = "small"


class SpikingBasicBlock(nn.Module):
    """Spiking ResNet basic block: the shortcut joins the membrane input of the last neuron."""

    def __init__(self, in_channels: int, channels: int, stride: int, make: NeuronFactory) -> None:
        super().__init__()
        self.conv_bn1, self.sn1 = conv_bn(in_channels, channels, 3, stride, 1), make()
        self.conv_bn2, self.sn2 = conv_bn(channels, channels, 3, 1, 1), make()
        self.shortcut = (conv_bn(in_channels, channels, 1, stride) if stride != 1 or in_channels != channels
                         else nn.Identity())

    def forward(self, x: Tensor, run=call) -> Tensor:
        branch = run(self.conv_bn2, run(self.sn1, run(self.conv_bn1, x)))
        return run(self.sn2, branch + run(self.shortcut, x))

    def step(self, x: Tensor) -> Tensor:
        return self.forward(x, step)


class SEWBasicBlock(nn.Module):
    """Spike-element-wise basic block: ``connect(SN(BN(conv(SN(BN(conv(s)))))), shortcut(s))``."""

    def __init__(self, in_channels: int, channels: int, stride: int, make: NeuronFactory,
                 connect: ConnectFunction = ConnectFunction.ADD) -> None:
        super().__init__()
        if not isinstance(connect, ConnectFunction):
            raise TypeError(f"connect must be a ConnectFunction (ADD, AND, IAND), got {connect!r}")
        self.connect = connect
        self.conv_bn1, self.sn1 = conv_bn(in_channels, channels, 3, stride, 1), make()
        self.conv_bn2, self.sn2 = conv_bn(channels, channels, 3, 1, 1), make()
        self.shortcut = (nn.Sequential(conv_bn(in_channels, channels, 1, stride), make())
                         if stride != 1 or in_channels != channels else nn.Identity())

    def forward(self, x: Tensor, run=call) -> Tensor:
        a = run(self.sn2, run(self.conv_bn2, run(self.sn1, run(self.conv_bn1, x))))
        return self.connect(a, run(self.shortcut, x))

    def step(self, x: Tensor) -> Tensor:
        return self.forward(x, step)

    def extra_repr(self) -> str:
        return f"connect={self.connect.name}"


class SpikingResNet(nn.Module):
    """A (SEW-)ResNet of basic blocks on ``(T, B, in_channels, H, W)``; returns per-step
    logits ``(T, B, num_classes)`` (classify with ``out.mean(0)``).

    ``block``: ``SpikingBasicBlock`` or ``partial(SEWBasicBlock, connect=...)``; ``layers``:
    blocks per stage (``(2, 2, 2, 2)`` for 18 layers, ``(3, 4, 6, 3)`` for 34); stage widths
    are ``64, 128, 256, 512`` times ``width``; ``stem``: a ``Stem``."""

    def __init__(self, block, layers: tuple[int, ...], *, num_classes: int = 1000, in_channels: int = 3,
                 width: float = 1.0, stem: Stem = Stem.IMAGENET, neuron: NeuronArg = "LIF",
                 surrogate: Surrogate | None = None, name: str = "SpikingResNet", **neuron_kwargs) -> None:
        super().__init__()
        if not isinstance(stem, Stem):
            raise TypeError(f"stem must be a Stem (IMAGENET, SMALL), got {stem!r}")
        self.in_channels = positive_int(in_channels, "in_channels")
        positive_int(num_classes, "num_classes")
        width, self.name = check_width(width), name
        make = neuron_factory(neuron, surrogate, **neuron_kwargs)
        c = scaled(64, width)
        if stem is Stem.IMAGENET:
            self.stem = nn.Sequential(conv_bn(in_channels, c, 7, 2, 3), make(), MaxPool2d(3, 2, 1))
        else:
            self.stem = nn.Sequential(conv_bn(in_channels, c, 3, 1, 1), make())
        stages = []
        for i, n in enumerate(layers):
            out = scaled(64 * 2 ** i, width)
            blocks = [block(c, out, 1 if i == 0 else 2, make)]
            blocks += [block(out, out, 1, make) for _ in range(positive_int(n, f"layers[{i}]") - 1)]
            stages.append(nn.Sequential(*blocks))
            c = out
        self.stages = nn.Sequential(*stages)
        self.head = nn.Sequential(AdaptiveAvgPool2d((1, 1)), Flatten(), nn.Linear(c, num_classes))
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, self.name)
        return self.head(self.stages(self.stem(x)))

    def step(self, x: Tensor) -> Tensor:
        """One time step ``(B, C, H, W) -> (B, num_classes)`` in ``eval()`` (``spikeforge.step``)."""
        check_step(self, x, self.in_channels, self.name)
        return step(self.head, step(self.stages, step(self.stem, x)))


def _init_weights(model: nn.Module) -> None:
    """torchvision's ResNet initialisation (the fc layer keeps PyTorch's default)."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


_DEPTHS = {18: (2, 2, 2, 2), 34: (3, 4, 6, 3)}


def _resnet(depth: int, sew: ConnectFunction | None, num_classes: int, in_channels: int, neuron: NeuronArg,
            surrogate: Surrogate | None, kwargs: dict) -> SpikingResNet:
    block = SpikingBasicBlock if sew is None else partial(SEWBasicBlock, connect=sew)
    name = f"resnet{depth}" if sew is None else f"sew_resnet{depth}"
    return SpikingResNet(block, _DEPTHS[depth], num_classes=num_classes, in_channels=in_channels, neuron=neuron,
                         surrogate=surrogate, name=name, **kwargs)


def resnet18(*, num_classes: int = 1000, in_channels: int = 3, neuron: NeuronArg = "LIF",
             surrogate: Surrogate | None = None, **kwargs) -> SpikingResNet:
    """Spiking ResNet-18; ``kwargs``: ``width``, ``stem`` and the neurons' keyword arguments."""
    return _resnet(18, None, num_classes, in_channels, neuron, surrogate, kwargs)


def resnet34(*, num_classes: int = 1000, in_channels: int = 3, neuron: NeuronArg = "LIF",
             surrogate: Surrogate | None = None, **kwargs) -> SpikingResNet:
    """Spiking ResNet-34; options as ``resnet18``."""
    return _resnet(34, None, num_classes, in_channels, neuron, surrogate, kwargs)


def sew_resnet18(*, num_classes: int = 1000, in_channels: int = 3, connect: ConnectFunction = ConnectFunction.ADD,
                 neuron: NeuronArg = "LIF", surrogate: Surrogate | None = None, **kwargs) -> SpikingResNet:
    """SEW-ResNet-18 with the connect function ``connect``; options as ``resnet18``."""
    return _resnet(18, _check_connect(connect), num_classes, in_channels, neuron, surrogate, kwargs)


def sew_resnet34(*, num_classes: int = 1000, in_channels: int = 3, connect: ConnectFunction = ConnectFunction.ADD,
                 neuron: NeuronArg = "LIF", surrogate: Surrogate | None = None, **kwargs) -> SpikingResNet:
    """SEW-ResNet-34 with the connect function ``connect``; options as ``resnet18``."""
    return _resnet(34, _check_connect(connect), num_classes, in_channels, neuron, surrogate, kwargs)


def _check_connect(connect) -> ConnectFunction:
    if not isinstance(connect, ConnectFunction):
        raise TypeError(f"connect must be a ConnectFunction (ADD, AND, IAND), got {connect!r}")
    return connect
