"""Plots of spiking networks, each one call on a tensor or a ``spikeforge.Monitor``, each
returning a matplotlib ``Figure``.

matplotlib is optional (``pip install 'spikeforge[viz]'``) and imported only when a plot is
drawn, without pyplot: figures use the Agg canvas, so no display or global state is touched.
Save one with ``fig.savefig("plot.png")``. Functions that draw a single panel take ``ax=``
to draw into an existing matplotlib ``Axes`` (and return its figure).

Tensors are time-first, like the rest of spikeforge: spikes and states ``(T, B, ...)``.

- ``raster``: spike raster of one sample; ``membrane``: state traces with the threshold;
  ``rate_histogram``: firing rates per layer;
- ``feature_maps``: 2-D spikes over time as an image grid; ``feature_map_gif``: the same as
  an animated GIF;
- ``decision_map``: the class regions of a trained Yin-Yang model, with the data;
- ``energy_bars``: estimated energy per layer (SynOps, MACs, neuron updates);
- ``learning_curves``, ``confusion``: a training run (the trainer's plots use them).
"""
from .activity import membrane as membrane
from .activity import rate_histogram as rate_histogram
from .activity import raster as raster
from .decision import decision_map as decision_map
from .decision import yinyang_grid as yinyang_grid
from .energy import energy_bars as energy_bars
from .energy import layer_energy as layer_energy
from .maps import feature_map_gif as feature_map_gif
from .maps import feature_maps as feature_maps
from .training import confusion as confusion
from .training import confusion_matrix as confusion_matrix
from .training import learning_curves as learning_curves

__all__ = ["raster", "membrane", "rate_histogram", "feature_maps", "feature_map_gif", "decision_map",
           "yinyang_grid", "energy_bars", "layer_energy", "learning_curves", "confusion", "confusion_matrix"]
