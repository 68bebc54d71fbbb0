"""Every registered model against SPEC.md: parameter counts, output shapes, one real training step."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from pipeline.data.presets import InputPreset
from pipeline.models import count_params, create_model, get_model_spec, list_models
from pipeline.models.registry import UnknownModelError, register_model

# SPEC.md, "MNIST models": parameter counts for 1 input channel and 10 classes.
SPEC_PARAMS = {
    "logreg": 7_850,
    "mlp": 101_770,
    "cnn1": 54_410,
    "cnn2": 225_034,
    "keras_cnn2": 113_386,
    "keras_cnn3": 37_674,
    "simple_cnn": 421_642,
    "classic_cnn": 213_270,
    "lenet5": 61_706,
    "numpy_cnn": 1_979,  # lab-D: 3x3 kernel, no bias, + linear 196 -> 10
    # Deep models at their default 32x32 (tests/test_deep_models.py checks the other inputs).
    "vgg16": 33_637_066,
    "resnet50": 23_522_250,
    "tiny_vgg": 3_837_130,
    "tiny_resnet": 2_776_522,
}
# Crack models have their own tests (tests/test_crack_models.py): one logit, other inputs.
TORCH_MODELS = [n for n in list_models("mnist") if get_model_spec(n).framework == "torch"]

# SPEC.md's intermediate shapes: (layer index in the Sequential, output shape without batch).
SPEC_SHAPES = {
    "cnn1": [(0, (32, 26, 26)), (2, (32, 13, 13))],
    "cnn2": [(3, (64, 11, 11)), (5, (64, 5, 5))],
    "keras_cnn2": [(5, (32, 5, 5))],
    "keras_cnn3": [(8, (64, 1, 1))],
    "simple_cnn": [(2, (32, 14, 14)), (5, (64, 7, 7))],
    "classic_cnn": [(8, (64, 3, 3))],
    "lenet5": [(0, (6, 28, 28)), (5, (16, 5, 5)), (6, (120, 1, 1))],
}


def test_registry_covers_spec():
    assert set(SPEC_PARAMS) <= set(list_models("mnist"))


@pytest.mark.parametrize("name", list_models("mnist"))
def test_parameter_count_matches_spec(name):
    assert count_params(create_model(name)) == SPEC_PARAMS[name]


@pytest.mark.parametrize("name", TORCH_MODELS)  # numpy_cnn's own tests: tests/test_numpy_cnn.py
def test_output_shape_and_one_training_step(name):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = spec.build()
    images = torch.randint(0, 256, (8, 28, 28), dtype=torch.uint8)
    x = InputPreset("mnist", spec.input_size, resize=spec.resize)(images)
    assert x.shape == (8, 1, spec.input_size, spec.input_size)
    logits = model(x)
    assert logits.shape == (8, 10)
    y = torch.arange(8) % 10
    before = [p.detach().clone() for p in model.parameters()]
    loss = nn.functional.cross_entropy(logits, y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    assert all(not torch.equal(b, p) for b, p in zip(before, model.parameters()))


@pytest.mark.parametrize("name", sorted(SPEC_SHAPES))
def test_intermediate_shapes_match_spec(name):
    spec = get_model_spec(name)
    model = spec.build()
    x = torch.zeros(2, 1, spec.input_size, spec.input_size)
    shapes = {}
    for i, layer in enumerate(model):
        x = layer(x)
        shapes[i] = tuple(x.shape[1:])
    for index, expected in SPEC_SHAPES[name]:
        assert shapes[index] == expected, f"{name} layer {index}: {shapes[index]} != {expected}"


def test_unknown_model_names_the_closest_and_all_valid():
    with pytest.raises(UnknownModelError) as e:
        create_model("lenet")
    assert "lenet5" in str(e.value) and "Did you mean 'lenet5'" in str(e.value)
    for name in list_models():
        assert name in str(e.value)


def test_registering_a_name_twice_is_an_error():
    list_models()  # make sure the families are registered

    with pytest.raises(ValueError, match="registered twice"):
        @register_model(dataset="mnist", input_size=28, source="test")
        def logreg(in_channels, num_classes):  # noqa: F811
            return nn.Linear(1, 1)


def test_lenet_input_is_padded_background():
    preset = InputPreset("mnist", 32)
    x = preset(torch.zeros(1, 28, 28, dtype=torch.uint8))
    # A blank image padded stays uniformly background after normalisation.
    assert x.shape == (1, 1, 32, 32)
    assert torch.allclose(x, torch.full_like(x, -0.1307 / 0.3081))
