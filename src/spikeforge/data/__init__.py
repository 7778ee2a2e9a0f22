"""Embedded data sets (nothing is ever downloaded) and event-data transforms."""
from .digits import Digits as Digits
from .events import EVENT_DTYPE as EVENT_DTYPE
from .events import EventDigits as EventDigits
from .events import Saccades as Saccades
from .events import ToFrame as ToFrame
from .events import saccade_events as saccade_events
from .events import to_frames as to_frames
from .readers import CIFAR10DVS as CIFAR10DVS
from .readers import NMNIST as NMNIST
from .readers import SHD as SHD
from .readers import SSC as SSC
from .readers import DatasetError as DatasetError
from .readers import DVSGesture as DVSGesture
from .readers import NCaltech101 as NCaltech101
from .readers import read_aedat as read_aedat
from .readers import read_nmnist_bin as read_nmnist_bin
from .readers import read_shd as read_shd
from .yinyang import YinYang as YinYang

__all__ = ["YinYang", "Digits", "EventDigits", "Saccades", "ToFrame", "to_frames", "saccade_events", "EVENT_DTYPE",
           "DatasetError", "read_nmnist_bin", "read_aedat", "read_shd",
           "NMNIST", "NCaltech101", "DVSGesture", "CIFAR10DVS", "SHD", "SSC"]
