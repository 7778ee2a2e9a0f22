"""spikeforge: spiking neural networks in PyTorch, each neuron defined once."""
from torch import nn as _nn

from . import data as data
from . import encoding as encoding
from . import functional as functional
from . import losses as losses
from . import monitor as monitor
from . import neurons as neurons
from . import nn as nn
from . import surrogate as surrogate
from .allocator import tune_allocator as tune_allocator
from .kernels import backends as backends
from .neurons import Reset as Reset
from .train.trainer import load_run as load_run

__version__ = "0.1.0"


def reset(net: _nn.Module) -> None:
    """Return every neuron layer in ``net`` to rest (drops carried state and traces)."""
    for m in net.modules():
        if isinstance(m, nn.Neuron):
            m.reset()
