"""Integer models of neuromorphic chips: quantisation and deployment (SynSense Xylo).

``quantize(model, target="xylo")`` turns a float ``Linear -> neuron`` model into a
``XyloNet`` of ``XyloLayer`` s whose integer neurons (``spikeforge.neurons.XyloLIF``) compute
what Xylo (as its simulator ``xylosim`` does, bit for bit) computes; ``qat=True`` keeps float
weights and trains through the integer forward pass. ``net.specification()`` is the network
as Rockpool's ``XyloSim.from_specification`` takes it; ``xylosim(net)`` builds that simulator
(without samna) and ``run_xylosim(net, events)`` runs it. ``export_tables(net, path)`` writes
the integer tables and a generated C99 reference of the network (``load_reference`` compiles
it); ``nonideal`` holds seeded device non-idealities for the weights of any model, and
``ENERGY_PRESETS`` the per-operation energies of ``Monitor.energy(preset=...)``; ``hil`` runs
a network's forward pass on a substrate (the integer Xylo network, xylosim, an analog model
with mismatch and noise) with gradients through the software model (hardware in the loop).
See docs/hardware.md.
"""
from . import hil as hil
from . import nonideal as nonideal
from ..neurons.xylo import XyloCore as XyloCore
from ..neurons.xylo import XyloPopulation as XyloPopulation
from ._deploy import rockpool_network as rockpool_network
from ._deploy import rockpool_xylo as rockpool_xylo
from ._deploy import run_xylosim as run_xylosim
from ._deploy import xylosim as xylosim
from ._energy import ENERGY_PRESETS as ENERGY_PRESETS
from ._energy import EnergyPreset as EnergyPreset
from ._energy import energy_preset as energy_preset
from ._export import ExportedTables as ExportedTables
from ._export import export_tables as export_tables
from ._export import load_reference as load_reference
from ._layers import Readout as Readout
from ._layers import XyloLayer as XyloLayer
from ._layers import fake_int8 as fake_int8
from ._net import XyloNet as XyloNet
from ._net import specification as specification
from ._quantize import quantize as quantize
from ._target import XYLO as XYLO
from ._target import XyloError as XyloError
from ._target import XyloLimits as XyloLimits
