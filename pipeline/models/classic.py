"""Small MNIST models of SPEC.md: linear baselines and the shallow CNNs of lab-A, lab-B, lab-C, course."""
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
