"""Readers for recorded event data sets (N-MNIST, N-Caltech101, DVS128 Gesture, CIFAR10-DVS,
SHD/SSC) and the data set classes built on them. One file per format; docs/data.md."""
from ._common import DatasetError as DatasetError
from .aedat import read_aedat as read_aedat
from .datasets import CIFAR10DVS as CIFAR10DVS
from .datasets import NMNIST as NMNIST
from .datasets import SHD as SHD
from .datasets import SSC as SSC
from .datasets import DVSGesture as DVSGesture
from .datasets import NCaltech101 as NCaltech101
from .nmnist import read_nmnist_bin as read_nmnist_bin
from .shd import read_shd as read_shd

__all__ = ["DatasetError", "read_nmnist_bin", "read_aedat", "read_shd",
           "NMNIST", "NCaltech101", "DVSGesture", "CIFAR10DVS", "SHD", "SSC"]
