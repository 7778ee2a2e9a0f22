"""The recorded data sets, read from a folder the user filled (nothing is ever downloaded).

Each takes ``root``: the folder tonic would download to (``save_to``; the data set's own folder
under it, e.g. ``root/NMNIST/Train``), or that data set folder itself. Items are
``(events, label)``, or ``(transform(events), label)``; ``cache=True`` keeps transformed tensors
on disk (see ``cache.py``).
"""
from __future__ import annotations

import csv
import os
from pathlib import Path

import torch

from ._common import DatasetError
from .aedat import read_aedat
from .cache import TensorCache
from .nmnist import read_nmnist_bin
from .shd import SHD_SENSOR, ShdFile

__all__ = ["NMNIST", "NCaltech101", "DVSGesture", "CIFAR10DVS", "SHD", "SSC"]


def _locate(root, name: str, inner: str, url: str, layout: str) -> Path:
    """``root/name/inner`` or ``root/inner``; else a one-line error with the source and layout."""
    root = Path(os.path.expanduser(os.fspath(root)))
    for cand in (root / name / inner, root / inner):
        if cand.exists():
            return cand
    raise DatasetError(None, f"{name}: {root / name / inner} not found; download {url} and extract it "
                             f"so that {layout} (nothing is downloaded for you)")


class _Recorded(torch.utils.data.Dataset):
    """Items from ``self.items`` (one entry per sample) read by ``self._events(i)``."""

    sensor_size: tuple | None
    classes: list[str]

    def __init__(self, transform=None, cache: bool = False, strict: bool = True) -> None:
        self.transform, self.strict = transform, strict
        self.cache = TensorCache(transform) if cache else None

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, i: int):
        if not -len(self) <= i < len(self):
            raise IndexError(f"index {i} out of range for {len(self)} samples")
        i = i % len(self)
        label = self.targets[i]
        if self.cache is not None:
            src, key = self._source(i)
            return self.cache.get(src, key, lambda: self.transform(self._events(i))), label
        ev = self._events(i)
        return (ev if self.transform is None else self.transform(ev)), label

    def _source(self, i: int) -> tuple[Path, str]:
        """The file sample ``i`` comes from and what identifies the sample inside it."""
        return self.files[i], ""

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, sensor_size={self.sensor_size})"


def _read_bin(path: Path, sensor_size, strict: bool):
    """A sample's ``.bin`` file as events. A 0-byte file is refused when ``strict``: no released
    N-MNIST or N-Caltech101 sample is empty, so it is a copy or extraction cut short (the reader
    alone, ``read_nmnist_bin``, reads it as the empty recording it encodes)."""
    try:
        empty = path.stat().st_size == 0
    except OSError:
        empty = False                               # read_nmnist_bin says what is wrong with it
    if empty and strict:
        raise DatasetError(path, "empty file (0 bytes): no released sample is empty, so the copy or extraction was "
                                 "probably cut short; extract it again (strict=False reads it as no events)")
    return read_nmnist_bin(path, sensor_size, strict)[0]


def _bins_by_folder(top: Path, ext: str, n_expected: int | None = None):
    """Files ``top/<class>/*<ext>`` sorted; class names are the sorted folder names."""
    classes = sorted(d.name for d in top.iterdir() if d.is_dir())
    files, targets = [], []
    for k, c in enumerate(classes):
        found = sorted(p for p in (top / c).iterdir() if p.name.endswith(ext))
        files += found
        targets += [k] * len(found)
    if not files:
        raise DatasetError(top, f"no {ext} files in its class folders")
    return classes, files, targets


class NMNIST(_Recorded):
    """N-MNIST (``train=True``: 60 000 samples, else 10 000), 34x34 ATIS recordings of MNIST."""

    url = "https://www.garrickorchard.com/datasets/n-mnist"
    sensor_size = (34, 34, 2)
    classes = [str(d) for d in range(10)]

    def __init__(self, root, train: bool = True, transform=None, cache: bool = False, strict: bool = True):
        super().__init__(transform, cache, strict)
        split = "Train" if train else "Test"
        top = _locate(root, "NMNIST", split, self.url, "ROOT/NMNIST/{Train,Test}/<digit 0-9>/<id>.bin")
        folders, self.files, self.targets = _bins_by_folder(top, ".bin")
        if folders != self.classes:
            raise DatasetError(top, f"class folders {folders[:12]} are not the digits 0..9")

    def _events(self, i):
        return _read_bin(self.files[i], self.sensor_size, self.strict)


class NCaltech101(_Recorded):
    """N-Caltech101: 8 709 ATIS recordings of Caltech101 pictures, 101 class folders. Pictures
    differ in size, so ``sensor_size`` is the bound of the 8-bit addresses, ``(256, 256, 2)``;
    events keep the sensor's coordinates (tonic shifts each sample to start at 0)."""

    url = "https://www.garrickorchard.com/datasets/n-caltech101"
    sensor_size = (256, 256, 2)

    def __init__(self, root, transform=None, cache: bool = False, strict: bool = True):
        super().__init__(transform, cache, strict)
        top = _locate(root, "NCALTECH101", "Caltech101", self.url,
                      "ROOT/NCALTECH101/Caltech101/<class name>/image_<id>.bin")
        self.classes, self.files, self.targets = _bins_by_folder(top, ".bin")

    def _events(self, i):
        return _read_bin(self.files[i], None, self.strict)


