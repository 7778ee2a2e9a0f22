"""Model zoo: spiking VGG, (SEW-)ResNet and Spikformer built from ``spikeforge.nn`` layers.

Every model takes time-first images ``(T, B, C, H, W)`` and returns per-step logits
``(T, B, num_classes)``; classify with their mean over time, ``model(x).mean(0)``. Every
builder takes ``num_classes``, ``in_channels``, ``neuron`` (a registered neuron name such as
``"LIF"`` / ``"PLIF"`` or a callable returning a neuron module), ``surrogate`` and the neurons'
keyword arguments (``tau=...``, ``detach_reset=True``, ``backend=...``). See docs/models.md.
"""
from ._blocks import NeuronFactory as NeuronFactory
from ._blocks import neuron_factory as neuron_factory
from .resnet import ConnectFunction as ConnectFunction
from .resnet import SEWBasicBlock as SEWBasicBlock
from .resnet import SpikingBasicBlock as SpikingBasicBlock
from .resnet import SpikingResNet as SpikingResNet
from .resnet import Stem as Stem
from .resnet import resnet18 as resnet18
from .resnet import resnet34 as resnet34
from .resnet import sew_resnet18 as sew_resnet18
from .resnet import sew_resnet34 as sew_resnet34
from .spikformer import Spikformer as Spikformer
from .spikformer import SpikformerBlock as SpikformerBlock
from .spikformer import SpikingPatchSplitting as SpikingPatchSplitting
from .spikformer import spikformer as spikformer
from .vgg import SpikingVGG as SpikingVGG
from .vgg import VGGConfig as VGGConfig
from .vgg import vgg11 as vgg11
from .vgg import vgg16 as vgg16
from ..nn.attention import SpikingSelfAttention as SpikingSelfAttention
