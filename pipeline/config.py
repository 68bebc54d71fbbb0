"""params.yaml -> typed, validated config. The only module that reads params.yaml.

Every error names the offending key (as a dotted path) and says what is valid, so a typo fails
before any download or training starts.
"""
from __future__ import annotations

import dataclasses
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

PARAMS_FILE = Path("params.yaml")
MNIST_MIRROR_ENV = "PIPELINE_MNIST_MIRROR"
CRACK_SOURCE_ENV = "PIPELINE_CRACK_SOURCE"
DATASETS = ("mnist", "crack")
MAX_LR = 10.0


class ConfigError(ValueError):
    """A params.yaml problem; the message names the key and the fix."""


@dataclass(frozen=True)
class MnistDownloadConfig:
    # null: torchvision's official mirrors. Otherwise a folder or http(s)/file URL holding the
    # four official *-idx?-ubyte.gz files. The PIPELINE_MNIST_MIRROR environment variable wins.
    mirror: str | None = None


@dataclass(frozen=True)
class CrackDownloadConfig:
    # null: the Kaggle dataset below, through the kaggle client (credentials from KAGGLE_USERNAME
    # and KAGGLE_KEY or ~/.kaggle/kaggle.json). Otherwise a local copy: a folder holding
    # Positive/ and Negative/, or a .zip of that layout. PIPELINE_CRACK_SOURCE wins.
    source: str | None = None
    kaggle_dataset: str = "arunrk7/surface-crack-detection"


@dataclass(frozen=True)
class DownloadConfig:
    mnist: MnistDownloadConfig
    crack: CrackDownloadConfig


@dataclass(frozen=True)
class PrepareConfig:
    val_fraction: float
    seed: int
    # Keep a stratified subset of this many training images (tests); null keeps all 60,000.
    train_limit: int | None = None

    def __post_init__(self) -> None:
        _check(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "a number in (0, 1)")
        _check(self.train_limit is None or self.train_limit >= 100, "train_limit",
               self.train_limit, "null or an integer >= 100")


@dataclass(frozen=True)
class CrackPrepareConfig:
    image_size: int  # side of the cached grayscale images (decoded and resized once)
    val_fraction: float
    test_fraction: float
    seed: int
    # Keep a stratified subset of this many images (tests); null keeps all.
    limit: int | None = None

    def __post_init__(self) -> None:
        _check(16 <= self.image_size <= 512, "image_size", self.image_size, "an integer in [16, 512]")
        _check(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "a number in (0, 1)")
        _check(0.0 < self.test_fraction < 1.0 and self.val_fraction + self.test_fraction < 1.0,
               "test_fraction", self.test_fraction, "a number in (0, 1) with val_fraction + test_fraction < 1")
        _check(self.limit is None or self.limit >= 20, "limit", self.limit, "null or an integer >= 20")


@dataclass(frozen=True)
class PrepareSection:
    mnist: PrepareConfig
    crack: CrackPrepareConfig


