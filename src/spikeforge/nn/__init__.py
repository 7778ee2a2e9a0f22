"""Modules: neuron layers (one per registered neuron model), layers and containers."""
from .neuron import MODULES as MODULES
from .neuron import Neuron as Neuron
from .neuron import neuron_module as neuron_module

IF = MODULES["IF"]
LIF = MODULES["LIF"]
PLIF = MODULES["PLIF"]
CubaLIF = MODULES["CubaLIF"]
ALIF = MODULES["ALIF"]
Izhikevich = MODULES["Izhikevich"]
QIF = MODULES["QIF"]
EIF = MODULES["EIF"]
LI = MODULES["LI"]
CubaLI = MODULES["CubaLI"]
from .delay import Delay as Delay
from .delay import DelayInterpolation as DelayInterpolation
from .delay import DelayPer as DelayPer
from .lateral import LateralInhibition as LateralInhibition
from .layers import AdaptiveAvgPool2d as AdaptiveAvgPool2d
from .layers import AvgPool1d as AvgPool1d
from .layers import AvgPool2d as AvgPool2d
from .layers import BatchNorm1d as BatchNorm1d
from .layers import BatchNorm2d as BatchNorm2d
from .layers import Flatten as Flatten
from .layers import MaxPool1d as MaxPool1d
from .layers import MaxPool2d as MaxPool2d
from .layers import Recurrent as Recurrent
from .layers import Residual as Residual
from .layers import Scale as Scale
from .layers import SumPool2d as SumPool2d
from .attention import SpikingSelfAttention as SpikingSelfAttention
from .layers import Threshold as Threshold
from .layers import TimeDistributed as TimeDistributed
from .layers import TimeDropout as TimeDropout
from .sparse import SpikeLinear as SpikeLinear
from .spiking_linear import SpikingLinear as SpikingLinear
from .spiking_conv import SpikingConv2d as SpikingConv2d
from .sparse_conv import SpikeConv2d as SpikeConv2d
from .sparse import SparseMode as SparseMode
from .stream import reset as reset
from .stream import step as step


def __getattr__(name: str):
    """Neuron modules registered after import (``register_neuron``) by name."""
    if name in MODULES:
        return MODULES[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