class CIFAR10DVS(_Recorded):
    """CIFAR10-DVS: 10 000 DVS128 recordings of CIFAR-10 pictures (AEDAT 2.0 as published, or the
    AEDAT 4.0 files tonic's copy holds, which need the ``aedat`` package)."""

    url = "https://figshare.com/articles/dataset/CIFAR10-DVS_New/4724671"
    sensor_size = (128, 128, 2)
    classes = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]

    def __init__(self, root, transform=None, cache: bool = False, strict: bool = True):
        super().__init__(transform, cache, strict)
        root = Path(os.path.expanduser(os.fspath(root)))
        top = _locate(root, "CIFAR10DVS", "airplane", self.url,
                      "ROOT/CIFAR10DVS/<class: airplane ... truck>/<name>.aedat (or .aedat4)").parent
        self.files, self.targets = [], []
        missing = [c for c in self.classes if not (top / c).is_dir()]
        if missing:
            raise DatasetError(top, f"class folders {missing} are missing; expected one folder per class "
                                    f"({', '.join(self.classes)}), as extracted from {self.url}")
        for k, c in enumerate(self.classes):
            found = sorted(p for p in (top / c).glob("*") if p.suffix in (".aedat", ".aedat4"))
            self.files += found
            self.targets += [k] * len(found)

    def _events(self, i):
        return read_aedat(self.files[i], self.strict)[0]


class DVSGesture(_Recorded):
    """IBM DVS128 Gesture as published: AEDAT 3.1 recordings ``userNN_<lighting>.aedat``, each with
    a ``..._labels.csv`` (class 1..11, start and end time in us) that cuts it into samples; the
    split lists ``trials_to_train.txt`` / ``trials_to_test.txt``. Sample times start at 0 at the
    gesture's start. The last decoded recording is kept, so reading in order decodes each once."""

    url = "https://research.ibm.com/interactive/dvsgesture/"
    sensor_size = (128, 128, 2)
    classes = ["hand clapping", "right hand wave", "left hand wave", "right arm clockwise",
               "right arm counter-clockwise", "left arm clockwise", "left arm counter-clockwise",
               "arm roll", "air drums", "air guitar", "other gestures"]

    def __init__(self, root, train: bool = True, transform=None, cache: bool = False, strict: bool = True):
        super().__init__(transform, cache, strict)
        trials = "trials_to_train.txt" if train else "trials_to_test.txt"
        listing = _locate(root, "DVSGesture", f"DvsGesture/{trials}", self.url,
                          f"ROOT/DVSGesture/DvsGesture/ holds {trials} and userNN_<lighting>.aedat with _labels.csv")
        self.files, self.targets, self.windows = [], [], []
        for name in listing.read_text().split():
            rec = listing.parent / name
            for label, start, end in self._labels(rec.with_name(rec.stem + "_labels.csv")):
                self.files.append(rec)
                self.targets.append(label)
                self.windows.append((start, end))
        self._last = (None, None)

    @classmethod
    def _labels(cls, path: Path):
        try:
            rows = list(csv.reader(path.read_text().splitlines()))
        except OSError:
            raise DatasetError(path, "no such file (each recording needs its _labels.csv)") from None
        out = []
        for row in rows[1:]:
            try:
                label, start, end = int(row[0]) - 1, int(row[1]), int(row[2])
            except (ValueError, IndexError):
                raise DatasetError(path, f"bad row {row!r} (expected class,startTime_usec,endTime_usec)") from None
            if not (0 <= label < len(cls.classes) and 0 <= start <= end):
                raise DatasetError(path, f"bad row {row!r}")
            out.append((label, start, end))
        return out

    def _source(self, i):
        return self.files[i], f"{self.windows[i][0]}-{self.windows[i][1]}"

    def _events(self, i):
        if self._last[0] != self.files[i]:
            self._last = (self.files[i], read_aedat(self.files[i], self.strict)[0])
        ev, (start, end) = self._last[1], self.windows[i]
        ev = ev[(ev["t"] >= start) & (ev["t"] < end)]
        ev["t"] -= start
        return ev


class SHD(_Recorded):
    """Spiking Heidelberg Digits: 8 156 training / 2 264 test spoken digits (20 classes)."""

    url = "https://zenkelab.org/datasets/"
    sensor_size = SHD_SENSOR
    prefix = "shd"

    def __init__(self, root, train: bool = True, transform=None, cache: bool = False, split: str | None = None):
        super().__init__(transform, cache)
        split = split or ("train" if train else "test")
        name = f"{self.prefix}_{split}.h5"
        self.path = _locate(root, type(self).__name__, name, self.url + name + ".zip",
                            f"ROOT/{type(self).__name__}/{name} exists (unzipped)")
        with ShdFile(self.path) as f:
            self.targets = f.labels.astype(int).tolist()
            self.classes = f.classes()
        self._file = None

    def _source(self, i):
        return self.path, str(i)

    def _events(self, i):
        if self._file is None:  # opened on first use, so the data set pickles into DataLoader workers
            self._file = ShdFile(self.path)
        return self._file.sample(i)[0]

    def __getstate__(self):
        return {**self.__dict__, "_file": None}


class SSC(SHD):
    """Spiking Speech Commands (35 classes); ``split`` is ``'train'``, ``'valid'`` or ``'test'``."""

    prefix = "ssc"

    def __init__(self, root, split: str = "train", transform=None, cache: bool = False):
        if split not in ("train", "valid", "test"):
            raise ValueError(f"split must be 'train', 'valid' or 'test', not {split!r}")
        super().__init__(root, transform=transform, cache=cache, split=split)
