"""The report's interpretation figures for one torch CNN: conv1 filters, feature maps, Grad-CAM.

The model is rebuilt from its checkpoint the way the evaluate stage does, and fed the test
images through its own input preset, so the maps explain the very predictions the table scores.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline.artifacts import load_checkpoint
from pipeline.engine.learners import build_learner
from pipeline.reporting import figures, gradcam
from pipeline.reporting.results import ModelResult

# Grad-CAM for this many correct and this many wrong test predictions (the first in test order).
CAM_EXAMPLES = 4
MAX_TILES = 32


@dataclass
class Interpretation:
    figures: dict[str, Path] = field(default_factory=dict)  # kind -> PNG
    notes: list[str] = field(default_factory=list)  # what was chosen, or why nothing is shown


def interpret_model(result: ModelResult, test_x: torch.Tensor, label_name, out: Path) -> Interpretation:
    if result.spec.framework != "torch":
        return Interpretation(notes=[f"{result.name} is written in NumPy (no torch module to hook): "
                                     "no filters, feature maps or Grad-CAM."])
    learner = _load_learner(result)
    model, preset = learner.evaluated.cpu().eval(), learner.preset
    sample = preset(test_x[:1])
    convs = gradcam.conv_layers_in_call_order(model, sample)
    if not convs:
        return Interpretation(notes=[f"{result.name} has no convolutional layer: nothing to gradcam."])

    found = Interpretation()
    stem = f"{result.dataset}_{result.name}"
    conv1_name, conv1, _ = convs[0]
    filters = gradcam.first_conv_filters(model, sample).numpy()
    found.figures["filters"] = figures.tile_grid(
        filters[:MAX_TILES], f"{result.name}: conv1 (layer {conv1_name}) filters, summed over input channels",
        out / f"{stem}_filters.png",
        cmap="coolwarm", symmetric=True)
    # conv1's maps: the layer whose filters are shown above, so each map reads against its filter.
    maps = gradcam.feature_maps(model, sample, conv1).numpy()
    found.figures["feature_maps"] = figures.tile_grid(
        maps[:MAX_TILES], f"{result.name}: feature maps of conv1 (layer {conv1_name}) for test image 0 "
        f"(true {label_name(result.predictions[0]['actual'])})", out / f"{stem}_feature_maps.png",
        cmap="viridis")

    layer_name, layer, call = gradcam.grad_cam_layer(model, sample)
    chosen = _cam_examples(result)
    x = preset(test_x[torch.tensor(chosen)])
    predicted = torch.tensor([int(result.predictions[i]["predicted"]) for i in chosen])
    cams = gradcam.grad_cam(model, x, predicted, layer=layer, call=call).numpy()
    captions = [f"#{i} {'ok' if _right(result, i) else 'WRONG'}\ntrue {label_name(result.predictions[i]['actual'])}"
                f", said {label_name(result.predictions[i]['predicted'])}" for i in chosen]
    found.figures["grad_cam"] = figures.grad_cam_panel(
        x[:, 0].numpy(), cams, captions, f"{result.name}: Grad-CAM of the predicted class at layer {layer_name}",
        out / f"{stem}_grad_cam.png")
    right = sum(_right(result, i) for i in chosen)
    found.notes.append(f"Grad-CAM at layer {layer_name} ({type(layer).__name__}: the feature maps of the last "
                       f"convolutional layer with a spatial map, {gradcam.last_conv_layer(model, sample)[0]}), "
                       f"for the predicted class of {right} correct and {len(chosen) - right} wrong test predictions.")
    return found


def _load_learner(result: ModelResult):
    checkpoint = load_checkpoint(result.dataset, result.name, result.seed)
    # The weights come from the checkpoint: no ImageNet download, as in the evaluate stage.
    cfg = dataclasses.replace(result.cfg, pretrained=False)
    learner = build_learner(result.name, result.dataset, cfg, torch.device("cpu"), 0)
    learner.load_state_dict(checkpoint["state_dict"])
    return learner


def _right(result: ModelResult, i: int) -> bool:
    return result.predictions[i]["actual"] == result.predictions[i]["predicted"]


def _cam_examples(result: ModelResult) -> list[int]:
    correct = np.flatnonzero(result.correct)[:CAM_EXAMPLES].tolist()
    wrong = np.flatnonzero(~result.correct)[:CAM_EXAMPLES].tolist()
    return correct + wrong
