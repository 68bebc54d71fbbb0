"""Deep models of SPEC.md: lab-A's VGG-16 and ResNet-50, the course's TinyVGG and TinyResNet.

One builder per model serves MNIST (1 channel, 10 classes) and crack (1 or 3 channels, one logit):
`in_channels`, `num_classes` and `input_size` are parameters. Only VGG-16's dense head depends on
the input side (512 * (side/32)^2 features after five 2x2 pools); the ResNets end in a global
average pool, and TinyVGG is defined at 32x32.
"""
from __future__ import annotations

from torch import nn

from pipeline.data.datasets import builtin_names
from pipeline.models.registry import Reported, register_model

VGG16_BLOCKS = [[64, 64], [128, 128], [256, 256, 256], [512, 512, 512], [512, 512, 512]]
TINY_VGG_BLOCKS = [[64, 64], [128, 128], [256, 256, 256]]
TINY_VGG_SIZE = 32
# Their builders take any side and channel count: every dataset there is (MNIST first, their home).
EVERY_DATASET = tuple(builtin_names())


def _vgg_features(in_channels: int, blocks: list[list[int]]) -> nn.Sequential:
    layers: list[nn.Module] = []
    for block in blocks:
        for width in block:
            layers += [nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU()]
            in_channels = width
        layers.append(nn.MaxPool2d(2))
    return nn.Sequential(*layers)


def _init_vgg(model: nn.Module) -> nn.Module:
    # torchvision's VGG init. Without BatchNorm, PyTorch's default (uniform, gain 1/sqrt(3))
    # shrinks the signal through 13 convs; He init keeps its variance.
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0, 0.01)
            nn.init.zeros_(m.bias)
    return model


@register_model(dataset=EVERY_DATASET, input_size=32, source="lab-A", resize=True, family="deep",
                reported=Reported(0.9629, "lab-A", loss=0.1203, note="from scratch, undertrained"))
def vgg16(in_channels: int, num_classes: int, input_size: int = 32) -> nn.Module:
    """lab-A's VGG-16: 13 conv 3x3 + ReLU, a 2x2 max pool after each block, 4096-4096-classes.

    No BatchNorm and no dropout (lab-A). 138,356,392 params at (1,224,224) with 1000 classes,
    33,637,066 at (1,32,32) with 10.
    """
    if input_size % 32:
        raise ValueError(f"vgg16 halves its input five times: input_size must be a multiple of 32, "
                         f"got {input_size}")
    side = input_size // 32
    return _init_vgg(nn.Sequential(
        _vgg_features(in_channels, VGG16_BLOCKS),  # (512, side, side)
        nn.Flatten(),
        nn.Linear(512 * side * side, 4096), nn.ReLU(),
        nn.Linear(4096, 4096), nn.ReLU(),
        nn.Linear(4096, num_classes),
    ))


@register_model(dataset=EVERY_DATASET, input_size=32, source="lab-A", resize=True, family="deep",
                reported=Reported(0.9265, "lab-A", loss=0.2381, note="from scratch, undertrained"))
def resnet50(in_channels: int, num_classes: int, input_size: int = 32) -> nn.Module:
    """lab-A's ResNet-50: torchvision's, with an `in_channels` stem; 23,522,250 params (1 ch, 10).

    Bottleneck blocks [3, 4, 6, 3] with expansion 4, stem 7x7/2 + BN + ReLU + maxpool 3/2, global
    average pool, Linear(2048, classes); torchvision's init is SPEC.md's (Kaiming fan_out for
    convs, BatchNorm weight 1, bias 0). Any input side: the global pool absorbs it.
    """
    import torchvision  # here: 1.7 s of imports that the other models' stages need not pay

    model = torchvision.models.resnet50(weights=None, num_classes=num_classes)
    if in_channels != 3:
        model.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        nn.init.kaiming_normal_(model.conv1.weight, mode="fan_out", nonlinearity="relu")
    return model


@register_model(dataset=EVERY_DATASET, input_size=TINY_VGG_SIZE, source="course", resize=True, family="deep")
def tiny_vgg(in_channels: int, num_classes: int, input_size: int = TINY_VGG_SIZE) -> nn.Module:
    """The course's TinyVGG: VGG blocks 64x2, 128x2, 256x3 with max pools, 4096 -> 512 -> classes.

    Defined at 32x32 (three pools leave 256x4x4); 3,837,130 params for 1 channel and 10 classes.
    """
    if input_size != TINY_VGG_SIZE:
        raise ValueError(f"tiny_vgg reads {TINY_VGG_SIZE}x{TINY_VGG_SIZE} images (its dense layer "
                         f"takes 256x4x4); got input_size {input_size}")
    return _init_vgg(nn.Sequential(
        _vgg_features(in_channels, TINY_VGG_BLOCKS),  # (256, 4, 4)
        nn.Flatten(),
        nn.Linear(256 * 4 * 4, 512), nn.ReLU(), nn.Dropout(0.5),
        nn.Linear(512, num_classes),
    ))


class BasicBlock(nn.Module):
    """Two 3x3 conv + BN, identity shortcut, or 1x1 conv + BN when the shape changes."""

    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(c_out),
            nn.ReLU(),
            nn.Conv2d(c_out, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out),
        )
        self.shortcut = nn.Identity() if stride == 1 and c_in == c_out else nn.Sequential(
            nn.Conv2d(c_in, c_out, 1, stride=stride, bias=False), nn.BatchNorm2d(c_out))
        self.relu = nn.ReLU()

    def forward(self, x):
        return self.relu(self.body(x) + self.shortcut(x))


@register_model(dataset=EVERY_DATASET, input_size=32, source="course", resize=True, family="deep")
def tiny_resnet(in_channels: int, num_classes: int, input_size: int = 32) -> nn.Module:
    """The course's TinyResNet: stem conv 64@3x3 + BN + ReLU, basic blocks 2x64, 2x128 (/2),
    2x256 (/2), global average pool, linear; 2,776,522 params for 1 channel and 10 classes."""
    stages, c_in = [], 64
    for width, stride in [(64, 1), (128, 2), (256, 2)]:
        stages.append(nn.Sequential(BasicBlock(c_in, width, stride), BasicBlock(width, width, 1)))
        c_in = width
    model = nn.Sequential(
        nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), nn.BatchNorm2d(64),
                      nn.ReLU()),
        *stages,
        nn.AdaptiveAvgPool2d(1), nn.Flatten(),
        nn.Linear(256, num_classes),
    )
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
    return model
