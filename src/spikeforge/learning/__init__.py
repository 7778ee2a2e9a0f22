"""Learning beyond surrogate-gradient BPTT: exact gradients (``eventprop``)."""
from . import eventprop as eventprop

__all__ = ["eventprop"]
