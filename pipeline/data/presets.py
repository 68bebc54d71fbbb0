"""Turns stored uint8 images into model inputs, a whole batch at a time (never per sample).

MNIST: normalised with the training set's mean and std, zero-padded when a model reads a larger
side (LeNet-5) or resized on the tensor (the deep models, `resize`); with `augment`, a random
affine per image (rotation, shift, scale), batched. Crack: the cached grayscale images resized on
the tensor to the model's side; ImageNet models (3 channels) get the gray replicated and
ImageNet's mean and std, and, when training with `augment`, the course's augmentation.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from pipeline.data import mnist

# (mean, std) of the stored pixels scaled to [0, 1]. Crack: measured on 1,000 random images of
# ../shared/data/crack, grayscale at 64x64 (0.6748, 0.1228).
NORMALISATION = {"mnist": (mnist.MEAN, mnist.STD), "crack": (0.675, 0.123)}
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
        if channels == 3:
            self.mean = torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1)
            self.std = torch.tensor(IMAGENET_STD).view(1, 3, 1, 1)
        elif channels == 1:
            self.mean, self.std = NORMALISATION[dataset]
        else:
            raise ValueError(f"input channels must be 1 or 3, got {channels}")
        self.pad = 0
        if dataset == "mnist" and not resize:
            native = mnist.IMAGE_SIZE
            if input_size < native or (input_size - native) % 2:
                raise ValueError(f"cannot pad {dataset} images of side {native} to {input_size}")
            self.pad = (input_size - native) // 2
        if augment and dataset == "mnist":
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

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1)
        mnist_augment = self.augment and self.dataset == "mnist"
        if self.augment and not mnist_augment:
            # Per image, so each gets its own random crop, flip, jitter and angle.
            x = torch.stack([self.transform(img) for img in x])
        x = x.float().div_(255.0)
        if mnist_augment:
            x = self.transform(x)
        if self.pad:
            x = F.pad(x, (self.pad,) * 4)
        elif (mnist_augment or not self.augment) and x.shape[-1] != self.size:
            x = self._resize_eval(x)
        if self.channels == 3:
            x = x.expand(-1, 3, -1, -1)
            return (x - self.mean.to(x.device)) / self.std.to(x.device)
        return (x - self.mean) / self.std

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
