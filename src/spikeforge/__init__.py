"""spikeforge: spiking neural networks in PyTorch, each neuron defined once."""
from . import convert as convert
from . import data as data
from . import encoding as encoding
from . import functional as functional
from . import learning as learning
from . import losses as losses
from . import models as models
from . import monitor as monitor
from . import neurons as neurons
from . import nir as nir
from . import nn as nn
from . import quant as quant
from . import surrogate as surrogate
from . import viz as viz
from .allocator import tune_allocator as tune_allocator
from .kernels import backends as backends
from .monitor import Monitor as Monitor
from .neurons import Reset as Reset
from .train.runs import load_run as load_run
from .nn.stream import reset as reset
from .nn.stream import step as step

__version__ = "0.1.0"
