"""`pipeline profile NAME`: merge profiles/NAME.yaml into params.yaml, keeping its comments.

A profile (e.g. CI's smaller epoch counts) is a partial params file. Every key it sets must
already exist in params.yaml, and the merged file must validate, before anything is written.
"""
from __future__ import annotations

import io
import logging
from pathlib import Path
from typing import Callable

import yaml
from ruamel.yaml import YAML

from pipeline.artifacts import write_text
from pipeline.config.loading import merge_overrides, parse_params
from pipeline.config.schema import ConfigError, Params

log = logging.getLogger(__name__)
PROFILES_DIR = Path("profiles")


def apply_profile(name: str, params_file: Path, validate: Callable[[Params, str], None] | None = None) -> None:
    """`validate(params, source)`: a further check of the merged params before they are written
    (the CLI passes the model registry's)."""
    profile_file = PROFILES_DIR / f"{name}.yaml"
    if not profile_file.exists():
        known = sorted(p.stem for p in PROFILES_DIR.glob("*.yaml"))
        raise ConfigError(f"{profile_file} not found; profiles: {', '.join(known) or 'none'}")
    rt = YAML()  # round-trip: comments and layout of params.yaml survive
    rt.width = 120
    # The profile is read round-trip too, so each value is written as the profile spells it
    # (PyYAML would read back a float dumped as `1e-05` as a string).
    overrides = rt.load(profile_file.read_text()) or {}
    doc = rt.load(params_file.read_text())
    try:
        merge_overrides(doc, overrides)
    except ConfigError as e:
        raise ConfigError(f"{profile_file}: {e}") from None
    buf = io.StringIO()
    rt.dump(doc, buf)
    source = f"{params_file} + {profile_file}"
    merged = parse_params(yaml.safe_load(buf.getvalue()), source=source)
    if validate is not None:
        validate(merged, source)
    write_text(params_file, buf.getvalue())
    log.info("%s now includes profile %s (git checkout %s restores it)", params_file, name, params_file)
