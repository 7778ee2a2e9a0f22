"""Training configuration: one frozen dataclass, Enums for the options, per-data-set defaults.

``make_config(dataset="yinyang", epochs=30)`` starts from the data set's defaults and
applies the overrides; ``load_config_file(path)`` reads the same keys from TOML, YAML or
JSON. ``TrainConfig.to_dict()`` / ``from_dict()`` round-trip through plain JSON types.
"""
from __future__ import annotations

import dataclasses
import enum
import math
from dataclasses import dataclass, field, fields
from typing import Any

from ..neurons import REGISTRY, Reset

__all__ = ["TrainConfig", "DataSet", "Encoding", "Frames", "Loss", "Method", "Schedule", "Precision", "make_config",
           "ConfigError", "Quantize"]


class ConfigError(ValueError):
    """A configuration value, file or key that cannot be used."""


class DataSet(enum.Enum):
    """Embedded (held whole in memory) or read from files under ``data_root`` (streamed)."""

    YINYANG = "yinyang"
    DIGITS = "digits"
    EVENT_DIGITS = "event-digits"
    NMNIST = "nmnist"              # spikeforge.data's readers: the recorded data sets
    NCALTECH101 = "ncaltech101"
    DVSGESTURE = "dvsgesture"
    CIFAR10DVS = "cifar10dvs"
    SHD = "shd"
    SSC = "ssc"
    TONIC = "tonic"        # a tonic dataset (``tonic:<Name>``), binned into frames

    @property
    def on_disk(self) -> bool:
        """Read from files under ``data_root`` a batch at a time (not embedded)."""
        return self not in (DataSet.YINYANG, DataSet.DIGITS, DataSet.EVENT_DIGITS)

    @property
    def events(self) -> bool:
        """Event streams binned into frames (not static features)."""
        return self not in (DataSet.YINYANG, DataSet.DIGITS)


class Frames(enum.Enum):
    """What an event frame holds (``spikeforge.data.ToFrame``'s ``binary``)."""

    COUNTS = "counts"      # events per pixel/channel and step
    BINARY = "binary"      # 1 where there was at least one event: spikes, so ``SpikeLinear`` can skip zeros


class Encoding(enum.Enum):
    """How static features become input over time (event data is binned into frames)."""

    CURRENT = "current"    # the features as a constant input current at every step
    LATENCY = "latency"    # one spike per feature, earlier for larger values, plus a bias spike


class Loss(enum.Enum):
    MAX_MEMBRANE = "max-membrane"   # cross-entropy of each readout's maximum membrane over time
    FIRST_SPIKE = "first-spike"     # cross-entropy of (minus) the step each readout first crosses 1


class Method(enum.Enum):
    """How the gradient is computed."""

    BPTT = "bptt"              # surrogate gradients through the time-stepped simulation
    EVENTPROP = "eventprop"    # exact gradients of the event-based simulation (spikeforge.learning.eventprop)
    CONVERT = "convert"        # an ANN (QCFS activations) trained, evaluated as its converted SNN (train/convert_model.py)
    PROXY = "proxy"            # the same ANN trained on its converted SNN's output (ANN-proxy training)
    STDP = "stdp"              # unsupervised STDP, Diehl & Cook, label assignment (train/local_model.py)
    DESIRE = "desire"          # desire backpropagation, a local supervised rule (train/local_model.py)


class Precision(enum.Enum):
    """The arithmetic of the forward pass: float32, or ``torch.autocast`` to bfloat16 (the
    weights, optimiser and loss stay float32; the CPU neuron kernels compute bfloat16 input
    in float32, see ``spikeforge.functional.run``)."""

    FP32 = "fp32"
    BF16 = "bf16"


class Quantize(enum.Enum):
    XYLO = "xylo"    # the trained model on Xylo's integer arithmetic (spikeforge.quant; train/quantize_step.py)


