"""Training configuration: one frozen dataclass, Enums for the options, per-data-set defaults.

``make_config(dataset="yinyang", epochs=30)`` starts from the data set's defaults and
applies the overrides; ``load_config_file(path)`` reads the same keys from TOML, YAML or
JSON. ``TrainConfig.to_dict()`` / ``from_dict()`` round-trip through plain JSON types.
"""
from __future__ import annotations

import dataclasses
import enum
import json
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from ..neurons import Reset

__all__ = ["TrainConfig", "DataSet", "Encoding", "Loss", "Schedule", "make_config", "load_config_file",
           "ConfigError"]


class ConfigError(ValueError):
    """A configuration value, file or key that cannot be used."""


class DataSet(enum.Enum):
    YINYANG = "yinyang"
    DIGITS = "digits"
    EVENT_DIGITS = "event-digits"


class Encoding(enum.Enum):
    """How static features become input over time (event data is binned into frames)."""

    CURRENT = "current"    # the features as a constant input current at every step
    LATENCY = "latency"    # one spike per feature, earlier for larger values, plus a bias spike


class Loss(enum.Enum):
    MAX_MEMBRANE = "max-membrane"   # cross-entropy of each readout's maximum membrane over time
    FIRST_SPIKE = "first-spike"     # cross-entropy of (minus) the step each readout first crosses 1


