"""Turns stored uint8 images into model inputs, a whole batch at a time (never per sample).

What a dataset needs is in its record (pipeline.data.datasets): its mean and std; whether a larger
side is reached by zero padding (MNIST for LeNet-5) or by resizing on the tensor (crack, and the
deep models on MNIST, `resize`); what `augment` does (MNIST: a random affine per image, batched;
crack: the course's per-image crop, flip, jitter and rotation). ImageNet models (3 channels) get
the gray replicated and ImageNet's mean and std.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data.datasets import get_dataset

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
# MNIST augmentation: digits stay readable (a 6 must not become a 9), the classic ranges for it.
MNIST_ROTATION_DEG = 10.0
MNIST_SHIFT = 0.1  # of the side
MNIST_SCALE = (0.9, 1.1)


class InputPreset:
    """uint8 [B,H,W] -> normalised float [B,C,S,S] at the model's input side S.

    MNIST reaches a larger side by zero padding (LeNet-5 reads MNIST padded by 2 to 32x32, as in
    LeCun et al. 1998), before normalisation so the border is background. Crack images are
    resized (bilinear, antialiased). With channels == 3 the gray image is replicated and
    normalised as ImageNet's; with augment, each training image gets its own random
    RandomResizedCrop, horizontal flip, ColorJitter(0.2, 0.2, 0.2) and RandomRotation(15) (the
    course's recipe); evaluation resizes to S * 256/224 and centre-crops S (Resize 256,
    CenterCrop 224 at S = 224).
    """

    def __init__(self, dataset: str, input_size: int, channels: int = 1, augment: bool = False,
                 resize: bool = False) -> None:
        self.dataset, self.size, self.channels, self.augment = dataset, input_size, channels, augment
        self.resize = resize
        record = get_dataset(dataset)
        if channels == 3:
            self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        elif channels == 1:
            self.mean, self.std = record.normalisation
        else:
            raise ValueError(f"input channels must be 1 or 3, got {channels}")
        self.pads = record.pads and not resize
        self.affine = augment and record.affine_augment
        if self.affine:
            self.transform = _random_affine
        elif augment:
            # torchvision costs 1.7 s of imports, paid here only, not by every MNIST stage.
            from torchvision.transforms import v2

            self.transform = v2.Compose([
                v2.RandomResizedCrop(input_size, antialias=True),
                v2.RandomHorizontalFlip(),
                v2.ColorJitter(0.2, 0.2, 0.2),
                v2.RandomRotation(15),
            ])

    def settings(self) -> dict:
        """The evaluation preset as data (a logged model's JSON): `InputPreset(**settings)` rebuilds it."""
        return {"dataset": self.dataset, "input_size": self.size, "channels": self.channels, "resize": self.resize}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1) if images.dim() == 3 else images  # [B,H,W] gray or [B,3,H,W] RGB
        if self.augment and not self.affine:
            # Per image, so each gets its own random crop, flip, jitter and angle.
            x = torch.stack([self.transform(img) for img in x])
        x = x.float().div_(255.0)
        if self.affine:
            x = self.transform(x)
        if self.pads and x.shape[-1] != self.size:
            x = F.pad(x, (self._padding(x.shape[-1]),) * 4)
        elif (self.affine or not self.augment) and x.shape[-1] != self.size:
            x = self._resize_eval(x)
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
            return (x - self.mean.to(x.device)) / self.std.to(x.device)
        return (x - self.mean) / self.std

    def _padding(self, side: int) -> int:
        if side > self.size or (self.size - side) % 2:
            raise ValueError(f"cannot pad {self.dataset} images of side {side} to {self.size}")
        return (self.size - side) // 2

    def _resize_eval(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels == 3:  # ImageNet models: Resize(S * 256/224) then CenterCrop(S)
            side = round(self.size * 256 / 224)
            x = F.interpolate(x, size=(side, side), mode="bilinear", antialias=True, align_corners=False)
            top = (side - self.size) // 2
            return x[..., top:top + self.size, top:top + self.size]
        return F.interpolate(x, size=(self.size, self.size), mode="bilinear", antialias=True,
                             align_corners=False)


def _random_affine(x: torch.Tensor) -> torch.Tensor:
    """Each image of the float batch [B,1,H,W] rotated, shifted and scaled at random, in one
    grid_sample call (the background, 0, fills what comes in from outside)."""
    n = len(x)
    angle = torch.empty(n).uniform_(-MNIST_ROTATION_DEG, MNIST_ROTATION_DEG).deg2rad_()
    scale = torch.empty(n).uniform_(*MNIST_SCALE)
    shift = torch.empty(n, 2).uniform_(-2 * MNIST_SHIFT, 2 * MNIST_SHIFT)  # grid units: side = 2
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    theta = torch.stack([torch.stack([cos, -sin, shift[:, 0]], 1),
                         torch.stack([sin, cos, shift[:, 1]], 1)], 1).to(x)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
