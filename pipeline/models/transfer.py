"""Transfer learning (course): ResNet-18 with a new head, and the phases of its three ways to
train (which part trains in which epoch, at which lr), for any dataset a model of this family
trains on.

The three ResNet-18 entries share one builder; their registry entries differ only in the transfer
`strategy`, which `transfer_phase` turns into the part and lr of each epoch (the trainer then
calls `set_trainable`).
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import urlparse

import torch
from torch import nn

from pipeline.models.registry import register_model

if TYPE_CHECKING:
    import torchvision

Part = Literal["head", "all"]


class PretrainedWeightsError(RuntimeError):
    """ImageNet weights were asked for but are not in torch hub's cache (no download here)."""


def _torchvision():
    import torchvision  # on first use: 1.7 s of imports that the other models' stages need not pay

    return torchvision


def _imagenet_weights() -> torchvision.models.ResNet18_Weights:
    return _torchvision().models.ResNet18_Weights.IMAGENET1K_V1


def pretrained_cache_file() -> Path:
    """Where torchvision looks for ResNet-18's ImageNet weights: <hub dir>/checkpoints/<url name>.

    Read at call time, so TORCH_HOME (or torch.hub.set_dir) set after import still counts.
    """
    name = Path(urlparse(_imagenet_weights().url).path).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _load_imagenet_resnet18() -> nn.Module:
    """torchvision's ResNet-18 with ImageNet weights: from torch hub's cache, else downloaded.

    torch.hub.load_state_dict_from_url reads the cached file when it is there and downloads it
    (checking its hash) only when it is missing; where no download is possible, say what to do.
    """
    path = pretrained_cache_file()
    try:
        return _torchvision().models.resnet18(weights=_imagenet_weights())
    except OSError as e:  # URLError, connection and DNS errors are OSErrors
        if path.is_file():
            raise  # the cached file itself is unreadable: not a download problem
        raise PretrainedWeightsError(
            f"ResNet-18's ImageNet weights are not in torch hub's cache ({path}) and could not be "
            f"downloaded ({e}). On a machine with internet run\n"
            "    python -c \"import torchvision; torchvision.models.resnet18(weights='IMAGENET1K_V1')\"\n"
            f"then copy {path.name} from that machine's torch hub cache (hub/checkpoints/) to {path}, "
            f"or set TORCH_HOME to a directory holding hub/checkpoints/{path.name}. "
            "Or set `pretrained: false` in params.yaml to train from random weights."
        ) from None


def resnet18(in_channels: int, num_classes: int, pretrained: bool = False) -> nn.Module:
    """torchvision ResNet-18 with a new Linear(512, num_classes) head (course)."""
    if pretrained and in_channels not in (1, 3):
        raise ValueError(f"pretrained ResNet-18 reads 1 or 3 channels, not {in_channels}")
    model = _load_imagenet_resnet18() if pretrained else _torchvision().models.resnet18(weights=None)
    if in_channels != 3:
        rgb = model.conv1
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        if pretrained:
            # A gray image replicated to RGB meets W_r*x + W_g*x + W_b*x, so one channel with the
            # kernels summed computes the same first layer without the replication.
            with torch.no_grad():
                model.conv1.weight.copy_(rgb.weight.sum(dim=1, keepdim=True))
    model.fc = nn.Linear(model.fc.in_features, num_classes)
    return model


# The course's three ways to train it, one builder: feature extraction (frozen backbone, only the
# new head trains, Adam 1e-3), fine-tuning (everything from the start at a small lr, Adam 1e-4),
# progressive (the head for `head_epochs` at Adam 1e-3, then everything at Adam 1e-5).
for _strategy in ("feature", "finetune", "progressive"):
    register_model(dataset="crack", input_size=224, source="course", in_channels=3, family="transfer",
                   strategy=_strategy, name=f"resnet18_{_strategy}")(resnet18)


def trainable_part(strategy: str | None, epoch: int, head_epochs: int = 0) -> Part:
    """Which part of a model with this transfer `strategy` trains in 0-based `epoch`: "head" or "all"."""
    if strategy == "feature" or (strategy == "progressive" and epoch < head_epochs):
        return "head"
    return "all"


def head_parameters(model: nn.Module) -> list[nn.Parameter]:
    """The new classifier head's parameters (ResNet's `fc`)."""
    return list(model.fc.parameters())


def set_trainable(model: nn.Module, part: Part) -> nn.Module:
    """Sets requires_grad: "head" trains `fc` only, "all" trains every parameter.

    Build the optimizer after this call, from the parameters that require grad (progressive:
    a fresh Adam at `unfrozen_lr` when the part becomes "all").
    """
    if part not in ("head", "all"):
        raise ValueError(f"part must be 'head' or 'all', not {part!r}")
    for p in model.parameters():
        p.requires_grad_(part == "all")
    for p in head_parameters(model):
        p.requires_grad_(True)
    return freeze_batchnorm(model)


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm layers whose parameters are frozen run in eval mode; the others follow the model.

    Frozen means frozen: in train mode a BatchNorm still updates its running mean and variance
    (no gradient needed), so a "frozen" ImageNet backbone would drift towards crack-image
    statistics and the features the head learnt from would change between training and
    evaluation. Keeping frozen BatchNorms in eval mode uses ImageNet's statistics throughout
    (Keras' habit for frozen BatchNorm layers). `model.train()` undoes it, so call this after
    each `model.train()`; it is a no-op for a model whose parameters all train.
    """
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._BatchNorm):
            params = list(module.parameters())
            frozen = bool(params) and not any(p.requires_grad for p in params)
            module.train(model.training and not frozen)
    return model


def transfer_phase(strategy: str | None, cfg: Any, epoch: int) -> tuple[str, float] | None:
    """(part to train, lr) in this 1-based epoch of a model with a transfer `strategy` (its
    registry entry's) and settings `cfg` (a TrainConfig); None for a model trained whole from scratch.

    feature: the new head only, throughout. finetune: everything from the start (a small lr).
    progressive: the head for head_epochs epochs at lr, then everything at unfrozen_lr.
    """
    if strategy is None:
        return None
    part = trainable_part(strategy, epoch - 1, cfg.head_epochs)
    return part, cfg.unfrozen_lr if strategy == "progressive" and part == "all" else cfg.lr
