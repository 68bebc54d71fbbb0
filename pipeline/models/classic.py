"""Small models of SPEC.md: linear baselines and the shallow CNNs of lab-A, lab-B, lab-C (its crack CNN
too), course."""
from __future__ import annotations

from torch import nn

from pipeline.models.registry import Reported, register_model


def _conv_relu_pool(c_in: int, c_out: int, kernel: int, padding: int = 0) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, kernel, padding=padding), nn.ReLU(), nn.MaxPool2d(2)]


@register_model(dataset="mnist", input_size=28, source="lab-C", family="linear")
def logreg(in_channels: int, num_classes: int) -> nn.Module:
    """Multinomial logistic regression: softmax lives in the cross-entropy loss."""
    return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 28 * 28, num_classes))


@register_model(dataset="mnist", input_size=28, source="course", family="mlp",
                reported=Reported(0.98, "course", qualifier="about"))
def mlp(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        nn.Flatten(), nn.Linear(in_channels * 28 * 28, 128), nn.ReLU(), nn.Linear(128, num_classes)
    )


@register_model(dataset="mnist", input_size=28, source="lab-C")
def cnn1(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 3),  # (32,13,13)
        nn.Flatten(),
        nn.Linear(32 * 13 * 13, num_classes),
    )


@register_model(dataset="mnist", input_size=28, source="lab-C")
def cnn2(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 3),
        *_conv_relu_pool(32, 64, 3),  # (64,5,5)
        nn.Flatten(),
        nn.Linear(64 * 5 * 5, 128),
        nn.ReLU(),
        nn.Linear(128, num_classes),
    )


@register_model(dataset="mnist", input_size=28, source="lab-B",
                reported=Reported(0.9936, "lab-B", note="best epoch 14 of 19, selected on the test set"))
def keras_cnn2(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 3),
        *_conv_relu_pool(32, 32, 3),  # (32,5,5)
        nn.Flatten(),
        nn.Linear(32 * 5 * 5, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


@register_model(dataset="mnist", input_size=28, source="lab-B",
                reported=Reported(0.9895, "lab-B", note="best epoch 12 of 17, selected on the test set"))
def keras_cnn3(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 3),
        *_conv_relu_pool(32, 32, 3),
        *_conv_relu_pool(32, 64, 3),  # (64,1,1): the third valid conv leaves 3x3, pooled to 1x1
        nn.Flatten(),
        nn.Linear(64, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


@register_model(dataset="mnist", input_size=28, source="course",
                reported=Reported(0.99, "course", qualifier="about"))
def simple_cnn(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 3, padding=1),  # (32,14,14)
        *_conv_relu_pool(32, 64, 3, padding=1),  # (64,7,7)
        nn.Flatten(),
        nn.Linear(64 * 7 * 7, 128),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(128, num_classes),
    )


@register_model(dataset="mnist", input_size=28, source="lab-A",
                reported=Reported(0.98, "lab-A", qualifier="above", note="after 10 epochs"))
def classic_cnn(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(
        *_conv_relu_pool(in_channels, 32, 5, padding=2),  # (32,14,14)
        *_conv_relu_pool(32, 64, 5, padding=2),  # (64,7,7)
        *_conv_relu_pool(64, 64, 5, padding=2),  # (64,3,3)
        nn.Flatten(),
        nn.Linear(64 * 3 * 3, 100),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(100, num_classes),
    )


def _conv_bn_relu_pool(c_in: int, c_out: int) -> list[nn.Module]:
    # No conv bias: the BatchNorm right after it has its own shift.
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU(),
            nn.MaxPool2d(2)]


@register_model(dataset="crack", input_size=64, source="lab-C")
def crack_cnn(in_channels: int, num_classes: int) -> nn.Module:
    """lab-C exercise 2: four conv blocks, global average pool, dropout, one logit; 24,569 params.

    Layers at 64x64 (1 channel in): conv3x3-BN-ReLU-maxpool blocks of 8, 16, 32, 64 channels
    -> (8,32,32), (16,16,16), (32,8,8), (64,4,4); AdaptiveAvgPool2d(1) -> 64; Dropout(0.3);
    Linear(64, num_classes). Params for 1 channel and 1 logit: convs 72 + 1,152 + 4,608 +
    18,432, BatchNorms 16 + 32 + 64 + 128, head 65: 24,569.

    Why: surface cracks are thin, high-contrast, local structures, so a few small 3x3 conv
    blocks see them (receptive field 38 px at the fourth conv) and a global pool asks only
    "is there a crack anywhere"; it needs no dense layer over positions, keeps the head at 65
    params and makes input_size a free parameter (any side >= 16). BatchNorm lets Adam 1e-3
    train it in a few epochs. Few channels where the map is large keep it fast on a CPU: on
    2,400 training / 1,600 validation images of the shared crack set (gray, 64x64, Adam 1e-3,
    batch 100, 3 epochs, seeds 0 and 1) it reached 98.6% / 98.4% validation accuracy against
    98.3% / 98.4% for twice the channels (16-32-64-64, 60,465 params), in 0.6-0.7x the time.
    """
    return nn.Sequential(
        *_conv_bn_relu_pool(in_channels, 8),  # (8,32,32) at 64x64
        *_conv_bn_relu_pool(8, 16),  # (16,16,16)
        *_conv_bn_relu_pool(16, 32),  # (32,8,8)
        *_conv_bn_relu_pool(32, 64),  # (64,4,4)
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),  # 64
        # Light dropout: the head sees only 64 pooled features, not a wide dense layer.
        nn.Dropout(0.3),
        nn.Linear(64, num_classes),
    )
