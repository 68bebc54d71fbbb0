"""Batched forward passes over stored tensors, shared by validation and evaluation."""
from __future__ import annotations

import torch
from torch import nn

from pipeline.data.presets import InputPreset


@torch.inference_mode()
def predict_logits(
    model: nn.Module, images: torch.Tensor, preset: InputPreset, batch_size: int, device: torch.device
) -> torch.Tensor:
    """Logits for every image, on the CPU, in input order."""
    model.eval()
    out = []
    for start in range(0, len(images), batch_size):
        batch = preset(images[start:start + batch_size]).to(device, non_blocking=True)
        out.append(model(batch).float().cpu())
    return torch.cat(out)


def loss_and_accuracy(logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, float]:
    loss = nn.functional.cross_entropy(logits, labels).item()
    accuracy = (logits.argmax(1) == labels).float().mean().item()
    return loss, accuracy
