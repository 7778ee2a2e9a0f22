"""``spikeforge info``: versions, backends and devices."""
from __future__ import annotations

import platform
from importlib import metadata

import torch

__all__ = ["describe"]


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "not installed"


def describe() -> str:
    from .. import __version__, backends

    lines = [f"spikeforge {__version__}", f"python {platform.python_version()} ({platform.platform()})",
             f"torch {torch.__version__}, numpy {_version('numpy')}",
             f"matplotlib {_version('matplotlib')} (plots), pyyaml {_version('pyyaml')} (YAML configs)",
             f"cpu: {torch.get_num_threads()} torch threads"]
    devices = ["cpu"]
    if torch.cuda.is_available():
        for i in range(torch.cuda.device_count()):
            devices.append(f"cuda:{i}")
            lines.append(f"cuda:{i}: {torch.cuda.get_device_name(i)}")
    else:
        lines.append("cuda: not available")
    for dev in devices:
        lines.append(f"backends on {dev}:")
        for name, why in backends(dev).items():
            lines.append(f"  {name:10s} {'available' if why is None else why}")
    return "\n".join(lines)
