"""The typed config: one frozen dataclass per params.yaml section, each checking its own values.

Each setting is explained here, once; params.yaml shows values only.
"""
from __future__ import annotations

import difflib
from dataclasses import dataclass, field
from typing import Any, Literal

from pipeline.data.datasets import registered
from pipeline.errors import MAX_SIDE, ConfigError, check, check_seed

MAX_LR = 10.0
# Each seed is one training run per model: more than this is a typo (or a generated list), not
# an experiment this pipeline can run; the run's params and the report would carry all of them.
MAX_SEEDS = 100
# The params.yaml sections that hold one entry per dataset, each parsed with the dataclass its
# dataset's record gives (pipeline.data.datasets): config names no dataset.
DATASET_SECTIONS = ("download", "prepare", "evaluate")


class DatasetSections:
    """One params.yaml section's entries by dataset name: `params.prepare.<name>` or
    `params.prepare.get(name)` (None for a dataset without an entry). `defaulted`: the listed
    datasets whose entry params.yaml leaves out (all defaults): DVC cannot name them as params."""

    # A slot beside __dict__, which holds the entries alone.
    __slots__ = ("__dict__", "defaulted")

    def __init__(self, entries: dict[str, Any], defaulted: frozenset[str] = frozenset()) -> None:
        self.__dict__.update(entries)
        self.defaulted = defaulted

    def get(self, name: str) -> Any:
        return self.__dict__.get(name)

    def __iter__(self):
        return iter(self.__dict__)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, DatasetSections) and vars(self) == vars(other)

    def __repr__(self) -> str:
        return f"DatasetSections({vars(self)!r})"


