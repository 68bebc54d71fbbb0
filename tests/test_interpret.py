"""Grad-CAM, filters and feature maps on hand-built CNNs whose answer is known."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.reporting.gradcam import feature_maps, first_conv_filters, grad_cam, grad_cam_layer, last_conv_layer

SIZE = 32


def _bar_detector(num_logits: int) -> nn.Sequential:
    """conv1 (identity 1x1) -> maxpool -> conv2: horizontal-bar and vertical-bar detectors ->
    ReLU -> global average pool -> class 0 = horizontal, class 1 = vertical (or, with one logit,
    horizontal minus vertical). The evidence for each class is where its bar is."""
    conv1 = nn.Conv2d(1, 1, 1, bias=False)
    conv2 = nn.Conv2d(1, 2, 3, padding=1, bias=False)
    head = nn.Linear(2, num_logits, bias=False)
    with torch.no_grad():
        conv1.weight.fill_(1.0)
        horizontal = -torch.ones(3, 3)
        horizontal[1] = 1.0
        conv2.weight[0, 0] = horizontal
        conv2.weight[1, 0] = horizontal.T
        head.weight.copy_(torch.eye(2) if num_logits == 2 else torch.tensor([[1.0, -1.0]]))
    return nn.Sequential(conv1, nn.MaxPool2d(2), conv2, nn.ReLU(), nn.AdaptiveAvgPool2d(1),
                         nn.Flatten(), head)


def _two_bars() -> torch.Tensor:
    """A horizontal bar in the top-left quadrant and a vertical bar in the bottom-right one."""
    x = torch.zeros(1, 1, SIZE, SIZE)
    # Kept 4 pixels off the quadrant borders, so upsampling's blur stays in the quadrant.
    x[0, 0, 6:8, 4:12] = 1.0  # horizontal: rows 6-7, top-left
    x[0, 0, 20:28, 24:26] = 1.0  # vertical: columns 24-25, bottom-right
    return x


def _quadrant_means(cam: torch.Tensor) -> dict[str, float]:
    h = SIZE // 2
    return {"top_left": cam[:h, :h].mean().item(), "bottom_right": cam[h:, h:].mean().item(),
            "top_right": cam[:h, h:].mean().item(), "bottom_left": cam[h:, :h].mean().item()}


@pytest.mark.parametrize("target, lit, dark", [(0, "top_left", "bottom_right"),
                                               (1, "bottom_right", "top_left")])
def test_grad_cam_lights_the_quadrant_holding_the_class_evidence(target, lit, dark):
    model = _bar_detector(2)
    x = _two_bars()
    cam = grad_cam(model, x, torch.tensor([target]))[0]
    assert cam.shape == (SIZE, SIZE) and cam.max().item() == pytest.approx(1.0)
    quadrants = _quadrant_means(cam)
    assert quadrants[lit] > 0.05
    assert quadrants[dark] == 0.0 and quadrants["top_right"] == 0.0 and quadrants["bottom_left"] == 0.0


def test_grad_cam_on_one_logit_follows_the_sign_of_the_class():
    # logit = horizontal - vertical: "positive" is explained by the horizontal bar, "negative"
    # by the vertical one (the evidence that lowers the logit).
    model = _bar_detector(1)
    x = _two_bars()
    positive, negative = grad_cam(model, x.repeat(2, 1, 1, 1), torch.tensor([1, 0]))
    assert _quadrant_means(positive)["bottom_right"] == 0.0 < _quadrant_means(positive)["top_left"]
    assert _quadrant_means(negative)["top_left"] == 0.0 < _quadrant_means(negative)["bottom_right"]


def test_grad_cam_uses_the_last_conv_layer():
    model = _bar_detector(2)
    x = _two_bars()
    name, layer = last_conv_layer(model, x)
    assert name == "2" and layer is model[2]
    assert grad_cam_layer(model, x) == ("3", model[3], 0)  # its rectified maps (the ReLU after it)
    # At conv1 the channel weight is the mean gradient through the bar detector, whose kernel
    # sums to -3: the map is empty there, unlike the last layer's.
    assert grad_cam(model, x, torch.tensor([0]), layer=model[0]).max().item() == 0.0
    assert torch.equal(grad_cam(model, x, torch.tensor([0]))[0],
                       grad_cam(model, x, torch.tensor([0]), layer=model[3])[0])


def test_last_conv_is_the_last_called_not_the_last_defined():
    class ShortcutDefinedLast(nn.Module):
        def __init__(self):
            super().__init__()
            self.late = nn.Conv2d(2, 2, 1)
            self.early = nn.Conv2d(1, 2, 3, padding=1)

        def forward(self, x):
            return self.late(self.early(x)).mean((2, 3))

    model = ShortcutDefinedLast()
    assert last_conv_layer(model, torch.zeros(1, 1, 8, 8))[0] == "late"


def test_filters_and_feature_maps():
    model = _bar_detector(2)
    x = _two_bars()
    assert first_conv_filters(model, x).shape == (1, 1, 1)
    maps = feature_maps(model, x, model[2])
    assert maps.shape == (2, SIZE // 2, SIZE // 2)
    # The horizontal detector peaks on the horizontal bar (top-left), at 3 (three ones in a row).
    assert maps[0].max().item() == pytest.approx(3.0)
    row, col = divmod(maps[0].argmax().item(), SIZE // 2)
    assert row < SIZE // 4 and col < SIZE // 4


def test_grad_cam_layers_of_the_zoo():
    import torchvision

    from pipeline.models import create_model

    torch.manual_seed(0)  # random weights and inputs, the same every run
    resnet = create_model("resnet18_finetune", pretrained=False)
    x = torch.randn(1, 3, 64, 64)
    # ResNet's block output: the shared ReLU at its second call (pytorch-grad-cam's layer4[-1]).
    name, layer, call = grad_cam_layer(resnet, x)
    assert (name, layer, call) == ("layer4.1.relu", resnet.layer4[1].relu, 1)
    cams = grad_cam(resnet, x, torch.tensor([1]), layer=layer, call=call)
    assert cams.shape == (1, 64, 64) and 0.0 <= cams.min() and cams.max() <= 1.0

    # A ResNet-50 at 32x32: layer4's maps are 1x1, so the last conv with a map is layer4.0.conv1
    # (2x2, before the strided conv2), read after its ReLU: the first of the block's three calls
    # of that one ReLU module, not the last (the 1x1 block output).
    resnet50 = torchvision.models.resnet50(num_classes=10)
    small = torch.randn(1, 3, 32, 32)
    name, layer, call = grad_cam_layer(resnet50, small)
    assert (name, layer, call) == ("layer4.0.relu", resnet50.layer4[0].relu, 0)
    predicted = resnet50.eval()(small).argmax(1)
    # A 2x2 map upsampled varies across the image; the 1x1 block output would be constant.
    cam = grad_cam(resnet50, small, predicted, layer=layer, call=call)[0]
    assert cam.max() - cam.min() > 0.1
    last_call = grad_cam(resnet50, small, predicted, layer=layer, call=-1)[0]
    assert last_call.max() - last_call.min() < 1e-6

    # LeNet-5's C5 is (120,1,1): the last conv with a map is C3 (index 3), its tanh is 4.
    assert grad_cam_layer(create_model("lenet5"), torch.zeros(1, 1, 32, 32))[0] == "4"
