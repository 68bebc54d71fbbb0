"""The optimiser, the lr schedule and the weight average that TrainConfig asks for (torchvision's
reference script's --opt, --lr-scheduler/--lr-warmup-epochs and --model-ema)."""
from __future__ import annotations

import copy
import math

import torch
from torch import nn

from pipeline.config import TrainConfig


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