@dataclass(frozen=True)
class ServeConfig:
    """What one request to the served model (`mlflow models serve`, `pipeline predict`) may cost.
    Logged with each model (its model.json), so the served champion enforces the limits of the
    evaluate stage that logged it; a request past one gets a 400 that names the limit."""
    # Bytes of image files in one request (the base64 text, summed), checked before any is decoded.
    max_request_bytes: int = 20_000_000
    max_images: int = 256  # images in one request
    # Pixels an image file may declare (width x height, read from its header before decoding): a
    # 600 KB PNG can declare 13,000 x 13,000 and decode to 0.7 GB. 16.8 M: 4096 x 4096.
    max_pixels: int = 4096 * 4096
    # Seconds one request may take to decode and classify; `mlflow models serve -t` gets the same.
    timeout_s: int = 30

    def __post_init__(self) -> None:
        check(1_000 <= self.max_request_bytes <= 1_000_000_000, "max_request_bytes", self.max_request_bytes,
              "an integer in [1000, 1e9]")
        check(1 <= self.max_images <= 10_000, "max_images", self.max_images, "an integer in [1, 10000]")
        check(MAX_SIDE * MAX_SIDE <= self.max_pixels <= 100_000_000, "max_pixels", self.max_pixels,
              f"an integer in [{MAX_SIDE * MAX_SIDE}, 1e8]")
        check(1 <= self.timeout_s <= 3600, "timeout_s", self.timeout_s, "an integer of seconds in [1, 3600]")


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
    # Robust by design (BENCHMARKS.md, "Crack recipes for another camera"), in pipeline.data.presets:
    # normalise: dataset (the dataset's fixed or measured mean and std; ImageNet's for 3 channels)
    # or per_image (each image minus its own mean, over its own std, in training, evaluation and
    # serving alike: the logged model carries it).
    normalise: Literal["dataset", "per_image"] = "dataset"
    # Training batches only: each image its own random gamma, brightness, contrast, blur and noise
    # (photometric); its own random resized crop, flips and quarter turns (geometric: datasets whose
    # labels do not depend on orientation). Alternatives to `augment`, not additions to it.
    photometric: bool = False
    geometric: bool = False
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
    # (drawn with each run's seed): the deep models within the CPU budget. null: the whole split.
    train_subset: int | None = None
    val_subset: int | None = None
    # This model's own list of seeds (one training run each); null: the top-level `seeds`.
    seeds: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        # Above 10 no optimiser here trains: the loss overflows in the first steps.
        check(0 < self.lr <= MAX_LR, "lr", self.lr, f"a number in (0, {MAX_LR:g}]")
        check(self.batch_size >= 1, "batch_size", self.batch_size, "a positive integer")
        check(self.epochs >= 1, "epochs", self.epochs, "a positive integer")
        check(self.patience >= 0, "patience", self.patience, "0 (off) or a positive integer")
        check(0.0 <= self.momentum < 1.0, "momentum", self.momentum, "a number in [0, 1)")
        check(0 <= self.weight_decay <= 1, "weight_decay", self.weight_decay, "a number in [0, 1]")
        check(self.input_size is None or 16 <= self.input_size <= MAX_SIDE, "input_size",
              self.input_size, f"null or an integer in [16, {MAX_SIDE}]")
        check(not (self.augment and (self.photometric or self.geometric)), "augment", self.augment,
              "false when photometric or geometric is set (the course's pipeline or the batched one)")
        check(self.head_epochs == 0 or 0 < self.head_epochs < self.epochs, "head_epochs",
              self.head_epochs, "0, or a positive integer smaller than epochs")
        check(self.unfrozen_lr is None or 0 < self.unfrozen_lr <= MAX_LR, "unfrozen_lr", self.unfrozen_lr,
              f"null or a number in (0, {MAX_LR:g}]")
        check(not self.nesterov or (self.optimizer == "sgd" and self.momentum > 0), "nesterov",
              self.nesterov, "false unless optimizer is sgd with momentum > 0")
        check(self.schedule == "constant" or not self.head_epochs, "schedule", self.schedule,
              "constant when head_epochs is set (each transfer phase has its own lr)")
        check(0.0 <= self.warmup_epochs < self.epochs, "warmup_epochs", self.warmup_epochs,
              "a number of epochs >= 0 and below epochs")
        check(self.schedule == "cosine" or not self.warmup_epochs, "warmup_epochs",
              self.warmup_epochs, "0 unless schedule is cosine (onecycle has its own warm-up)")
        check(0.0 <= self.label_smoothing < 0.5, "label_smoothing", self.label_smoothing,
              "a number in [0, 0.5), e.g. 0.1")
        check(self.ema_decay is None or 0.0 < self.ema_decay < 1.0, "ema_decay", self.ema_decay,
              "null (off) or a number in (0, 1), e.g. 0.999")
        check(self.grad_clip is None or self.grad_clip > 0, "grad_clip", self.grad_clip,
              "null (off) or a positive max gradient norm, e.g. 1.0")
        for key in ("train_subset", "val_subset"):
            value = getattr(self, key)
            check(value is None or value >= 100, key, value, "null or an integer >= 100")
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
        check(self.nproc >= 1, "nproc", self.nproc, "1 (one process) or more processes, e.g. 2")


@dataclass(frozen=True)
class RuntimeConfig:
    device: Literal["auto", "cpu", "cuda"] = "auto"
    threads: int = 0  # 0: one per core (shared out among the processes of a distributed run)
    # Images per forward pass when scoring (validation, test, other sources). 256: on a CPU, lab-A's
    # test batch of 1000 takes up to 2x as long per image (bench/eval_batch.py), and the evaluate
    # stage reads its batch-256 latency off the scoring pass itself (pipeline.engine.cost).
    eval_batch_size: int = 256
    # NHWC model and inputs on every device: what tensor cores want, and on a CPU (oneDNN)
    # 1.13-1.39x faster training and 1.17-1.86x faster evaluation of the CNNs (bench/cpu_speedups.py).
    channels_last: bool = True
    # Sample the machine's CPU, memory, disk and network (NVIDIA GPUs too, with nvidia-ml-py
    # installed: pip install -e ".[gpu]") into each training run as system/* metrics, every
    # second (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides), from the train stage's MLflow
    # child. Off by default: its cost is in BENCHMARKS.md, "System metrics".
    system_metrics: bool = False
    cuda: CudaConfig = field(default_factory=CudaConfig)
    distributed: DistributedConfig = field(default_factory=DistributedConfig)

    def __post_init__(self) -> None:
        check(self.threads >= 0, "threads", self.threads, "0 (all cores) or a positive integer")
        check(self.eval_batch_size >= 1, "eval_batch_size", self.eval_batch_size, "a positive integer")
        check(self.distributed.backend != "nccl" or self.device != "cpu", "distributed.backend",
              self.distributed.backend, "auto or gloo when device is cpu (nccl needs CUDA GPUs)")


