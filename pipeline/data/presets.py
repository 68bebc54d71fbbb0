"""Turns stored uint8 images into model inputs, a whole batch at a time (never per sample)."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data import mnist

NORMALISATION = {"mnist": (mnist.MEAN, mnist.STD)}
NATIVE_SIZE = {"mnist": mnist.IMAGE_SIZE}


class InputPreset:
    """uint8 [B,H,W] -> normalised float [B,1,S,S] at the model's input size S.

    A slightly larger input is reached by zero padding (LeNet-5 reads MNIST padded by 2 to 32x32,
    as in LeCun et al. 1998); padding is applied before normalisation so the border is background.
    """

    def __init__(self, dataset: str, input_size: int) -> None:
        self.mean, self.std = NORMALISATION[dataset]
        native = NATIVE_SIZE[dataset]
        if input_size < native or (input_size - native) % 2:
            raise ValueError(f"cannot pad {dataset} images of side {native} to {input_size}")
        self.pad = (input_size - native) // 2

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1).float().div_(255.0)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        return x.sub_(self.mean).div_(self.std)
