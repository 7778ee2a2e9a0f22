"""Neuron definitions (one spec per model) and their registry."""
from ._spec import REGISTRY as REGISTRY
from ._spec import NeuronSpec as NeuronSpec
from ._spec import Param as Param
from ._spec import Reset as Reset
from ._spec import register_neuron as register_neuron
from ._spec import reset_membrane as reset_membrane
from .alif import ALIF as ALIF
from .cuba import CubaLIF as CubaLIF
from .lif import IF as IF
from .lif import LI as LI
from .lif import LIF as LIF
from .lif import PLIF as PLIF
from .nonlinear import EIF as EIF
from .nonlinear import QIF as QIF
from .nonlinear import Izhikevich as Izhikevich
from ._spec import THRESHOLD_PARAMS as THRESHOLD_PARAMS
from ._spec import FireReset as FireReset
