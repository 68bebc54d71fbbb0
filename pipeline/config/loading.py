"""params.yaml -> the typed config (pipeline.config.schema): the only reader of params.yaml.

Every error names the offending key (as a dotted path) and says what is valid, so a typo fails
before any download or training starts.
"""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from pipeline.config.schema import DATASET_SECTIONS, ConfigError, DatasetSections, Params, RuntimeConfig, TrainConfig
from pipeline.data.datasets import declare_from_params, get_dataset, load_plugins

PARAMS_FILE = Path("params.yaml")
# Stands for an entry params.yaml leaves out, between filling it in and parsing it as all defaults.
_LEFT_OUT = object()


def load_params(path: Path | str = PARAMS_FILE) -> Params:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} not found: run from the repository root (where dvc.yaml is)")
    with path.open() as f:
        try:
            raw = yaml.safe_load(f) or {}
        except yaml.YAMLError as e:
            raise ConfigError(f"{path} is not valid YAML: {e}") from None
    params = parse_params(raw, source=str(path))
    check_device(params.runtime, str(path))
    return params


def check_device(runtime: RuntimeConfig, source: str = "params.yaml") -> None:
    """Fails when runtime.device names a device this machine lacks, before any data is read.

    Here and not in parse_params: a params file is valid on the machine it is meant for, and
    profiles and tests parse files meant for others.
    """
    if runtime.device != "cuda":
        return
    import torch

    if not torch.cuda.is_available():
        raise ConfigError(f"{source}: runtime.device: got 'cuda', but no CUDA device is available on this "
                          "machine (torch.cuda.is_available() is False); use auto (CUDA when present) or cpu")


def parse_params(raw: dict[str, Any], source: str = "params.yaml") -> Params:
    """The typed config of a params mapping. Model names and settings are checked against the
    model registry by pipeline.models.checks (the CLI runs both), so that this module, which every
    stage imports, does not import the models."""
    try:
        if not isinstance(raw, dict):
            raise ConfigError(f"top level: expected a mapping, got {raw!r}")
        load_plugins(raw.get("plugins"))
        declare_from_params(raw)
        return _parse_dataclass(Params, _with_listed_sections(raw), "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None


def merge_overrides(base: dict[str, Any], overrides: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Deep-merges a profile into params, in place; a key the base lacks is an error (a typo).

    Under `train.<dataset>` a whole new model entry is allowed: a profile may add models; under
    `train.<dataset>.<model>` any model setting is allowed, also one the base leaves at its default.
    """
    adding_models = where.startswith("train.") and where.count(".") == 1
    # A model's optional settings (pretrained, input_size, ...) may be set where params omit them.
    model_settings = where.startswith("train.") and where.count(".") == 2
    optional = {f.name for f in dataclasses.fields(TrainConfig)} if model_settings else set()
    for key, value in overrides.items():
        path = _join(where, key)
        if key not in base and not adding_models and key not in optional:
            raise ConfigError(f"override key {path!r} is not in params.yaml; valid keys here: "
                              f"{', '.join(map(str, base))}")
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merge_overrides(base[key], value, path)
        else:
            base[key] = value
    return base


def _with_listed_sections(raw: dict[str, Any]) -> dict[str, Any]:
    """`raw` with an empty entry for each listed dataset's section it leaves out: its defaults (a
    declared folder's prepare settings), or an error naming the first required key."""
    listed = raw.get("datasets")
    if not isinstance(listed, list):
        return raw  # the generic parser names the problem
    raw = dict(raw)
    for section in DATASET_SECTIONS:
        entries = raw.get(section, {})
        if not isinstance(entries, dict):
            continue
        for name in listed:
            try:
                record = get_dataset(name)
            except (ValueError, TypeError):
                continue  # Params names the unknown dataset with the known ones
            if section in record.sections and section != "evaluate" and name not in entries:
                entries = {**entries, name: _LEFT_OUT}
        raw[section] = entries
    return raw


def _parse_sections(raw: Any, where: str) -> DatasetSections:
    """`download`, `prepare` or `evaluate`: each dataset's entry parsed with its record's dataclass."""
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: expected a mapping of dataset names, got {raw!r}")
    entries, defaulted = {}, set()
    for name, value in raw.items():
        key = _join(where, name)
        if value is _LEFT_OUT:
            defaulted.add(name)
            value = None
        try:
            record = get_dataset(name)
        except ValueError as e:
            raise ConfigError(f"{key}: {e}") from None
        if where not in record.sections:
            raise ConfigError(f"{key}: dataset {name} has no {where} settings; remove the entry")
        entries[name] = _parse_dataclass(record.sections[where], {} if value is None else value, key)
    return DatasetSections(entries, frozenset(defaulted))


# --- generic dataclass parsing -----------------------------------------------------------------

def _parse_dataclass(cls: type, raw: Any, where: str) -> Any:
    if not isinstance(raw, dict):
        raise ConfigError(f"{where or 'top level'}: expected a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(raw) - set(fields)
    if unknown:
        key = sorted(unknown)[0]
        raise ConfigError(f"unknown key {_join(where, key)!r}; valid keys: {', '.join(fields)}")
    values = {}
    for name, f in fields.items():
        key = _join(where, name)
        if name not in raw:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError(f"missing key {key!r}")
            continue
        values[name] = _parse_value(hints[name], raw[name], key)
    try:
        return cls(**values)
    except ConfigError as e:
        raise ConfigError(f"{where}.{e}" if where else str(e)) from None


def _parse_value(tp: Any, value: Any, key: str) -> Any:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _parse_value(inner, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: got {value!r}, expected one of {', '.join(map(str, args))}")
        return value
    if origin is tuple:  # tuple[T, ...]: a YAML list
        if not isinstance(value, list):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        return tuple(_parse_value(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        _, val_tp = args
        return {k: _parse_value(val_tp, v, _join(key, k)) for k, v in value.items()}
    if tp is DatasetSections:
        return _parse_sections(value, key)
    if dataclasses.is_dataclass(tp):
        return _parse_dataclass(tp, value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}: got {value!r}, expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: got {value!r}, expected an integer")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{key}: got {value!r}, expected a number")
        # YAML's .inf and .nan are floats: they would pass every range check written as `x > 0`.
        if not math.isfinite(value):
            raise ConfigError(f"{key}: got {value!r}, expected a finite number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}: got {value!r}, expected a string")
        return value
    raise TypeError(f"unsupported config type {tp!r} at {key}")


def _join(where: str, key: Any) -> str:
    return f"{where}.{key}" if where else str(key)
