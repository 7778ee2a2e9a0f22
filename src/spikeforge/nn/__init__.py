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
