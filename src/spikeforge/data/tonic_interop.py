"""tonic's datasets, opened without downloading: ``open_tonic("NMNIST", root, train=True)``.

tonic's datasets download their archive when ``_check_exists()`` fails. Here the class is
subclassed (same name, so tonic looks in ``root/<Name>/``) with ``download`` refusing in one
line that names the expected layout, and with ``_check_exists`` also accepting an extracted
folder holding fewer files than the full release (a subset, or a test's tiny copy), and SHD/SSC's
extracted ``.h5`` file without the ``.zip`` it came in.
"""
from __future__ import annotations

import os
from pathlib import Path

__all__ = ["TonicDataError", "open_tonic", "tonic_class", "tonic_sensor_size", "tonic_labels", "tonic_classes"]


class TonicDataError(FileNotFoundError):
    """A tonic dataset whose files are not under the data root (or tonic is missing)."""


def _tonic():
    try:
        import tonic
    except ImportError:
        raise ImportError("tonic datasets need tonic: pip install tonic") from None
    return tonic


def _layout(ds) -> str:
    where = Path(ds.location_on_system, getattr(ds, "folder_name", "") or "")
    data_file = getattr(ds, "data_filename", None)       # SHD/SSC: the one extracted file tonic opens
    if data_file:
        return f"{where / data_file} (extracted from {getattr(ds, 'url', None) or getattr(ds, 'filename', '')})"
    archive = getattr(ds, "filename", None)
    url = getattr(ds, "url", None) or getattr(type(ds), "base_url", None)
    return (f"{where}/ (the extracted {archive}" if archive else f"{where}/ (the dataset's files") + \
        (f" from {url})" if url else ")")


def _refuse(self, *args, **kwargs):
    name = type(self).__name__
    raise TonicDataError(f"tonic:{name}: no data under {self.location_on_system}; expected {_layout(self)}; "
                         f"spikeforge never downloads: fetch it once (e.g. tonic.datasets.{name}(save_to=DIR)) "
                         f"and pass --data-root DIR")


def _check_exists(self, *args, **kwargs):
    if type(self).__mro__[1]._check_exists(self, *args, **kwargs) is True:
        return True
    data_file = getattr(self, "data_filename", None)     # SHD/SSC: tonic also wants the .zip beside it
    if data_file:
        return Path(self.location_on_system, data_file).is_file()
    folder = Path(self.location_on_system, getattr(self, "folder_name", "") or "")
    return folder.is_dir() and folder != Path(self.location_on_system) and any(
        f.is_file() for f in folder.rglob("*"))


def tonic_class(name: str) -> type:
    """``tonic.datasets.<name>``; ``ValueError`` listing tonic's datasets when there is none."""
    tonic = _tonic()
    cls = getattr(tonic.datasets, name, None)
    if not isinstance(cls, type):
        known = sorted(n for n in dir(tonic.datasets) if isinstance(getattr(tonic.datasets, n), type))
        raise ValueError(f"tonic has no dataset {name!r}; tonic.datasets has {', '.join(known)}")
    return cls


def open_tonic(name: str, root, **kwargs):
    """``tonic.datasets.<name>(save_to=root, **kwargs)`` (e.g. ``train=True``), never downloading."""
    cls = tonic_class(name)
    if root is None or not os.path.isdir(root):
        raise TonicDataError(f"tonic:{name}: data root {root!r} is not a folder (pass --data-root DIR, "
                             f"holding {name}/...)")
    guarded = type(name, (cls,), {"download": _refuse, "_check_exists": _check_exists,
                                  "__module__": __name__})
    return guarded(save_to=str(root), **kwargs)


def tonic_sensor_size(dataset) -> tuple[int, int, int]:
    """The ``(W, H, P)`` of a tonic dataset (class or instance); ``ValueError`` when it has none
    (a dataset of varying sizes such as NCALTECH101, which cannot be binned into one frame shape)."""
    size = getattr(dataset, "sensor_size", None)
    name = dataset.__name__ if isinstance(dataset, type) else type(dataset).__name__
    if size is None or len(size) != 3:
        raise ValueError(f"tonic dataset {name} has sensor_size {size!r}, not (W, H, P): only datasets with one "
                         f"sensor size can be binned into frames here")
    return tuple(int(v) for v in size)


def tonic_labels(ds) -> list[int]:
    """Every label of a tonic dataset without reading its samples where tonic allows: its
    ``targets`` when they cover every sample, SHD/SSC's ``labels`` from the HDF5 file, else one
    pass over the samples with the transform switched off."""
    targets = getattr(ds, "targets", None)
    if targets is not None and len(targets) == len(ds):
        return [int(t) for t in targets]
    data_file = getattr(ds, "data_filename", None)
    if data_file and str(data_file).endswith(".h5"):
        import h5py

        with h5py.File(Path(ds.location_on_system, data_file), "r") as f:
            return [int(t) for t in f["labels"][()]]
    transform, ds.transform = ds.transform, None
    try:
        return [int(ds[i][1]) for i in range(len(ds))]
    finally:
        ds.transform = transform


def tonic_classes(ds) -> list[str] | None:
    """The class names of a tonic dataset as text (SHD/SSC hold bytes), or None when it has none."""
    classes = getattr(ds, "classes", None)
    if classes is None or len(classes) == 0:
        return None
    return [c.decode() if isinstance(c, bytes) else str(c) for c in classes]
