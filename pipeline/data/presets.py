"""Turns stored uint8 images into model inputs, a whole batch at a time (never per sample).

What a dataset needs is in its record (pipeline.data.datasets): its mean and std; whether a larger
side is reached by zero padding (MNIST for LeNet-5) or by resizing on the tensor (crack, and the
deep models on MNIST, `resize`); what `augment` does (MNIST: a random affine per image, batched;
crack: the course's per-image crop, flip, jitter and rotation). ImageNet models (3 channels) get
the gray replicated and ImageNet's mean and std. Robust by design (issue #25): `normalise=
"per_image"` standardises each image by its own mean and std instead of one dataset's;
`photometric` and `geometric` draw each training image's own lighting, blur, noise, crop, flips
and quarter turns, batched on the tensor.
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
# Per-image standardisation: the std is floored so that a nearly uniform image's JPEG noise is not
# blown up (Özgenel's flattest walls have a std of a few hundredths of the range).
PER_IMAGE_MIN_STD = 0.02
NORMALISATIONS = ("dataset", "per_image")
# Photometric augmentation (on [0, 1] pixels): other cameras, exposures and lenses.
GAMMA = (0.7, 1.4)  # log-uniform
BRIGHTNESS = 0.15  # added, uniform in [-b, b]
CONTRAST = (0.6, 1.4)  # around the image's own mean
BLUR_P, BLUR_SIGMA = 0.5, (0.3, 1.2)  # Gaussian blur with probability p, sigma in pixels
NOISE_STD = (0.0, 0.04)  # Gaussian noise, std uniform in this range
# Geometric augmentation: a random resized crop (area fraction, aspect ratio log-uniform), flips
# and quarter turns, for datasets whose labels do not depend on orientation (cracks).
CROP_AREA = (0.5, 1.0)
CROP_ASPECT = (3 / 4, 4 / 3)


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
                 resize: bool = False, normalise: str = "dataset", photometric: bool = False,
                 geometric: bool = False) -> None:
        self.dataset, self.size, self.channels, self.augment = dataset, input_size, channels, augment
        self.resize = resize
        if normalise not in NORMALISATIONS:
            raise ValueError(f"normalise must be one of {', '.join(NORMALISATIONS)}, got {normalise!r}")
        self.normalise, self.photometric, self.geometric = normalise, photometric, geometric
        record = get_dataset(dataset)
        if geometric and not record.orientation_free:
            raise ValueError(f"geometric augmentation flips and turns images; {dataset}'s labels depend on "
                             "their orientation")
        if augment and (photometric or geometric):
            raise ValueError("augment (the course's per-image pipeline) and photometric/geometric (batched) "
                             "are alternatives: set one")
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
        return {"dataset": self.dataset, "input_size": self.size, "channels": self.channels, "resize": self.resize,
                "normalise": self.normalise}

    def __call__(self, images: torch.Tensor) -> torch.Tensor:
        x = images.unsqueeze(1) if images.dim() == 3 else images  # [B,H,W] gray or [B,3,H,W] RGB
        if self.augment and not self.affine:
            # Per image, so each gets its own random crop, flip, jitter and angle.
            x = torch.stack([self.transform(img) for img in x])
        x = x.float().div_(255.0)
        if self.affine:
            x = self.transform(x)
        if self.photometric:
            x = random_photometric(x)
        if self.geometric:
            x = random_geometric(x, self.size)  # the crop is sampled at the input side
        if self.pads and x.shape[-1] != self.size:
            x = F.pad(x, (self._padding(x.shape[-1]),) * 4)
        elif (self.affine or not self.augment) and x.shape[-1] != self.size:
            x = self._resize_eval(x)
        if self.normalise == "per_image":
            x = standardise_per_image(x)
            return x.expand(-1, 3, -1, -1) if self.channels == 3 else x
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


def standardise_per_image(x: torch.Tensor) -> torch.Tensor:
    """Each image of [B,C,H,W] minus its own mean, over its own std (floored at PER_IMAGE_MIN_STD):
    no dataset's statistics, so another camera's exposure and contrast do not shift the inputs."""
    flat = x.flatten(1)
    mean = flat.mean(1).view(-1, 1, 1, 1)
    std = flat.std(1, correction=0).clamp_min(PER_IMAGE_MIN_STD).view(-1, 1, 1, 1)
    return (x - mean) / std


def _uniform(n: int, low: float, high: float) -> torch.Tensor:
    return torch.empty(n).uniform_(low, high)


def random_photometric(x: torch.Tensor) -> torch.Tensor:
    """Each image of the float batch [B,C,H,W] in [0, 1] its own gamma, contrast around its mean,
    brightness shift, Gaussian blur (with probability BLUR_P) and Gaussian noise; clamped to [0, 1].
    Draws from torch's global generator, so a seeded run draws the same."""
    n = len(x)
    log_gamma = _uniform(n, *torch.tensor(GAMMA).log().tolist())
    contrast = _uniform(n, *CONTRAST)
    brightness = _uniform(n, -BRIGHTNESS, BRIGHTNESS)
    blurred = torch.rand(n) < BLUR_P
    sigma = _uniform(n, *BLUR_SIGMA)
    noise_std = _uniform(n, *NOISE_STD)
    view = (n, 1, 1, 1)
    x = x.clamp(0, 1).pow(log_gamma.exp().view(view).to(x))
    mean = x.mean((1, 2, 3), keepdim=True)
    x = (x - mean) * contrast.view(view).to(x) + mean + brightness.view(view).to(x)
    if blurred.any():
        x = torch.where(blurred.view(view).to(x.device), _gaussian_blur(x, sigma), x)
    noise = torch.randn(x.shape).to(x) * noise_std.view(view).to(x)
    return (x + noise).clamp_(0, 1)


