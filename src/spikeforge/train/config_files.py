"""Configuration files: the keys of a TOML, YAML or JSON file, checked against ``TrainConfig``."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .config import ConfigError, _check_keys

__all__ = ["load_config_file"]


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
