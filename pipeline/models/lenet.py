"""LeNet-5 (lab-A, course): LeCun et al. 1998 with tanh and average pooling, on 32x32 inputs."""
from __future__ import annotations

from torch import nn

from pipeline.models.registry import Reported, register_model


@register_model(dataset="mnist", input_size=32, source="lab-A",
                reported=Reported(0.9890, "lab-A", loss=0.0409))
def lenet5(in_channels: int, num_classes: int) -> nn.Module:
    # MNIST's 28x28 digits are padded by 2 to 32x32 by the data preset, as in the original paper,
    # so that C5's 5x5 kernel sees a 5x5 map and outputs (120,1,1).
    return nn.Sequential(
        nn.Conv2d(in_channels, 6, 5), nn.Tanh(), nn.AvgPool2d(2),  # C1 (6,28,28) -> S2 (6,14,14)
        nn.Conv2d(6, 16, 5), nn.Tanh(), nn.AvgPool2d(2),  # C3 (16,10,10) -> S4 (16,5,5)
        nn.Conv2d(16, 120, 5), nn.Tanh(),  # C5 (120,1,1)
        nn.Flatten(),
        nn.Linear(120, 84), nn.Tanh(),  # F6
        nn.Linear(84, num_classes),
    )
