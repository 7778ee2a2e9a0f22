"""Embedded data sets (nothing is ever downloaded) and event-data transforms."""
from .digits import Digits as Digits
from .events import EVENT_DTYPE as EVENT_DTYPE
from .events import EventDigits as EventDigits
from .events import Saccades as Saccades
from .events import saccade_events as saccade_events
from .events import to_frames as to_frames
from .transforms import Denoise as Denoise
from .transforms import Downsample as Downsample
from .transforms import ToFrame as ToFrame
from .transforms import ToTimeSurface as ToTimeSurface
from .transforms import ToVoxelGrid as ToVoxelGrid
from .transforms import denoise as denoise
from .transforms import downsample as downsample
from .transforms import downsampled_size as downsampled_size
from .transforms import pad_collate as pad_collate
from .transforms import to_frame as to_frame
from .transforms import to_time_surface as to_time_surface
from .transforms import to_voxel_grid as to_voxel_grid
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
from .synthetic import shd_like as shd_like
from .yinyang import YinYang as YinYang

__all__ = ["YinYang", "Digits", "EventDigits", "Saccades", "ToFrame", "to_frames", "saccade_events", "EVENT_DTYPE",
           "to_frame", "to_voxel_grid", "to_time_surface", "denoise", "downsample", "downsampled_size",
           "ToVoxelGrid", "ToTimeSurface", "Denoise", "Downsample", "pad_collate",
           "DatasetError", "read_nmnist_bin", "read_aedat", "read_shd",
           "NMNIST", "NCaltech101", "DVSGesture", "CIFAR10DVS", "SHD", "SSC", "shd_like"]
