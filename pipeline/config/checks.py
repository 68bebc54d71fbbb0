"""The error every params.yaml problem raises, and the one-line check the config sections use.

Its own module, importing nothing of the project: the dataset modules define their own config
sections with it, and pipeline.config builds params.yaml's dataset sections from their records.
"""
from __future__ import annotations

from typing import Any


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key and the fix."""


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: got {value!r}, expected {expected}")
