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

from pipeline.config import ConfigError, TrainConfig
from pipeline.data.presets import InputPreset
from pipeline.inference import predict_logits
from pipeline.models import count_params, get_model_spec
from pipeline.models.registry import ModelSpec


def build_learner(model_name: str, dataset: str, cfg: TrainConfig, device: torch.device, seed: int):
    spec = get_model_spec(model_name)
    if spec.framework == "numpy":
        return NumpyLearner(spec, dataset, cfg, seed)
    return TorchLearner(spec, dataset, cfg, device)


def build_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer:
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum,
                               weight_decay=cfg.weight_decay)
    return torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)


class TorchLearner:
    def __init__(self, spec: ModelSpec, dataset: str, cfg: TrainConfig, device: torch.device) -> None:
        self.cfg, self.device = cfg, device
        self.model = spec.build().to(device)
        self.preset = InputPreset(dataset, spec.input_size)
        self.optimizer = build_optimizer(self.model, cfg)
        self.loss_fn = nn.CrossEntropyLoss()
        self.num_params = count_params(self.model)

    def train_epoch(self, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator,
                    desc: str) -> tuple[float, float]:
        """One pass over the shuffled training tensors; returns (mean loss, accuracy)."""
        model, cfg, device = self.model, self.cfg, self.device
        model.train()
        order = torch.randperm(len(images), generator=generator)
        total_loss = torch.zeros((), device=device)
        correct = torch.zeros((), dtype=torch.long, device=device)
        for start in _progress(range(0, len(order), cfg.batch_size), desc):
            idx = order[start:start + cfg.batch_size]
            x = self.preset(images[idx]).to(device, non_blocking=True)
            y = labels[idx].to(device, non_blocking=True)
            logits = model(x)
            loss = self.loss_fn(logits, y)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            # Accumulated on the device: no per-batch sync with .item().
            total_loss += loss.detach() * len(idx)
            correct += (logits.argmax(1) == y).sum()
        n = len(order)
        return total_loss.item() / n, correct.item() / n

    def logits(self, images: torch.Tensor, batch_size: int) -> torch.Tensor:
        return predict_logits(self.model, images, self.preset, batch_size, self.device)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {k: v.detach().clone() for k, v in self.model.state_dict().items()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.model.load_state_dict(state)

    def example_input(self, images: torch.Tensor) -> np.ndarray:
        """The model's input for these images, as MLflow's signature example."""
        return self.preset(images).numpy()

    def served_model(self) -> nn.Module:
        return self.model.cpu().eval()


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

    def example_input(self, images: torch.Tensor) -> np.ndarray:
        return images.numpy()

    def served_model(self):
        return self.model


def _progress(batches, desc: str):
    return tqdm(batches, desc=desc, unit="batch", leave=False, file=sys.stderr,
                mininterval=1.0 if sys.stderr.isatty() else 30.0)
