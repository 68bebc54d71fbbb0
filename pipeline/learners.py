"""What the train and evaluate stages need from a model, for torch modules and NumPy models alike.

A learner owns a model, how it turns stored uint8 images into inputs, and how it takes one
epoch of optimisation. The epoch loop, early stopping, checkpoints and MLflow logging in
`pipeline.train` are then the same for every model of the registry.
"""
from __future__ import annotations

import copy
import inspect
import math
import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline import distributed
from pipeline.config import ConfigError, RuntimeConfig, TrainConfig
from pipeline.data.presets import InputPreset
from pipeline.inference import loss_fn, predict_logits, predicted_classes
from pipeline.models import count_params, get_model_spec
from pipeline.models.registry import DATASET_INPUTS, ModelSpec
from pipeline.runtime import World, accelerator

# The training set normalised once per run, instead of once per batch per epoch, when the inputs
# are the same every epoch (no augmentation) and fit in this many bytes (MNIST at 32x32: 221 MB).
# Per batch it cost logreg about 20% of its epoch (BENCHMARKS.md, "MNIST epoch time").
PREPARED_SET_BYTES = 1 << 30
PREPARE_CHUNK = 4096  # images normalised at a time: the peak stays near the result's own size


def build_learner(model_name: str, dataset: str, cfg: TrainConfig, device: torch.device, seed: int,
                  runtime: RuntimeConfig | None = None, world: World = World()):
    """`runtime`: the device speed-ups (None: none of them); `world`: this process's rank among
    those of a data-parallel run (torch models only)."""
    spec = get_model_spec(model_name)
    if spec.framework == "numpy":
        return NumpyLearner(spec, dataset, cfg, seed)
    return TorchLearner(spec, dataset, cfg, device, runtime, world)


def build_optimizer(parameters, cfg: TrainConfig, lr: float) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                               nesterov=cfg.nesterov)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(parameters, lr=lr, weight_decay=cfg.weight_decay)
    return torch.optim.Adam(parameters, lr=lr, weight_decay=cfg.weight_decay)


def build_scheduler(optimizer: torch.optim.Optimizer, cfg: TrainConfig, steps_per_epoch: int):
    """The lr schedule of `cfg.schedule`, stepped once per batch over all `cfg.epochs` (early
    stopping may end the run before it ends); None for a constant lr."""
    total = cfg.epochs * steps_per_epoch
    if cfg.schedule == "onecycle":
        return torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=cfg.lr, total_steps=total)
    if cfg.schedule == "cosine":
        warmup = round(cfg.warmup_epochs * steps_per_epoch)
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: _warmup_cosine(step, warmup, total))
    return None


def _warmup_cosine(step: int, warmup: int, total: int) -> float:
    """The lr factor at `step`: linear from 1/warmup up to 1, then cosine down to 0 at `total`."""
    if step < warmup:
        return (step + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, total - warmup))))


class TrainingDiverged(ValueError):
    """The loss became NaN or infinite: nothing the run goes on to learn can be trusted."""


class WeightAverage:
    """An exponential moving average of a model's weights and buffers (torchvision's
    --model-ema, timm's ModelEmaV2): what a run with `ema_decay` validates and checkpoints.

    The decay warms up as min(decay, (1 + t) / (10 + t)), so a short run's average is not
    dominated by the random initial weights.
    """

    def __init__(self, model: nn.Module, decay: float) -> None:
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.steps = decay, 0

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))
        pairs = list(zip(self.module.state_dict().values(), model.state_dict().values()))
        floats = [(a, c) for a, c in pairs if a.is_floating_point()]
        torch._foreach_lerp_([a for a, _ in floats], [c for _, c in floats], 1.0 - decay)
        for a, c in pairs:
            if not a.is_floating_point():  # BatchNorm's num_batches_tracked
                a.copy_(c)