class Schedule(enum.Enum):
    CONSTANT = "constant"
    COSINE = "cosine"      # linear warm-up over the first epoch, then cosine decay to 0
    LINEAR = "linear"      # linear decay from lr to lr / 10 over the run


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a training run (the run folder stores it as ``config.json``)."""

    dataset: DataSet = DataSet.YINYANG
    encoding: Encoding = Encoding.CURRENT
    loss: Loss = Loss.MAX_MEMBRANE
    method: Method = Method.BPTT
    steps: int = 20                     # simulation time steps T
    hidden: int = 120
    recurrent: bool = False             # hidden layer with recurrent weights (spikeforge.nn.Recurrent)
    dropout: float = 0.0                # training: each hidden spike is dropped with this probability
    neuron: str = "IF"                  # a name in spikeforge.neurons.REGISTRY
    neuron_params: dict = field(default_factory=dict)   # e.g. {"tau_mem": 4.0}; empty = defaults
    reset: Reset | None = None          # None: SOFT where the neuron has a reset option
    detach_reset: bool | None = None    # None: True where the neuron has the option
    surrogate: str = "ATan"             # a class in spikeforge.surrogate
    surrogate_alpha: float | None = None
    tau_out: float = 10.0               # time constant of the LI readout
    input_scale: float = 10.0           # scale of the first layer's initial weights
    input_tau: float | None = None      # latency input: synaptic time constant (None: no decay)
    complement: bool = False            # latency input: each feature x also as 1 - x on a second channel (ON/OFF)
    train_size: int | None = None      # yinyang: generated training samples (None: the published 5000)
    epochs: int = 40
    batch_size: int = 128
    lr: float = 0.08
    schedule: Schedule = Schedule.COSINE
    seed: int = 0
    backend: str | None = None          # None = automatic (fused kernels when available)
    device: str = "cpu"
    threads: int | None = 1             # torch intra-op threads; None leaves torch's setting
    precision: Precision = Precision.FP32   # fp32, or bf16 (torch.autocast on CPU and GPU)
    tonic_dataset: str | None = None    # dataset tonic: the class name in tonic.datasets, e.g. "NMNIST"
    data_root: str | None = None        # data sets on disk: the folder holding <Name>/ (never downloaded)
    frames: Frames = Frames.COUNTS      # event data: counts, or binary (0/1) frames
    workers: int = 0                    # data sets on disk: DataLoader worker processes (0: in this process)
    cache: bool = False                 # spikeforge's readers: keep the binned frames on disk (readers' cache)
    quantize: Quantize | None = None    # after training: the integer model, its accuracy and tables
    qat_epochs: int = 0                 # with quantize: quantisation-aware fine-tuning epochs after training

    @property
    def data_name(self) -> str:
        """The data set as the user names it: ``nmnist``, ``tonic:SHD``, ..."""
        return f"tonic:{self.tonic_dataset}" if self.dataset is DataSet.TONIC else self.dataset.value

    def __post_init__(self) -> None:
        if isinstance(self.dataset, str) and self.dataset.startswith("tonic:"):
            object.__setattr__(self, "tonic_dataset", self.dataset[len("tonic:"):])
            object.__setattr__(self, "dataset", DataSet.TONIC)
        for name, cls in _ENUMS.items():
            value = getattr(self, name)
            if not isinstance(value, cls) and not (value is None and name in _OPTIONAL):
                object.__setattr__(self, name, _enum(name, value))
        for name in ("steps", "hidden", "epochs", "batch_size"):
            if isinstance(getattr(self, name), bool) or not isinstance(getattr(self, name), int) \
                    or getattr(self, name) < 1:
                raise ConfigError(f"{name} must be a positive integer, got {getattr(self, name)!r}")
        for name in ("input_tau", "surrogate_alpha"):
            if getattr(self, name) is not None and not _positive(getattr(self, name)):
                raise ConfigError(f"{name} must be a positive number or None, got {getattr(self, name)!r}")
        for name in ("lr", "tau_out", "input_scale"):
            if not _positive(getattr(self, name)):
                raise ConfigError(f"{name} must be a positive number, got {getattr(self, name)!r}")
        if self.threads is not None and (isinstance(self.threads, bool) or not isinstance(self.threads, int)
                                         or self.threads < 1):
            raise ConfigError(f"threads must be a positive integer or None, got {self.threads!r}")
        if self.backend not in (None, "reference", "cpu", "triton"):
            raise ConfigError(f"backend must be reference, cpu, triton or None (automatic), got {self.backend!r}")
        if self.detach_reset is not None and not isinstance(self.detach_reset, bool):
            raise ConfigError(f"detach_reset must be true, false or None (the trainer's default), "
                              f"got {self.detach_reset!r}")
        if self.train_size is not None and (self.dataset is not DataSet.YINYANG or isinstance(self.train_size, bool)
                                            or not isinstance(self.train_size, int) or self.train_size < 1):
            raise ConfigError(f"train_size generates Yin-Yang training samples: a positive integer with dataset "
                              f"yinyang, got {self.train_size!r} with dataset {self.dataset.value}")
        if isinstance(self.dropout, bool) or not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            raise ConfigError(f"dropout must be a probability in [0, 1), got {self.dropout!r}")
        for name in ("recurrent", "complement"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name} must be true or false, got {getattr(self, name)!r}")
        if self.complement and self.encoding is not Encoding.LATENCY:
            raise ConfigError(f"complement adds the latency code of 1 - x to each feature: it needs encoding "
                              f"latency, got encoding {self.encoding.value}")
        if not isinstance(self.seed, int) or isinstance(self.seed, bool):
            raise ConfigError(f"seed must be an integer, got {self.seed!r}")
        _check_device(self.device)
        if self.dataset.events and self.encoding is Encoding.LATENCY:
            raise ConfigError(f"encoding latency turns static features into spike times, but {self.dataset.value} "
                              f"is already a spike sequence (binned into frames): use encoding current (the default)")
        _check_data_options(self)
        _check_neuron(self)
        _check_method(self)
        from .quantize_step import check_config
        check_config(self)

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


_ENUMS = {"dataset": DataSet, "encoding": Encoding, "loss": Loss, "schedule": Schedule, "reset": Reset,
          "precision": Precision, "frames": Frames, "method": Method, "quantize": Quantize}
_OPTIONAL = ("reset", "quantize")
# The trainer's choice for the neuron options left at None (where the neuron has the option).
OPTION_DEFAULTS: dict[str, Any] = {"reset": Reset.SOFT, "detach_reset": True}

# Defaults that differ per data set (measured; see docs/training.md).
DATASET_DEFAULTS: dict[DataSet, dict[str, Any]] = {
    DataSet.YINYANG: {},
    DataSet.DIGITS: {"hidden": 128, "epochs": 30, "lr": 0.02, "input_scale": 5.0},
    DataSet.EVENT_DIGITS: {"hidden": 128, "epochs": 30, "lr": 0.02, "steps": 30, "input_scale": 3.0},
    # not tuned: the event-digits values for the camera sets, more steps for the audio sets
    **{d: {"hidden": 128, "epochs": 10, "lr": 0.02, "steps": 30, "input_scale": 3.0}
       for d in (DataSet.TONIC, DataSet.NMNIST, DataSet.NCALTECH101, DataSet.DVSGESTURE, DataSet.CIFAR10DVS)},
    **{d: {"hidden": 128, "epochs": 10, "lr": 0.02, "steps": 50, "input_scale": 3.0} for d in (DataSet.SHD, DataSet.SSC)},
}
# tonic's datasets that are spikeforge's readers' data sets take their defaults (tonic:SHD runs as shd)
_TONIC_TWINS = {"NMNIST": DataSet.NMNIST, "DVSGesture": DataSet.DVSGESTURE, "CIFAR10DVS": DataSet.CIFAR10DVS,
                "SHD": DataSet.SHD, "SSC": DataSet.SSC}
# Defaults for spike-time input (measured): finer steps resolve the input times; a readout that
# integrates over the whole window (tau_out > T) avoids plateaus where every sample looks alike late.
ENCODING_DEFAULTS: dict[Encoding, dict[str, Any]] = {
    Encoding.CURRENT: {},
    Encoding.LATENCY: {"steps": 80, "input_scale": 3.0, "tau_out": 100.0, "lr": 0.03, "epochs": 60},
}
# EventProp: spike-time input and current-based neurons (their spike times move smoothly with the
# weights; a LIF's delta synapses make spikes only at input times); tuned on Yin-Yang.
METHOD_DEFAULTS: dict[Method, dict[str, Any]] = {
    Method.BPTT: {},
    Method.EVENTPROP: {"encoding": Encoding.LATENCY, "loss": Loss.FIRST_SPIKE, "neuron": "CubaLIF", "steps": 40,
                       "hidden": 200, "lr": 0.02, "batch_size": 32, "epochs": 60, "input_scale": 1.0, "tau_out": 20.0,
                       "neuron_params": {"tau_syn": 5.0, "tau_mem": 20.0}},
    Method.CONVERT: {"steps": 32, "lr": 0.01}, Method.PROXY: {"steps": 8, "lr": 0.01},
    # local rules: the settings of benchmarks/stdp_diehl_cook.py and desire_digits.py (RESULTS.md 14)
    Method.STDP: {"hidden": 200, "steps": 60, "epochs": 5, "batch_size": 16, "lr": 0.1, "schedule": Schedule.LINEAR},
    Method.DESIRE: {"hidden": 512, "steps": 20, "epochs": 30, "batch_size": 16, "lr": 0.01,
                    "schedule": Schedule.LINEAR},
}
# digits: 64 inputs spread over the window; this scale gives ~0.4 hidden spikes per neuron at the start;
# ON/OFF input channels, so that dark pixels fire before the first output spike decides, and dropout of hidden
# spikes against over-fitting (RESULTS.md 12c, session 9: 97.31 % mean of seeds 0-2, 97.12 % of
# fresh seeds 3-5, 96.93 % with dropout 0.4; without complement and with dropout 0.25, 95.17 %; with neither, 92.20 %).
# Yin-Yang: 64 000 generated training points for 10 epochs (20 000 Adam steps, as the GeNN reference's
# long run on fresh points; RESULTS.md 12c, session 7: 98.53 % mean of 3 seeds against 97.70 % for 60
# epochs over the published 5 000)
EVENTPROP_DATA_DEFAULTS: dict[DataSet, dict[str, Any]] = {DataSet.DIGITS: {"input_scale": 2.0, "dropout": 0.5,
                                                                            "complement": True},
                                                          DataSet.YINYANG: {"train_size": 64000, "epochs": 10}}
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
    dataset = overrides.get("dataset", DataSet.YINYANG)
    if isinstance(dataset, str) and dataset.startswith("tonic:"):
        overrides = {**overrides, "dataset": DataSet.TONIC, "tonic_dataset": dataset[len("tonic:"):]}
    dataset = _enum("dataset", overrides.get("dataset", DataSet.YINYANG))
    method = _enum("method", overrides.get("method", Method.BPTT))
    encoding = _enum("encoding", overrides.get("encoding", METHOD_DEFAULTS[method].get("encoding", Encoding.CURRENT)))
    by_method = {**METHOD_DEFAULTS[method], **(EVENTPROP_DATA_DEFAULTS.get(dataset, {})
                                               if method is Method.EVENTPROP else {})}
    if "neuron" in overrides:                      # the method's neuron parameters are its neuron's
        by_method.pop("neuron_params", None)
    defaults = DATASET_DEFAULTS[_TONIC_TWINS.get(overrides.get("tonic_dataset"), dataset)
                                if dataset is DataSet.TONIC else dataset]
    values = {**defaults, **ENCODING_DEFAULTS[encoding], **by_method, **overrides, "dataset": dataset}
    return TrainConfig(**values)


def neuron_kwargs(cfg: TrainConfig) -> dict[str, Any]:
    """The hidden neurons' keyword arguments: ``cfg.neuron_params`` (or the tuned defaults
    when it is empty), plus ``reset``/``detach_reset`` where the neuron has the option."""
    kw = dict(cfg.neuron_params) if cfg.neuron_params else dict(NEURON_DEFAULTS.get(cfg.neuron, {}))
    options = REGISTRY[cfg.neuron].options()
    for key, default in OPTION_DEFAULTS.items():
        if key in options:
            kw[key] = default if getattr(cfg, key) is None else getattr(cfg, key)
    return kw


def _positive(value) -> bool:
    return not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value) and value > 0


def _check_data_options(cfg: TrainConfig) -> None:
    """``tonic_dataset``, ``data_root``, ``workers``, ``cache`` and ``frames`` fit the data set."""
    name = cfg.data_name
    if cfg.dataset is not DataSet.TONIC and cfg.tonic_dataset is not None:
        raise ConfigError(f"tonic_dataset is for dataset tonic:<Name>, not {cfg.dataset.value}")
    if cfg.dataset is DataSet.TONIC and not (isinstance(cfg.tonic_dataset, str) and cfg.tonic_dataset.isidentifier()):
        raise ConfigError(f"dataset tonic:<Name> needs the class name of a tonic dataset (tonic:NMNIST), "
                          f"got {cfg.tonic_dataset!r}")
    if isinstance(cfg.workers, bool) or not isinstance(cfg.workers, int) or cfg.workers < 0:
        raise ConfigError(f"workers must be a non-negative integer, got {cfg.workers!r}")
    if not isinstance(cfg.cache, bool):
        raise ConfigError(f"cache must be true or false, got {cfg.cache!r}")
    if not cfg.dataset.on_disk:
        for key, given in (("data_root", cfg.data_root is not None), ("workers", cfg.workers != 0),
                           ("cache", cfg.cache)):
            if given:
                raise ConfigError(f"{key} is for data sets read from files; {name} is embedded: remove {key}")
        if cfg.frames is Frames.BINARY and not cfg.dataset.events:
            raise ConfigError(f"frames binary is for event data; {name} holds static features: remove frames")
        return
    if not isinstance(cfg.data_root, str) or not cfg.data_root:
        folder = cfg.tonic_dataset if cfg.dataset is DataSet.TONIC else "<Name>"
        raise ConfigError(f"dataset {name} needs --data-root DIR (the folder holding {folder}/; nothing is "
                          f"downloaded)")
    if cfg.cache and cfg.dataset is DataSet.TONIC:
        raise ConfigError("cache is for spikeforge's own readers (--dataset nmnist, shd, ...); for a tonic "
                          "dataset use tonic.DiskCachedDataset in Python, or remove cache")


def _check_method(cfg: TrainConfig) -> None:
    """Each method other than BPTT checks what it needs in its own module."""
    if cfg.dropout and cfg.method not in (Method.BPTT, Method.EVENTPROP):
        raise ConfigError(f"dropout drops hidden spikes in gradient training (methods bptt, eventprop), "
                          f"got method {cfg.method.value}")
    if cfg.method in (Method.CONVERT, Method.PROXY):
        from .convert_model import check_convert
        check_convert(cfg)
    elif cfg.method in (Method.STDP, Method.DESIRE):
        from .local_model import check_local
        check_local(cfg)
    elif cfg.method is Method.EVENTPROP:
        from .event_model import check_eventprop
        check_eventprop(cfg)


def _check_device(device) -> None:
    """The device must name a CPU or CUDA device (whether this machine has it is checked
    when a run starts)."""
    import torch

    try:
        kind = torch.device(device).type if isinstance(device, str) else None
    except (RuntimeError, ValueError):
        kind = None
    if kind not in ("cpu", "cuda"):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")


def _check_neuron(cfg: TrainConfig) -> None:
    """The hidden neuron exists and spikes; every key of ``neuron_params`` is one of its
    parameters (a number), ``learn_<parameter>`` flags or options; ``reset`` and
    ``detach_reset`` are given only for neurons that have them."""
    spec = REGISTRY.get(cfg.neuron) if isinstance(cfg.neuron, str) else None
    if spec is None or not spec.spiking:
        names = ", ".join(n for n, s in REGISTRY.items() if s.spiking)
        raise ConfigError(f"neuron must be a spiking neuron of spikeforge.neurons.REGISTRY ({names}), "
                          f"got {cfg.neuron!r}")
    if not isinstance(cfg.neuron_params, dict):
        raise ConfigError(f"neuron_params must be a table/mapping, got {cfg.neuron_params!r}")
    options = spec.options()
    for key in OPTION_DEFAULTS:
        if getattr(cfg, key) is not None and key not in options:
            raise ConfigError(f"{key}: neuron {cfg.neuron} has no {key} option (its options: {list(options)}); "
                              f"remove {key} from the configuration")
    spec_options = {}
    for key, value in cfg.neuron_params.items():
        _check_neuron_param(cfg.neuron, spec, key, value)
        if key in options:
            spec_options[key] = value
    try:
        spec(**spec_options)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"neuron_params of neuron {cfg.neuron}: {e}") from None


def _check_neuron_param(neuron: str, spec, key: str, value) -> None:
    where = f"neuron_params.{key} (neuron {neuron})"
    if key in OPTION_DEFAULTS:
        raise ConfigError(f"{where}: {key} is set at the top level of the configuration, not in neuron_params")
    if key in spec.params:
        values = value if isinstance(value, list) else [value]
        finite = values and all(not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)
                                for v in values)
        if not finite:
            raise ConfigError(f"{where} must be a finite number (or a list of them, one per neuron), got {value!r}")
        if spec.params[key].positive and min(values) <= 0:
            raise ConfigError(f"{where} must be > 0, got {value!r}")
    elif key.startswith("learn_") and key[6:] in spec.params:
        if not isinstance(value, bool):
            raise ConfigError(f"{where} must be true or false, got {value!r}")
    elif key not in spec.options():
        raise ConfigError(f"{where}: {neuron} has no parameter or option {key!r}; parameters: {list(spec.params)}, "
                          f"options: {[o for o in spec.options() if o not in OPTION_DEFAULTS]}")
