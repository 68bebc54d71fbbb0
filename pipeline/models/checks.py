"""params.yaml's `train` section against the model registry: each model's settings checked where
the config is read (the CLI, before any stage starts work), every error naming its key.

Apart from pipeline.config, which parses the file without importing a model, so that a change
to a model's code re-runs that model's stages and not the downloads.
"""
from __future__ import annotations

from pipeline.config import ConfigError, Params, TrainConfig
from pipeline.data.datasets import get_dataset
from pipeline.models.registry import ModelSpec, UnknownModelError, get_model_spec

NPROC_KEY = "runtime.distributed.nproc"


def check_models(params: Params, source: str = "params.yaml") -> None:
    """ConfigError for the first model name or setting its registry entry cannot honour."""
    for dataset, models in params.train.items():
        for name in models:
            try:
                spec = get_model_spec(name)
            except UnknownModelError as e:
                raise ConfigError(f"{source}: train.{dataset}.{name}: {e}") from None
            check_model(params, dataset, spec, source)


def check_model(params: Params, dataset: str, spec: ModelSpec, source: str = "params.yaml") -> None:
    """ConfigError where train.<dataset>.<model> is missing or asks what the model cannot do."""
    key = f"train.{dataset}.{spec.name}"
    cfg = params.train_config(dataset, spec.name)
    if not spec.accepts(dataset):
        raise ConfigError(f"{source}: {key}: model {spec.name!r} trains on {' and '.join(spec.datasets)} "
                          "and on image folders only")
    problem = settings_problem(spec, dataset, cfg, params.runtime.distributed.nproc)
    if problem:
        raise ConfigError(f"{source}: {key}{problem}")


def settings_problem(spec: ModelSpec, dataset: str, cfg: TrainConfig, nproc: int = 1) -> str | None:
    """What is wrong with `cfg` for this model (".key: why; fix"), or None."""
    if cfg.pretrained and not spec.accepts_pretrained:
        return f".pretrained: {spec.name} has no pretrained weights; set it to false"
    # A fixed-size model reads a padding dataset (MNIST) at its own side only; a flexible one
    # adapts, and other datasets are resized to any side.
    if get_dataset(dataset).pads and not spec.flexible_input and cfg.input_size not in (None, spec.input_size):
        return f".input_size: {spec.name} reads {spec.input_size}x{spec.input_size} images; set it to null"
    if spec.strategy == "progressive" and (not cfg.head_epochs or cfg.unfrozen_lr is None):
        return (": progressive training needs head_epochs (>= 1, fewer than epochs) and unfrozen_lr (the "
                "lr once everything is unfrozen)")
    if spec.framework == "numpy":
        if cfg.optimizer != "sgd" or cfg.momentum or cfg.weight_decay:
            return (f": a NumPy model trains with plain SGD only; set optimizer: sgd, momentum: 0.0, "
                    f"weight_decay: 0.0 (got optimizer: {cfg.optimizer}, momentum: {cfg.momentum}, "
                    f"weight_decay: {cfg.weight_decay})")
        if nproc > 1:
            return (f": {spec.name} is a NumPy model and trains in one process only; set {NPROC_KEY}: 1 "
                    "to train it")
    if cfg.batch_size % nproc:
        return (f".batch_size: {cfg.batch_size} does not split evenly over {NPROC_KEY}={nproc} processes "
                f"(each takes batch_size / nproc images per step); make it a multiple of {nproc} or "
                f"change {NPROC_KEY}")
    return None