class Schedule(enum.Enum):
    CONSTANT = "constant"
    COSINE = "cosine"      # linear warm-up over the first epoch, then cosine decay to 0


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the run folder stores it as ``config.json``)."""

    dataset: DataSet = DataSet.YINYANG
    encoding: Encoding = Encoding.CURRENT
    loss: Loss = Loss.MAX_MEMBRANE
    steps: int = 20                     # simulation time steps T
    hidden: int = 120
    neuron: str = "IF"                  # a name in spikeforge.neurons.REGISTRY
    neuron_params: dict = field(default_factory=dict)   # e.g. {"tau_mem": 4.0}; empty = defaults
    reset: Reset = Reset.SOFT           # for neurons that have the option
    detach_reset: bool = True
    surrogate: str = "ATan"             # a class in spikeforge.surrogate
    surrogate_alpha: float | None = None
    tau_out: float = 10.0               # time constant of the LI readout
    input_scale: float = 10.0           # scale of the first layer's initial weights
    input_tau: float | None = None      # latency input: synaptic time constant (None: no decay)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.08
    schedule: Schedule = Schedule.COSINE
    seed: int = 0
    backend: str | None = None          # None = automatic (fused kernels when available)
    device: str = "cpu"
    threads: int | None = 1             # torch intra-op threads; None leaves torch's setting

    def __post_init__(self) -> None:
        for name, cls in _ENUMS.items():
            if not isinstance(getattr(self, name), cls):
                object.__setattr__(self, name, _enum(name, getattr(self, name)))
        for name in ("steps", "hidden", "epochs", "batch_size"):
            if not isinstance(getattr(self, name), int) or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        if self.input_tau is not None and (not isinstance(self.input_tau, (int, float)) or self.input_tau <= 0):
            raise ConfigError(f"input_tau must be a positive number or None, got {self.input_tau!r}")
        for name in ("lr", "tau_out", "input_scale"):
            if not isinstance(getattr(self, name), (int, float)) or getattr(self, name) <= 0:
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if self.backend not in (None, "reference", "cpu", "triton"):
            raise ConfigError(f"backend must be reference, cpu, triton or None (automatic), got {self.backend!r}")
        if not isinstance(self.neuron_params, dict):
            raise ConfigError(f"neuron_params must be a table/mapping, got {self.neuron_params!r}")

    def replace(self, **changes) -> "TrainConfig":
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        out = {}
        for f in fields(self):
            v = getattr(self, f.name)
            out[f.name] = v.value if isinstance(v, enum.Enum) else (dict(v) if isinstance(v, dict) else v)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "TrainConfig":
        _check_keys(d)
        return cls(**d)


_ENUMS = {"dataset": DataSet, "encoding": Encoding, "loss": Loss, "schedule": Schedule, "reset": Reset}

# Defaults that differ per data set (measured; see docs/training.md).
DATASET_DEFAULTS: dict[DataSet, dict[str, Any]] = {
    DataSet.YINYANG: {},
    DataSet.DIGITS: {"hidden": 128, "epochs": 30, "lr": 0.02, "input_scale": 5.0},
    DataSet.EVENT_DIGITS: {"hidden": 128, "epochs": 30, "lr": 0.02, "steps": 30, "input_scale": 3.0},
}
# Defaults for spike-time input (measured): finer steps resolve the input times; a readout that
# integrates over the whole window (tau_out > T) avoids plateaus where every sample looks alike late.
ENCODING_DEFAULTS: dict[Encoding, dict[str, Any]] = {
    Encoding.CURRENT: {},
    Encoding.LATENCY: {"steps": 80, "input_scale": 3.0, "tau_out": 100.0, "lr": 0.03, "epochs": 60},
}
NEURON_DEFAULTS: dict[str, dict[str, float]] = {
    "CubaLIF": {"tau_syn": 2.0, "tau_mem": 4.0},
    "LIF": {"tau": 4.0},
    "PLIF": {"tau": 4.0},
    "ALIF": {"tau": 4.0},
}


def _enum(name: str, value):
    cls = _ENUMS[name]
    try:
        return cls(value.lower().replace("_", "-") if isinstance(value, str) else value)
    except ValueError:
        try:
            return cls(value)
        except ValueError:
            choices = ", ".join(m.value for m in cls)
            raise ConfigError(f"{name} must be one of {choices}, got {value!r}") from None


def _check_keys(d: dict) -> None:
    known = {f.name for f in fields(TrainConfig)}
    unknown = sorted(set(d) - known)
    if unknown:
        raise ConfigError(f"unknown configuration key(s) {unknown}; known keys: {sorted(known)}")


def make_config(**overrides) -> TrainConfig:
    """The configuration for ``overrides['dataset']`` (default Yin-Yang): the data set's
    defaults, those of the encoding, then ``overrides`` (``None`` values are ignored)."""
    overrides = {k: v for k, v in overrides.items() if v is not None}
    _check_keys(overrides)
    dataset = _enum("dataset", overrides.get("dataset", DataSet.YINYANG))
    encoding = _enum("encoding", overrides.get("encoding", Encoding.CURRENT))
    values = {**DATASET_DEFAULTS[dataset], **ENCODING_DEFAULTS[encoding], **overrides, "dataset": dataset}
    return TrainConfig(**values)


def neuron_kwargs(cfg: TrainConfig) -> dict[str, float]:
    """The hidden neurons' parameters: ``cfg.neuron_params`` or the tuned defaults."""
    return dict(cfg.neuron_params) if cfg.neuron_params else dict(NEURON_DEFAULTS.get(cfg.neuron, {}))


def load_config_file(path: str | Path) -> dict[str, Any]:
    """The keys of a TOML (``.toml``), YAML (``.yaml``/``.yml``) or JSON file, checked."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    suffix = path.suffix.lower()
    try:
        if suffix == ".toml":
            import tomllib

            data = tomllib.loads(path.read_text())
        elif suffix in (".yaml", ".yml"):
            data = _yaml().safe_load(path.read_text())
        elif suffix == ".json":
            data = json.loads(path.read_text())
        else:
            raise ConfigError(f"config file {path}: use .toml, .yaml, .yml or .json")
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(f"config file {path} could not be parsed: {e}") from e
    if not isinstance(data, dict):
        raise ConfigError(f"config file {path} must hold a table of keys, got {type(data).__name__}")
    data = {k.replace("-", "_"): v for k, v in data.items()}
    _check_keys(data)
    return data


def _yaml():
    try:
        import yaml
    except ImportError:
        raise ConfigError("reading YAML needs PyYAML: pip install 'spikeforge[config]' (or use a .toml file)") from None
    return yaml