@dataclass(frozen=True)
class Params:
    # The datasets whose stages and report sections run, in the report's order: dvc.yaml is
    # generated from this list (`pipeline stages`), so a dataset left out has no stage at all.
    # A name is a built-in dataset (`pipeline datasets` lists them) or a folder declared under
    # download (`<name>: {kind: imagefolder, source: <folder>}`).
    datasets: tuple[str, ...]
    # Per dataset, its own settings: each is explained in the dataset's module under
    # pipeline/data/ (a declared folder's: pipeline/data/imagefolder.py).
    download: DatasetSections
    prepare: DatasetSections
    runtime: RuntimeConfig
    # dataset -> model name -> settings; the order is the order of the report. Models of a
    # dataset left out of `datasets` stay here, unused.
    train: dict[str, dict[str, TrainConfig]] = field(default_factory=dict)
    # Every model trains once per seed (weights, shuffling, subsets); the report shows the mean
    # and spread across them. The first seed's run gives the figures, predictions and McNemar.
    seeds: tuple[int, ...] = (12,)  # lab-C's seed
    evaluate: DatasetSections = field(default_factory=lambda: DatasetSections({}))
    serve: ServeConfig = field(default_factory=ServeConfig)
    # Modules, outside this package, that register datasets or dataset kinds when imported
    # (pipeline/data/datasets.py says how), e.g. [my_datasets.digits]: imported before the
    # sections above are parsed, so their datasets are named here like the built-in ones.
    plugins: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        _check_seeds(self.seeds, "seeds")
        known = registered()
        check(len(self.datasets) >= 1 and len(set(self.datasets)) == len(self.datasets)
               and set(self.datasets) <= set(known), "datasets", list(self.datasets),
               f"a non-empty list of distinct names out of {', '.join(known)} (or a folder declared as "
               "download.<name>: {kind: imagefolder, source: <folder>}), e.g. [" + next(iter(known), "") + "]")
        for dataset in self.datasets:
            if not self.train.get(dataset):
                raise ConfigError(f"datasets lists {dataset} but train.{dataset} has no models: add one "
                                  f"(see `pipeline models`) or leave {dataset} out of datasets")
        for dataset in self.train:
            if dataset not in known:
                raise ConfigError(f"train.{dataset}: unknown dataset; known: {', '.join(known)}")

    def models(self, dataset: str) -> list[str]:
        return list(self.train.get(dataset, {}))

    def train_config(self, dataset: str, model: str) -> TrainConfig:
        models = self.train.get(dataset, {})
        if model not in models:
            close = difflib.get_close_matches(model, models, n=1)
            raise ConfigError(
                f"params.yaml: no settings for model {model!r} under train.{dataset}"
                f"{f' (did you mean {close[0]!r}?)' if close else ''}; configured models: "
                f"{', '.join(models) or 'none'} (`pipeline models` lists every model there is)")
        return models[model]

    def seeds_for(self, dataset: str, model: str) -> tuple[int, ...]:
        """The seeds `model` trains with: its own `seeds` setting, else the top-level list."""
        return self.train_config(dataset, model).seeds or self.seeds


# --- checks ----------------------------------------------------------------------------------

def _check_seeds(seeds: tuple[int, ...], key: str) -> None:
    shown = list(seeds) if len(seeds) <= 10 else f"a list of {len(seeds)} seeds"
    check(1 <= len(seeds) <= MAX_SEEDS and len(set(seeds)) == len(seeds), key, shown,
          f"a non-empty list of at most {MAX_SEEDS} distinct integers, e.g. [12, 13]")
    for seed in seeds:
        check_seed(seed, key)
