"""What the train and evaluate stages need from a model, for torch modules and NumPy models alike.

A learner owns a model, how it turns stored uint8 images into inputs, and how it takes one
epoch of optimisation. The epoch loop, early stopping, checkpoints and MLflow logging in
`pipeline.train` are then the same for every model of the registry.
"""
from __future__ import annotations

import sys

import numpy as np
import torch
from torch import nn
from tqdm import tqdm

from pipeline.config import ConfigError, RuntimeConfig, TrainConfig
from pipeline.data.datasets import get_dataset
from pipeline.data.presets import InputPreset
from pipeline.engine import distributed
from pipeline.engine.inference import loss_fn, predict_logits, predicted_classes
from pipeline.engine.numpy_learner import NumpyLearner
from pipeline.engine.optim import WeightAverage, build_optimizer, build_scheduler
from pipeline.engine.runtime import World, accelerator
from pipeline.errors import PipelineError
from pipeline.models import count_params, get_model_spec
from pipeline.models.registry import ModelSpec

# The training set normalised once per run, instead of once per batch per epoch, when the inputs
# are the same every epoch (no augmentation) and fit in this many bytes (MNIST at 32x32: 221 MB).
# Per batch it cost logreg about 20% of its epoch (BENCHMARKS.md, "MNIST epoch time").
PREPARED_SET_BYTES = 1 << 30
PREPARE_CHUNK = 4096  # images normalised at a time: the peak stays near the result's own size


def build_learner(model: ModelSpec | str, dataset: str, cfg: TrainConfig, device: torch.device, seed: int,
                  runtime: RuntimeConfig | None = None, world: World = World()):
    """`model`: the stage's spec, or a registered name; `runtime`: the device speed-ups (None:
    none of them); `world`: this process's rank among those of a data-parallel run (torch models only)."""
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    if spec.framework == "numpy":
        return NumpyLearner(spec, dataset, cfg, seed)
    return TorchLearner(spec, dataset, cfg, device, runtime, world)


class TrainingDiverged(PipelineError, ValueError):
    """The loss became NaN or infinite: nothing the run goes on to learn can be trusted."""


class TorchLearner:
    def __init__(self, spec: ModelSpec, dataset: str, cfg: TrainConfig, device: torch.device,
                 runtime: RuntimeConfig | None = None, world: World = World()) -> None:
        self.name, self.strategy, self.cfg, self.device, self.world = spec.name, spec.strategy, cfg, device, world
        self.accel = accelerator(device, runtime)
        key = f"train.{dataset}.{spec.name}"
        size = cfg.input_size or spec.input_size
        kwargs = {"pretrained": cfg.pretrained} if spec.accepts_pretrained else {}
        if spec.flexible_input:
            kwargs["input_size"] = size
        try:
            model = spec.build(dataset=dataset, **kwargs)
        except ValueError as e:  # a builder's own check, e.g. an input side its layers cannot take
            raise ConfigError(f"{key}.input_size: {e}") from None
        self.model = self.accel.prepare_model(model)
        # How the served model rebuilds this network from the registry (its weights come from the
        # logged file, so never `pretrained`, which would download ImageNet's).
        self.recipe = {"architecture": spec.name, "build": {k: v for k, v in kwargs.items() if k != "pretrained"}
                       | {"dataset": dataset}}
        channels = spec.in_channels or get_dataset(dataset).in_channels
        self.input_shape = (channels, size, size)
        self.preset = InputPreset(dataset, size, channels, resize=spec.resize, normalise=cfg.normalise)
        augmented = cfg.augment or cfg.photometric or cfg.geometric
        try:
            self.train_preset = (InputPreset(dataset, size, channels, augment=cfg.augment, resize=spec.resize,
                                             normalise=cfg.normalise, photometric=cfg.photometric,
                                             geometric=cfg.geometric)
                                 if augmented else self.preset)
        except ValueError as e:  # e.g. geometric on a dataset whose labels depend on orientation
            raise ConfigError(f"{key}: {e}") from None
        self.num_params = count_params(self.model)
        self.phase: tuple[str, float] | None = None
        self._optimizer: torch.optim.Optimizer | None = None  # built on first use: see `optimizer`
        self.scheduler = None  # built on the first epoch, when the number of batches is known
        self.steps_per_epoch: int | None = None
        self.scaler = self.accel.grad_scaler()
        self.average = WeightAverage(self.model, cfg.ema_decay) if cfg.ema_decay else None
        self.where = f"train.{dataset}.{spec.name}"
        self.train_model: nn.Module | None = None  # self.model, or DDP around it; made on first use
        self.prepared_budget = PREPARED_SET_BYTES  # 0: normalise every batch
        self._prepared: tuple[torch.Tensor, torch.Tensor] | None = None  # (uint8 set, its inputs)

    def prepare_training(self) -> None:
        """Builds the optimizer ahead of the first step (pipeline.train does it while MLflow's
        child opens the run)."""
        self.optimizer  # noqa: B018 (the property builds it)

    @property
    def optimizer(self) -> torch.optim.Optimizer:
        # Only training steps: building torch's Adam imports torch._dynamo, 1.4 s of every
        # evaluate stage and of the report, which only predict.
        if self._optimizer is None:
            self._optimizer = build_optimizer(self.model.parameters(), self.cfg, self.cfg.lr)
        return self._optimizer

    @optimizer.setter
    def optimizer(self, optimizer: torch.optim.Optimizer) -> None:
        self._optimizer = optimizer

    def begin_epoch(self, epoch: int) -> None:
        """Switches a transfer-learning model to the part and lr this epoch trains."""
        from pipeline.models.transfer import transfer_phase

        phase = transfer_phase(self.strategy, self.cfg, epoch)
        if phase is not None and phase != self.phase:
            self._enter_phase(phase)

    def _enter_phase(self, phase: tuple[str, float]) -> None:
        from pipeline.models.transfer import set_trainable

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
            from pipeline.models.transfer import freeze_batchnorm

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


def _progress(batches, desc: str):
    # A terminal gets a live bar; a log file (CI, `dvc repro > log`) would get a "0%" line per
    # epoch from tqdm, so there the epoch summaries logged by the train stage say it all.
    return tqdm(batches, desc=desc, unit="batch", leave=False, file=sys.stderr, mininterval=1.0,
                disable=not sys.stderr.isatty())
