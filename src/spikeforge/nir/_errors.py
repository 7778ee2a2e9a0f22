"""The one error of the NIR interface."""
from __future__ import annotations


class NIRError(ValueError):
    """A model NIR cannot express, or a NIR graph or file spikeforge cannot load; the
    message names the module or node and the field."""