@dataclass(frozen=True)
class TrainConfig:
    optimizer: Literal["sgd", "adam", "adamw"]
    lr: float  # the peak lr under a schedule
    batch_size: int
    epochs: int
    # Early stopping on validation accuracy: stop after this many epochs without improvement
    # and restore the best weights (lab-B). 0 disables it.
    patience: int = 0
    momentum: float = 0.0  # SGD only
    weight_decay: float = 0.0
    # Transfer learning (resnet18_*): true loads ImageNet weights through torchvision's cache,
    # downloading them when missing (a clear error where neither works); false starts from
    # random weights (CI, tests).
    pretrained: bool = False
    # Side of the square input the model reads; null: the model's own (pipeline models).
    input_size: int | None = None
    # The course's augmentation for transfer learning, on training batches only.
    augment: bool = False
    # resnet18_progressive: epochs that train the head only, then everything at unfrozen_lr.
    head_epochs: int = 0
    unfrozen_lr: float | None = None
    # lr over the run, stepped every batch: constant; onecycle (warm-up to lr over the first 30%
    # of steps, then cosine annealing to ~0); cosine (linear warm-up over warmup_epochs, then
    # cosine annealing from lr down to 0).
    schedule: Literal["constant", "onecycle", "cosine"] = "constant"
    warmup_epochs: float = 0.0  # cosine only
    # Cross-entropy against targets smoothed towards uniform by this much (torchvision's
    # --label-smoothing); binary models smooth their 0/1 targets the same way.
    label_smoothing: float = 0.0
    # Exponential moving average of the weights (and BatchNorm statistics), updated every step
    # with this decay (warmed up as min(decay, (1 + t) / (10 + t))); when set, the average is what
    # is validated, kept as best and checkpointed. null: off.
    ema_decay: float | None = None
    # Clip the gradients' global L2 norm to this before each step. null: off.
    grad_clip: float | None = None
    nesterov: bool = False  # SGD with momentum only
    # Train (and validate) on a stratified subset of this many images of the prepared split
    # (drawn with each run's seed): the CI profile's deep models. null: the whole split.
    train_subset: int | None = None
    val_subset: int | None = None
    # This model's own list of seeds (one training run each); null: the top-level `seeds`.
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Above 10 no optimiser here trains: the loss overflows in the first steps.
        _check(0 < self.lr <= MAX_LR, "lr", self.lr, f"a number in (0, {MAX_LR:g}]")
        _check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
        _check(self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        _check(self.patience >= 0, "patience", self.patience, "0 (off) or a positive integer")
        _check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "a number in [0, 1)")
        _check(0 <= self.weight_decay <= 1, "weight_decay", self.weight_decay, "a number in [0, 1]")
        _check(self.input_size is None or 16 <= self.input_size <= 512, "input_size",
               self.input_size, "null or an integer in [16, 512]")
        _check(self.head_epochs == 0 or 0 < self.head_epochs < self.epochs, "head_epochs",
               self.head_epochs, "0, or a positive integer smaller than epochs")
        _check(self.unfrozen_lr is None or 0 < self.unfrozen_lr <= MAX_LR, "unfrozen_lr", self.unfrozen_lr,
               f"null or a number in (0, {MAX_LR:g}]")
        _check(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0), "nesterov",
               self.nesterov, "false unless optimizer is sgd with momentum > 0")
        _check(self.schedule == "constant" or not self.head_epochs, "schedule", self.schedule,
               "constant when head_epochs is set (each transfer phase has its own lr)")
        _check(0.0 <= self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs,
               "a number of epochs >= 0 and below epochs")
        _check(self.schedule == "cosine" or not self.warmup_epochs, "warmup_epochs",
               self.warmup_epochs, "0 unless schedule is cosine (onecycle has its own warm-up)")
        _check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", self.label_smoothing,
               "a number in [0, 0.5), e.g. 0.1")
        _check(self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "ema_decay", self.ema_decay,
               "null (off) or a number in (0, 1), e.g. 0.999")
        _check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip,
               "null (off) or a positive max gradient norm, e.g. 1.0")
        for key in ("train_subset", "val_subset"):
            value = getattr(self, key)
            _check(value is None or value >= 100, key, value, "null or an integer >= 100")
        if self.seeds is not None:
            _check_seeds(self.seeds, "seeds")


@dataclass(frozen=True)
class CudaConfig:
    """Speed switches that act on CUDA only; on a CPU the same code runs with each one a no-op."""
    amp: bool = True  # autocast to bfloat16 (float16 + GradScaler where bf16 is missing)
    cudnn_benchmark: bool = True  # let cuDNN time its algorithms for each input shape
    pin_memory: bool = True  # page-locked host batches, so copies can overlap compute
    non_blocking: bool = True  # asynchronous host-to-device copies


@dataclass(frozen=True)
class DistributedConfig:
    """Data-parallel training in `nproc` processes (torchrun + DistributedDataParallel)."""
    # 1: one process. N > 1: `pipeline train` re-runs itself under torchrun with N processes
    # (one per GPU on CUDA), each on 1/N of every batch.
    nproc: int = 1
    # auto: nccl on CUDA, gloo on a CPU.
    backend: Literal["auto", "gloo", "nccl"] = "auto"

    def __post_init__(self) -> None:
        _check(self.nproc >= 1, "nproc", self.nproc, "1 (one process) or more processes, e.g. 2")


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # 0: one per core (shared out among the processes of a distributed run)
    eval_batch_size: int = 1000  # lab-A's test batch
    # NHWC model and inputs on every device: what tensor cores want, and on a CPU (oneDNN)
    # 1.13-1.39x faster training and 1.17-1.86x faster evaluation of the CNNs (bench/cpu_speedups.py).
    channels_last: bool = True
    cuda: CudaConfig = field(default_factory=CudaConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        _check(self.threads >= 0, "threads", self.threads, "0 (all cores) or a positive integer")
        _check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "a positive integer")
        _check(self.distributed.backend != "nccl" or self.device != "cpu", "distributed.backend",
               self.distributed.backend, "auto or gloo when device is cpu (nccl needs CUDA GPUs)")