def _gaussian_blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Each image blurred with its own sigma: separable 7-tap kernels, one grouped conv per axis."""
    n, c, h, w = x.shape
    taps = torch.arange(-3, 4, dtype=torch.float32)
    kernel = torch.exp(-0.5 * (taps.view(1, -1) / sigma.view(-1, 1)) ** 2)
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(c, 0).to(x)  # [n*c, 7]
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (3, 3, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, 7), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, 3, 3), mode="reflect"), kernel.view(n * c, 1, 7, 1), groups=n * c)
    return y.view(n, c, h, w)


def random_geometric(x: torch.Tensor, size: int) -> torch.Tensor:
    """Each image of [B,C,H,W] its own random resized crop (area CROP_AREA of the image, aspect
    CROP_ASPECT), horizontal and vertical flip and quarter turn, sampled bilinearly at size x size
    in one grid_sample call."""
    n = len(x)
    area = _uniform(n, *CROP_AREA)
    aspect = _uniform(n, *torch.tensor(CROP_ASPECT).log().tolist()).exp()
    width = (area * aspect).sqrt().clamp(max=1.0)  # of the side
    height = (area / aspect).sqrt().clamp(max=1.0)
    shift_x = (torch.rand(n) * 2 - 1) * (1 - width)  # grid units: the crop stays inside
    shift_y = (torch.rand(n) * 2 - 1) * (1 - height)
    flip_x = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    flip_y = torch.where(torch.rand(n) < 0.5, -1.0, 1.0)
    turns = torch.randint(0, 4, (n,))
    cos = torch.tensor([1.0, 0.0, -1.0, 0.0])[turns]  # exact quarter turns
    sin = torch.tensor([0.0, 1.0, 0.0, -1.0])[turns]
    # input = diag(width, height) @ rotation @ diag(flip_x, flip_y) @ output + shift
    theta = torch.stack([
        torch.stack([width * cos * flip_x, -width * sin * flip_y, shift_x], 1),
        torch.stack([height * sin * flip_x, height * cos * flip_y, shift_y], 1)], 1).to(x)
    grid = F.affine_grid(theta, [n, x.shape[1], size, size], align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