def transfer_phase(model_name: str, cfg: TrainConfig, epoch: int) -> tuple[str, float] | None:
    """(part to train, lr) of a transfer-learning model in this 1-based epoch; None for others.

    feature: the new head only, throughout. finetune: everything from the start (a small lr).
    progressive: the head for head_epochs epochs at lr, then everything at unfrozen_lr.
    """
    from pipeline.models.crack import STRATEGIES, trainable_part

    strategy = STRATEGIES.get(model_name)
    if strategy is None:
        return None
    part = trainable_part(model_name, epoch - 1, cfg.head_epochs)
    return part, cfg.unfrozen_lr if strategy == "progressive" and part == "all" else cfg.lr


class TorchLearner:
    def __init__(self, spec: ModelSpec, dataset: str, cfg: TrainConfig, device: torch.device,
                 runtime: RuntimeConfig | None = None, world: World = World()) -> None:
        self.name, self.cfg, self.device, self.world = spec.name, cfg, device, world
        self.accel = accelerator(device, runtime)
        key = f"train.{dataset}.{spec.name}"
        accepts_pretrained = "pretrained" in inspect.signature(spec.builder).parameters
        if cfg.pretrained and not accepts_pretrained:
            raise ConfigError(f"{key}.pretrained: {spec.name} has no pretrained weights; set it to false")
        if dataset == "mnist" and not spec.flexible_input and cfg.input_size not in (None, spec.input_size):
            raise ConfigError(f"{key}.input_size: {spec.name} reads {spec.input_size}x{spec.input_size} "
                              f"images; set it to null")
        from pipeline.models.crack import STRATEGIES

        if STRATEGIES.get(spec.name) == "progressive" and (not cfg.head_epochs or cfg.unfrozen_lr is None):
            raise ConfigError(f"{key}: progressive training needs head_epochs (>= 1, fewer than "
                              f"epochs) and unfrozen_lr (the lr once everything is unfrozen)")
        size = cfg.input_size or spec.input_size
        kwargs = {"pretrained": cfg.pretrained} if accepts_pretrained else {}
        if spec.flexible_input:
            kwargs["input_size"] = size
        try:
            model = spec.build(dataset=dataset, **kwargs)
        except ValueError as e:  # a builder's own check, e.g. an input side its layers cannot take
            raise ConfigError(f"{key}.input_size: {e}") from None
        self.model = self.accel.prepare_model(model)
        channels = spec.in_channels or DATASET_INPUTS[dataset]["in_channels"]
        self.input_shape = (channels, size, size)
        self.preset = InputPreset(dataset, size, channels, resize=spec.resize)
        self.train_preset = (InputPreset(dataset, size, channels, augment=True, resize=spec.resize)
                             if cfg.augment else self.preset)
        self.num_params = count_params(self.model)
        self.phase: tuple[str, float] | None = None
        self.optimizer = build_optimizer(self.model.parameters(), cfg, cfg.lr)
        self.scheduler = None  # built on the first epoch, when the number of batches is known
        self.steps_per_epoch: int | None = None
        self.scaler = self.accel.grad_scaler()
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.where = f"train.{dataset}.{spec.name}"
        self.train_model: nn.Module | None = None  # self.model, or DDP around it; made on first use
        self.prepared_budget = PREPARED_SET_BYTES  # 0: normalise every batch
        self._prepared: tuple[torch.Tensor, torch.Tensor] | None = None  # (uint8 set, its inputs)

    def begin_epoch(self, epoch: int) -> None:
        """Switches a transfer-learning model to the part and lr this epoch trains."""
        phase = transfer_phase(self.name, self.cfg, epoch)
        if phase is not None and phase != self.phase:
            self._enter_phase(phase)

    def _enter_phase(self, phase: tuple[str, float]) -> None:
        from pipeline.models.crack import set_trainable

        part, lr = phase
        set_trainable(self.model, part)
        self.optimizer = build_optimizer([p for p in self.model.parameters() if p.requires_grad], self.cfg, lr)
        self.phase = phase
        self.train_model = None  # DDP must register the new set of trainable parameters

    def _ensure_scheduler(self, steps_per_epoch: int) -> None:
        if self.steps_per_epoch is None:
            self.scheduler = build_scheduler(self.optimizer, self.cfg, steps_per_epoch)
            self.steps_per_epoch = steps_per_epoch

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    desc: str) -> tuple[float, float]:
        """One pass over the shuffled training tensors; returns (mean loss, accuracy)."""
        model, cfg, device = self.model, self.cfg, self.device
        model.train()
        if self.phase is not None:
            from pipeline.models.crack import freeze_batchnorm

            freeze_batchnorm(model)  # a frozen backbone keeps ImageNet's BatchNorm statistics
        # Every rank draws the same permutation (same seeded generator) and trains on its shard,
        # batch_size / world size images per step: together, the one-process run's batches.
        order = distributed.shard(torch.randperm(len(images), generator=generator), self.world)
        batch_size = cfg.batch_size // self.world.size
        batches = range(0, len(order), batch_size)
        self._ensure_scheduler(len(batches))
        if self.train_model is None:
            self.train_model = distributed.wrap(model, self.world, device)
        accel = self.accel
        inputs = self.prepared_inputs(images)
        # Per-batch losses and logits are only kept (detached) and reduced once after the epoch:
        # no per-batch sync with .item(), and no per-batch ops for the running sums, which cost
        # logreg 9% of its epoch.
        batch_losses, batch_logits = [], []
        for start in _progress(batches, desc):
            idx = order[start:start + batch_size]
            if inputs is not None:
                x = accel.model_input(inputs[idx.to(inputs.device)])
            else:  # uint8 to the device, then normalised (and augmented) there
                x = accel.model_input(self.train_preset(accel.to_device(images[idx])))
            y = accel.to_device(labels[idx])
            with accel.autocast():
                logits = self.train_model(x)
                loss = loss_fn(logits.float(), y, cfg.label_smoothing)
            # Checked every step on a CPU (free); on CUDA every 50th, as each check waits for the
            # device, and a diverged run's weights keep the next losses non-finite anyway.
            step = start // batch_size
            if (device.type != "cuda" or step % 50 == 0) and not torch.isfinite(loss):
                self._diverged(loss, step + 1, desc)
            self.optimizer.zero_grad(set_to_none=True)
            self.scaler.scale(loss).backward()
            if cfg.grad_clip:
                self.scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            self.scaler.step(self.optimizer)
            self.scaler.update()
            if self.scheduler is not None:
                self.scheduler.step()
            if self.average is not None:
                self.average.update(model)
            batch_losses.append(loss.detach())
            batch_logits.append(logits.detach())
        sizes = torch.diff(torch.tensor([*batches, len(order)])).to(device)
        total_loss = (torch.stack(batch_losses) * sizes).sum()
        correct = (predicted_classes(torch.cat(batch_logits)) == accel.to_device(labels[order])).sum()
        total_loss, correct = distributed.sum_over_ranks(self.world, total_loss, correct)
        n = len(order) * self.world.size
        return total_loss.item() / n, correct.item() / n

    def _diverged(self, loss: torch.Tensor, step: int, desc: str) -> None:
        cfg = self.cfg
        hint = f"lower {self.where}.lr (now {cfg.lr})"
        if not cfg.grad_clip:
            hint += f" or set {self.where}.grad_clip (e.g. 1.0)"
        raise TrainingDiverged(f"{self.where}: the training loss became {loss.item()} at step {step} of "
                               f"{desc}; the run diverged and no checkpoint was written. Fix: {hint}.")

    @property
    def evaluated(self) -> nn.Module:
        """The weights that are validated and checkpointed: the moving average when on."""
        return self.average.module if self.average is not None else self.model

    def prepared_inputs(self, images: torch.Tensor) -> torch.Tensor | None:
        """`images` as model inputs on the device, normalised once and kept for the next epochs;
        None where each epoch must draw new inputs (augmentation) or the set is too large."""
        if self.train_preset is not self.preset:
            return None
        if self._prepared is None or self._prepared[0] is not images:
            nbytes = len(images) * int(np.prod(self.input_shape)) * 4
            if nbytes > self.prepared_budget:
                return None
            inputs = torch.empty((len(images), *self.input_shape), device=self.device)
            for start in range(0, len(images), PREPARE_CHUNK):
                chunk = self.accel.to_device(images[start:start + PREPARE_CHUNK])
                inputs[start:start + len(chunk)] = self.preset(chunk)
            self._prepared = (images, inputs)
        return self._prepared[1]

    def logits(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        return predict_logits(self.evaluated, images, self.preset, batch_size, self.accel)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.evaluated.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.evaluated.load_state_dict(state)

    def training_state(self) -> dict:
        """What the next epoch depends on, as tensors and plain values (a resume file)."""
        return {"model": {k: v.detach().clone() for k, v in self.model.state_dict().items()},
                "average": self.state_dict() if self.average is not None else None,
                "average_steps": self.average.steps if self.average is not None else 0,
                "optimizer": self.optimizer.state_dict(),
                "scheduler": self.scheduler.state_dict() if self.scheduler else None,
                "steps_per_epoch": self.steps_per_epoch, "scaler": self.scaler.state_dict(),
                "phase": self.phase}

    def load_training_state(self, state: dict) -> None:
        self.model.load_state_dict(state["model"])
        if self.average is not None:
            self.average.module.load_state_dict(state["average"])
            self.average.steps = state["average_steps"]
        if state["phase"] is not None:
            self._enter_phase(tuple(state["phase"]))
        if state["steps_per_epoch"] is not None:
            self._ensure_scheduler(state["steps_per_epoch"])
        if self.scheduler is not None:
            self.scheduler.load_state_dict(state["scheduler"])
        # After the scheduler: building one resets the optimizer's lr to the schedule's start.
        self.optimizer.load_state_dict(state["optimizer"])
        self.scaler.load_state_dict(state["scaler"])

    def example_input(self, images: torch.Tensor) -> np.ndarray:
        """The model's input for these images, as MLflow's signature example."""
        return self.preset(images).numpy()

    def served_model(self) -> nn.Module:
        return self.evaluated.cpu().eval()


class NumpyLearner:
    """lab-D's NumPy CNN: plain SGD on raw uint8 images scaled to [0, 1], no torch in the maths."""

    def __init__(self, spec: ModelSpec, dataset: str, cfg: TrainConfig, seed: int) -> None:
        if cfg.optimizer != "sgd" or cfg.momentum or cfg.weight_decay:
            raise ConfigError(
                f"train.{dataset}.{spec.name}: a NumPy model trains with plain SGD only; "
                f"set optimizer: sgd, momentum: 0.0, weight_decay: 0.0 (got optimizer: "
                f"{cfg.optimizer}, momentum: {cfg.momentum}, weight_decay: {cfg.weight_decay})")
        self.cfg = cfg
        self.model = spec.build(seed=seed)
        self.num_params = self.model.num_params()
        # One stream for the whole run, so each epoch gets its own permutation.
        self.rng = np.random.default_rng(seed)

    @property
    def evaluated(self):
        return self.model

    def begin_epoch(self, epoch: int) -> None:
        pass

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    desc: str) -> tuple[float, float]:
        return self.model.train_epoch(images.numpy(), labels.numpy(), self.cfg.lr,
                                      self.cfg.batch_size, self.rng)

    def logits(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        x = images.numpy()
        return torch.from_numpy(np.concatenate([
            self.model.forward(x[i:i + batch_size]) for i in range(0, len(x), batch_size)
        ]).astype(np.float32))

    def state_dict(self) -> dict[str, torch.Tensor]:
        # As tensors, so the checkpoint loads with torch.load(weights_only=True) like the others.
        return {k: torch.from_numpy(v) for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict({k: v.numpy() for k, v in state.items()})

    def training_state(self) -> dict:
        # The bit generator's state is a dict of str and int: it loads with weights_only=True.
        return {"model": self.state_dict(), "rng": self.rng.bit_generator.state}

    def load_training_state(self, state: dict) -> None:
        self.load_state_dict(state["model"])
        self.rng.bit_generator.state = state["rng"]

    def example_input(self, images: torch.Tensor) -> np.ndarray:
        return images.numpy()

    def served_model(self):
        return self.model


def _progress(batches, desc: str):
    # A terminal gets a live bar; a log file (CI, `dvc repro > log`) would get a "0%" line per
    # epoch from tqdm, so there the epoch summaries logged by the train stage say it all.
    return tqdm(batches, desc=desc, unit="batch", leave=False, file=sys.stderr, mininterval=1.0,
                disable=not sys.stderr.isatty())
