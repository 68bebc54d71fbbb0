"""What a torch CNN looks at (course): conv1 filters, feature maps and Grad-CAM.

Grad-CAM (Selvaraju et al. 2017): a hook on the last convolutional layer (on its activation, see
grad_cam_layer) records its feature maps A (C,h,w), and autograd gives the gradient of the target
score y with respect to them; each channel's weight is the
spatial mean of dy/dA, and the map is ReLU(sum_c w_c A_c) upsampled to the input. Not the input
gradient (a saliency map): the last conv layer keeps spatial layout while seeing whole objects.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def trace_calls(model: nn.Module, x: torch.Tensor) -> list[tuple[nn.Module, tuple]]:
    """(leaf module, output (h, w)) for every leaf call of one forward pass of x[:1], in order."""
    calls: list[tuple[nn.Module, tuple]] = []

    def record(module, inputs, output) -> None:  # a hook that returned a value would replace the output
        calls.append((module, tuple(output.shape[-2:]) if isinstance(output, torch.Tensor) else ()))

    handles = [m.register_forward_hook(record) for m in model.modules() if not list(m.children())]
    try:
        with torch.no_grad():
            model.eval()(x[:1])
    finally:
        for h in handles:
            h.remove()
    return calls


def conv_layers_in_call_order(model: nn.Module, x: torch.Tensor, calls=None) -> list[tuple[str, nn.Conv2d, tuple]]:
    """(name, layer, output (h, w)) of the model's Conv2d layers in the order a forward pass calls them.

    Call order, not definition order: a ResNet defines a block's shortcut conv after its main
    convs but may call it anywhere, and "last" must mean nearest to the output.
    """
    names = {m: n for n, m in model.named_modules()}
    sizes: dict[nn.Module, tuple] = {}  # insertion order = first call
    for module, hw in calls if calls is not None else trace_calls(model, x):
        if isinstance(module, nn.Conv2d):
            sizes.setdefault(module, hw)
    return [(names[m], m, hw) for m, hw in sizes.items()]


def last_conv_layer(model: nn.Module, x: torch.Tensor, calls=None) -> tuple[str, nn.Conv2d]:
    """The last conv layer that still has a spatial map (more than 1x1).

    LeNet-5's C5 outputs (120,1,1): a map of one pixel cannot say where anything is, so its
    Grad-CAM is taken at C3, the last conv with a map. The same holds for the deep models'
    last stages at MNIST's small inputs.
    """
    layers = [(n, m) for n, m, hw in conv_layers_in_call_order(model, x, calls) if hw[0] * hw[1] > 1]
    if not layers:
        raise ValueError(f"{type(model).__name__} has no Conv2d layer with a spatial map: no Grad-CAM")
    return layers[-1]


def target_scores(logits: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
    """The score Grad-CAM explains, per image: the class's logit.

    One-logit (binary) models: the logit itself for the positive class and its negative for the
    negative class, since evidence for "no crack" is what lowers the logit.
    """
    if logits.shape[1] == 1:
        sign = classes.to(logits.dtype) * 2 - 1
        return logits[:, 0] * sign
    return logits.gather(1, classes.view(-1, 1))[:, 0]


# Layers that may sit between the last conv and its activation, and the activations themselves.
_NORMS = (nn.BatchNorm2d, nn.GroupNorm, nn.InstanceNorm2d)
_ACTIVATIONS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid)


def grad_cam_layer(model: nn.Module, x: torch.Tensor) -> tuple[str, nn.Module, int]:
    """(name, module, which call of it) holding the last conv layer's feature maps: the activation
    that follows the conv (past a norm), or the conv itself when no activation module does.

    Grad-CAM's A^k are rectified feature maps (Selvaraju et al.; pytorch-grad-cam hooks
    ResNet's layer4[-1], Keras' tutorial the last conv's activation). On pre-activation maps a
    negative weight times a negative response would light up evidence for the other class.
    The call index matters because ResNet blocks call one ReLU module two or three times.
    """
    traced = trace_calls(model, x)
    conv_name, conv = last_conv_layer(model, x, traced)
    names = {m: n for n, m in model.named_modules()}
    calls = [module for module, _ in traced]
    position = len(calls) - 1 - calls[::-1].index(conv)
    chosen = position
    if chosen + 1 < len(calls) and isinstance(calls[chosen + 1], _NORMS):
        chosen += 1
    if chosen + 1 < len(calls) and isinstance(calls[chosen + 1], _ACTIVATIONS):
        chosen += 1
    else:
        chosen = position
    module = calls[chosen]
    return names[module], module, calls[:chosen].count(module)


def grad_cam(model: nn.Module, x: torch.Tensor, classes: torch.Tensor,
             layer: nn.Module | None = None, call: int = -1) -> torch.Tensor:
    """Grad-CAM maps (N,H,W) in [0, 1] at the input's size, for each image's given class.

    layer, call: where to take the feature maps (the `call`-th call of `layer` in the forward
    pass); by default grad_cam_layer's choice.
    """
    if layer is None:
        _, layer, call = grad_cam_layer(model, x)
    model.eval()
    outputs: list[tuple[torch.Tensor, torch.Tensor]] = []  # one per call of the layer

    def keep_output(module, inputs, output):
        # The copy keeps the values even if a later in-place op changes the tensor.
        outputs.append((output, output.detach().clone()))

    handle = layer.register_forward_hook(keep_output)
    try:
        with torch.enable_grad():
            # The input needs a gradient so that activations of frozen backbones get one too.
            logits = model(x.detach().requires_grad_(True))
            output, activation = outputs[call]
            (gradient,) = torch.autograd.grad(target_scores(logits, classes).sum(), output)
    finally:
        handle.remove()
    weights = gradient.mean(dim=(2, 3), keepdim=True)
    cam = F.relu((weights * activation).sum(1, keepdim=True))
    cam = F.interpolate(cam, size=x.shape[-2:], mode="bilinear", align_corners=False)[:, 0]
    peak = cam.flatten(1).max(1).values.clamp_min(1e-12).view(-1, 1, 1)
    return (cam / peak).detach()


def first_conv_filters(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """conv1's kernels (C_out, k, k), summed over input channels.

    The sum is what the filter does to a gray image, whether it has one channel or the same
    gray replicated to three (the ResNet-18 inputs).
    """
    _, conv, _ = conv_layers_in_call_order(model, x)[0]
    return conv.weight.detach().sum(1)


@torch.no_grad()
def feature_maps(model: nn.Module, x: torch.Tensor, layer: nn.Module) -> torch.Tensor:
    """The output (C,h,w) of `layer` for one input x (1,C,H,W)."""
    out: dict[str, torch.Tensor] = {}
    handle = layer.register_forward_hook(lambda m, i, o: out.__setitem__("maps", o.detach()))
    try:
        model.eval()(x[:1])
    finally:
        handle.remove()
    return out["maps"][0]
