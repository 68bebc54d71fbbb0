"""`pipeline models`: the registry as a table or JSON."""
from __future__ import annotations

import json

from pipeline.data.datasets import get_dataset
from pipeline.models.registry import count_params, get_model_spec, list_models


def describe_models() -> list[dict]:
    """One entry per model: name, datasets, parameter count at its home dataset's default input."""
    rows = []
    for name in list_models():
        spec = get_model_spec(name)
        channels = spec.in_channels or get_dataset(spec.dataset).in_channels
        rows.append({"name": name, "dataset": "+".join(spec.datasets), "params": count_params(spec.build()),
                     "input": f"{channels}x{spec.input_size}x{spec.input_size}",
                     "source": spec.source})
    return rows


def print_models(as_json: bool = False) -> None:
    rows = describe_models()
    if as_json:
        print(json.dumps([{k: r[k] for k in ("name", "dataset", "params")} for r in rows], indent=2))
        return
    header = f"{'name':<22}{'dataset':<12}{'params':>12}  {'input':<11}source"
    print(header)
    print("-" * len(header))
    for r in rows:
        print(f"{r['name']:<22}{r['dataset']:<12}{r['params']:>12,}  {r['input']:<11}{r['source']}")
