"""Batched forward passes over stored tensors, shared by validation and evaluation."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.data.presets import InputPreset
from pipeline.engine.runtime import Accel


@torch.inference_mode()
def predict_logits(model: nn.Module, images: torch.Tensor, preset: InputPreset, batch_size: int,
                   device: torch.device | Accel) -> torch.Tensor:
    """Logits for every image, on the CPU, in input order.

    The uint8 batch travels to the device and is normalised there (a quarter of float32's bytes).
    """
    accel = device if isinstance(device, Accel) else Accel(device)
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = accel.model_input(preset(accel.to_device(images[start:start + batch_size])))
        with accel.autocast():
            out.append(model(batch).float().cpu())
    return torch.cat(out)


def loss_fn(logits: torch.Tensor, labels: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
    """Cross-entropy for multi-class logits (B,K); binary cross-entropy for one logit (B,1).

    `label_smoothing` (training only): targets moved that far towards uniform, 0/1 targets of a
    binary model towards 0.5 alike.
    """
    if logits.shape[1] == 1:
        target = labels.to(logits.dtype)
        if label_smoothing:
            target = target * (1 - label_smoothing) + 0.5 * label_smoothing
        return nn.functional.binary_cross_entropy_with_logits(logits[:, 0], target)
    return nn.functional.cross_entropy(logits, labels, label_smoothing=label_smoothing)


def predicted_classes(logits: torch.Tensor) -> torch.Tensor:
    """argmax over classes; for one logit, positive when the logit is > 0 (probability 0.5)."""
    return (logits[:, 0] > 0).long() if logits.shape[1] == 1 else logits.argmax(1)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = loss_fn(logits, labels).item()
    accuracy = (predicted_classes(logits) == labels).float().mean().item()
    return loss, accuracy