@dataclass(frozen=True)
class Params:
    download: DownloadConfig
    prepare: PrepareSection
    runtime: RuntimeConfig
    # The datasets whose stages and report sections run, in the report's order. DVC has no
    # conditionals, so dvc.yaml's model stages iterate over train.<dataset>: a dataset left out
    # here must have `train.<dataset>: {}` (checked below, with the fix in the message).
    datasets: tuple[str, ...] = DATASETS
    # dataset -> model name -> settings; the order is the order of the report.
    train: dict[str, dict[str, TrainConfig]] = field(default_factory=dict)
    # Every model trains once per seed (weights, shuffling, subsets); the report shows the mean
    # and spread across them. The first seed's run gives the figures, predictions and McNemar.
    seeds: tuple[int, ...] = (12,)  # lab-C's seed

    def __post_init__(self) -> None:
        _check_seeds(self.seeds, "seeds")
        _check(len(self.datasets) >= 1 and len(set(self.datasets)) == len(self.datasets)
               and set(self.datasets) <= set(DATASETS), "datasets", list(self.datasets),
               f"a non-empty list of distinct names out of {', '.join(DATASETS)}, e.g. [mnist]")
        for dataset in DATASETS:
            models = list(self.train.get(dataset) or {})
            if dataset in self.datasets and not models:
                raise ConfigError(f"datasets lists {dataset} but train.{dataset} has no models: add one "
                                  f"(see `pipeline models`) or leave {dataset} out of datasets")
            if dataset not in self.datasets and models:
                raise ConfigError(
                    f"train.{dataset}: got models {', '.join(models)} but {dataset} is not in datasets "
                    f"{list(self.datasets)}: set `{dataset}: {{}}` under train (dvc.yaml runs a stage for "
                    f"each model there), or add {dataset} to datasets")
        for dataset in self.train:
            if dataset not in DATASETS:
                raise ConfigError(f"train.{dataset}: unknown dataset; known: {', '.join(DATASETS)}")

    def mnist_mirror(self) -> str | None:
        return os.environ.get(MNIST_MIRROR_ENV) or self.download.mnist.mirror

    def crack_source(self) -> str | None:
        return os.environ.get(CRACK_SOURCE_ENV) or self.download.crack.source

    def models(self, dataset: str) -> list[str]:
        return list(self.train.get(dataset, {}))

    def train_config(self, dataset: str, model: str) -> TrainConfig:
        from pipeline.models import get_model_spec

        get_model_spec(model)  # an unknown name fails with the registry's list and closest match
        models = self.train.get(dataset, {})
        if model not in models:
            raise ConfigError(
                f"params.yaml: no settings for model {model!r} under train.{dataset}; "
                f"configured models: {', '.join(models) or 'none'}"
            )
        return models[model]

    def seeds_for(self, dataset: str, model: str) -> tuple[int, ...]:
        """The seeds `model` trains with: its own `seeds` setting, else the top-level list."""
        return self.train_config(dataset, model).seeds or self.seeds


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
    try:
        params = _parse_dataclass(Params, raw, "")
    except ConfigError as e:
        raise ConfigError(f"{source}: {e}") from None
    # Imported here so that config stays importable without torch for the error path.
    from pipeline.models import get_model_spec

    for dataset, models in params.train.items():
        for name in models:
            try:
                spec = get_model_spec(name)
            except ValueError as e:
                raise ConfigError(f"{source}: train.{dataset}.{name}: {e}") from None
            if dataset not in spec.datasets:
                raise ConfigError(
                    f"{source}: train.{dataset}.{name}: model {name!r} trains on "
                    f"{' and '.join(spec.datasets)} only"
                )
    return params


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


# --- generic dataclass parsing -----------------------------------------------------------------

def _check(ok: bool, key: str, value: Any, expected: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: got {value!r}, expected {expected}")


def _check_seeds(seeds: tuple[int, ...], key: str) -> None:
    _check(len(seeds) >= 1 and len(set(seeds)) == len(seeds) and min(seeds) >= 0, key, list(seeds),
           "a non-empty list of distinct integers >= 0, e.g. [12, 13]")


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
