"""Embedded data sets (nothing is ever downloaded) and event-data transforms."""
from .digits import Digits as Digits
from .events import EVENT_DTYPE as EVENT_DTYPE
from .events import EventDigits as EventDigits
from .events import Saccades as Saccades
from .events import ToFrame as ToFrame
from .events import saccade_events as saccade_events
from .events import to_frames as to_frames
from .yinyang import YinYang as YinYang

__all__ = ["YinYang", "Digits", "EventDigits", "Saccades", "ToFrame", "to_frames", "saccade_events", "EVENT_DTYPE"]
