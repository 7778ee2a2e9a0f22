"""Spiking VGG (Simonyan & Zisserman 2015, configurations A = VGG-11 and D = VGG-16) with
every ReLU replaced by a neuron layer, as SpikingJelly's ``spiking_vgg``.

Layout (torchvision's ``VGG``, time-first): per stage ``[conv3x3 (+ BN) -> neuron] * n`` then
``MaxPool2d(2)``; ``AdaptiveAvgPool2d(pool_size)``; classifier ``Linear -> neuron -> dropout ->
Linear -> neuron -> dropout -> Linear``. At the paper configuration (``width=1``,
``hidden=4096``, ``pool_size=7``, 1000 classes) the parameter count is torchvision's
(132,868,840 for ``vgg11(batch_norm=True)``; the neurons add none unless they learn some).
"""
from __future__ import annotations

from enum import Enum

from torch import Tensor, nn

from ..nn import AdaptiveAvgPool2d, Flatten, MaxPool2d, TimeDistributed, TimeDropout
from ..nn.stream import step
from ..surrogate import Surrogate
from ._blocks import NeuronArg, check_images, check_step, check_width, neuron_factory, positive_int, scaled

__all__ = ["VGGConfig", "SpikingVGG", "vgg11", "vgg16"]


class VGGConfig(Enum):
    """Output channels of the 3x3 convolutions, stage by stage (each stage ends in a 2x2 max pool)."""

    VGG11 = ((64,), (128,), (256, 256), (512, 512), (512, 512))
    VGG13 = ((64, 64), (128, 128), (256, 256), (512, 512), (512, 512))
    VGG16 = ((64, 64), (128, 128), (256, 256, 256), (512, 512, 512), (512, 512, 512))
    VGG19 = ((64, 64), (128, 128), (256,) * 4, (512,) * 4, (512,) * 4)


class SpikingVGG(nn.Module):
    """A spiking VGG on ``(T, B, in_channels, H, W)``; returns per-step logits
    ``(T, B, num_classes)`` (classify with their mean over time, ``out.mean(0)``).

    ``width`` multiplies every convolution's channels; ``hidden`` is the classifier's width
    and ``pool_size`` the side of the adaptive average pool before it (the paper: 4096 and 7;
    ``pool_size=1`` and a small ``hidden`` suit 32x32 inputs). Convolutions keep their bias
    (as torchvision), also with ``batch_norm``. ``dropout`` uses one mask per sequence."""

    def __init__(self, config: VGGConfig, *, num_classes: int = 1000, in_channels: int = 3, batch_norm: bool = True,
                 width: float = 1.0, hidden: int = 4096, pool_size: int = 7, dropout: float = 0.5,
                 neuron: NeuronArg = "LIF", surrogate: Surrogate | None = None, **neuron_kwargs) -> None:
        super().__init__()
        if not isinstance(config, VGGConfig):
            raise TypeError(f"config must be a VGGConfig, got {config!r}")
        if not isinstance(batch_norm, bool):
            raise TypeError(f"batch_norm must be True or False, got {batch_norm!r}")
        self.in_channels = positive_int(in_channels, "in_channels")
        for name, value in (("num_classes", num_classes), ("hidden", hidden), ("pool_size", pool_size)):
            positive_int(value, name)
        width = check_width(width)
        make = neuron_factory(neuron, surrogate, **neuron_kwargs)
        layers: list[nn.Module] = []
        c_in = in_channels
        for stage in config.value:
            for c in stage:
                c_out = scaled(c, width)
                conv = nn.Conv2d(c_in, c_out, 3, padding=1)
                layers += [TimeDistributed(nn.Sequential(conv, nn.BatchNorm2d(c_out)) if batch_norm else conv), make()]
                c_in = c_out
            layers.append(MaxPool2d(2, 2))
        self.features = nn.Sequential(*layers)
        self.avgpool = AdaptiveAvgPool2d((pool_size, pool_size))
        self.classifier = nn.Sequential(
            Flatten(), nn.Linear(c_in * pool_size * pool_size, hidden), make(), TimeDropout(dropout),
            nn.Linear(hidden, hidden), make(), TimeDropout(dropout), nn.Linear(hidden, num_classes))
        self.name = config.name
        self.min_side = 2 ** len(config.value)     # one 2x2 max pool per stage
        _init_weights(self)

    def forward(self, x: Tensor) -> Tensor:
        check_images(x, self.in_channels, self.name, self.min_side)
        return self.classifier(self.avgpool(self.features(x)))

    def step(self, x: Tensor) -> Tensor:
        """One time step ``(B, C, H, W) -> (B, num_classes)`` in ``eval()`` (``spikeforge.step``)."""
        check_step(self, x, self.in_channels, self.name)
        return step(self.classifier, step(self.avgpool, step(self.features, x)))


def _init_weights(model: nn.Module) -> None:
    """torchvision's VGG initialisation."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)


def vgg11(*, num_classes: int = 1000, in_channels: int = 3, neuron: NeuronArg = "LIF",
          surrogate: Surrogate | None = None, **kwargs) -> SpikingVGG:
    """Spiking VGG-11 (configuration A); ``kwargs``: ``SpikingVGG``'s options (``batch_norm``,
    ``width``, ``hidden``, ``pool_size``, ``dropout``) and the neurons' keyword arguments."""
    return SpikingVGG(VGGConfig.VGG11, num_classes=num_classes, in_channels=in_channels, neuron=neuron,
                      surrogate=surrogate, **kwargs)


def vgg16(*, num_classes: int = 1000, in_channels: int = 3, neuron: NeuronArg = "LIF",
          surrogate: Surrogate | None = None, **kwargs) -> SpikingVGG:
    """Spiking VGG-16 (configuration D); options as ``vgg11``."""
    return SpikingVGG(VGGConfig.VGG16, num_classes=num_classes, in_channels=in_channels, neuron=neuron,
                      surrogate=surrogate, **kwargs)
