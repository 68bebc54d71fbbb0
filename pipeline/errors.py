"""The errors a user sees as one line, and the one-line check that raises them.

A leaf module, importing nothing of the project: the dataset modules check their params.yaml
sections with it and pipeline.config parses the rest, so neither has to import the other.
"""
from __future__ import annotations

from typing import Any

# A seed seeds numpy's legacy generator too, which takes 0..2**32 - 1 only.
MAX_SEED = 2**32 - 1
# Image sides (cached images, model inputs): above this a 2-core machine runs out of memory long
# before an epoch ends (224, ImageNet's, is what profiles/full.yaml uses).
MAX_SIDE = 512


class PipelineError(Exception):
    """What a stage reports as one line (`pipeline <stage>: error: ...`, exit 2), no traceback: the
    message names the file, key or value and the fix. Each kind below, wherever it is defined."""


class ConfigError(PipelineError, ValueError):
    """A params.yaml problem; the message names the key and the fix."""


class DataError(PipelineError, RuntimeError):
    """A data file is missing, corrupt or not what it claims to be; the message names it."""


def check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: got {value!r}, expected {expected}")


def check_seed(seed: int, key: str) -> None:
    check(isinstance(seed, int) and 0 <= seed <= MAX_SEED, key, seed, f"an integer in [0, 2**32 - 1 = {MAX_SEED}]")
