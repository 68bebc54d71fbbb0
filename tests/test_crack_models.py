"""Crack models (SPEC.md "Crack models"): shapes, exact parameter counts, real training steps,
the ResNet-18 strategies, and the pretrained path through torchvision's real weights API."""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from pipeline.models import count_params, create_model, get_model_spec, list_models
from pipeline.models.listing import describe_models
from pipeline.models.summary import format_layer_table, layer_table
from pipeline.models.transfer import (
    PretrainedWeightsError,
    freeze_batchnorm,
    head_parameters,
    pretrained_cache_file,
    set_trainable,
    trainable_part,
)

RESNETS = ["resnet18_feature", "resnet18_finetune", "resnet18_progressive"]
# ResNet-18 is 11,689,512 params with its 1000-class head (512*1000 + 1000 = 513,000); the new
# 512 -> 1 head has 513. crack_cnn: see its docstring's sum.
CRACK_PARAMS = {"crack_cnn": 24_569, **{n: 11_176_512 + 513 for n in RESNETS}}
WEIGHTS_FILE = "resnet18-f37072fd.pth"  # the name in ResNet18_Weights.IMAGENET1K_V1's URL


@pytest.fixture(scope="module")
def saved_weights(tmp_path_factory):
    """A seeded random ResNet-18 state_dict where torchvision's cache would hold ImageNet's."""
    torch_home = tmp_path_factory.mktemp("torch_home")
    torch.manual_seed(0)
    state = torchvision.models.resnet18().state_dict()
    checkpoints = torch_home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / WEIGHTS_FILE)
    return torch_home, state


def _trainable(model: nn.Module) -> list[str]:
    return [n for n, p in model.named_parameters() if p.requires_grad]


def test_registry_lists_the_crack_models():
    # The deep models' builders serve both datasets (tests/test_deep_models.py).
    assert list_models("crack") == ["crack_cnn", *RESNETS, "vgg16", "resnet50", "tiny_vgg", "tiny_resnet"]
    # One builder, three registry entries: the strategy is a fact of the entry.
    assert {get_model_spec(n).strategy for n in RESNETS} == {"feature", "finetune", "progressive"}
    assert {get_model_spec(n).builder for n in RESNETS} == {get_model_spec(RESNETS[0]).builder}
    assert get_model_spec("crack_cnn").strategy is None
    rows = {r["name"]: r for r in describe_models()}
    for name, params in CRACK_PARAMS.items():
        assert rows[name]["dataset"] == "crack"
        assert rows[name]["params"] == params
    assert rows["crack_cnn"]["input"] == "1x64x64" and rows["resnet18_feature"]["input"] == "3x224x224"


@pytest.mark.parametrize("name", list(CRACK_PARAMS))
def test_parameter_count_and_one_logit(name):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    model = spec.build()
    assert count_params(model) == CRACK_PARAMS[name]
    model.eval()
    with torch.no_grad():
        logits = model(torch.randn(2, spec.in_channels or 1, spec.input_size, spec.input_size))
    assert logits.shape == (2, 1)


@pytest.mark.parametrize("name", list(CRACK_PARAMS))
def test_one_training_step_changes_every_parameter(name):
    torch.manual_seed(0)
    model = create_model(name)
    channels = get_model_spec(name).in_channels or 1
    x = torch.randn(4, channels, 64, 64)  # 64x64 keeps ResNet fast: its avgpool is adaptive
    y = torch.tensor([[0.0], [1.0], [0.0], [1.0]])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model.train()
    loss = nn.functional.binary_cross_entropy_with_logits(model(x), y)
    loss.backward()
    torch.optim.SGD(model.parameters(), lr=0.1).step()
    assert torch.isfinite(loss)
    unchanged = [n for n, p in model.named_parameters() if torch.equal(before[n], p)]
    assert unchanged == []


@pytest.mark.parametrize("size", [32, 64, 96])
def test_crack_cnn_takes_any_input_size(size):
    model = create_model("crack_cnn").eval()
    assert model(torch.zeros(3, 1, size, size)).shape == (3, 1)


def test_head_only_training_leaves_the_backbone_and_its_batchnorm_alone():
    torch.manual_seed(0)
    model = create_model("resnet18_feature")
    set_trainable(model, "head")
    assert _trainable(model) == ["fc.weight", "fc.bias"]
    assert [id(p) for p in head_parameters(model)] == [id(model.fc.weight), id(model.fc.bias)]
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    freeze_batchnorm(model)
    assert not model.bn1.training and model.training
    optimizer = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    loss = nn.functional.binary_cross_entropy_with_logits(
        model(torch.randn(4, 3, 64, 64)), torch.ones(4, 1))
    loss.backward()
    optimizer.step()
    after = model.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    # Weights, BatchNorm running statistics and num_batches_tracked: only the head moved.
    assert changed == ["fc.bias", "fc.weight"]

    set_trainable(model, "all")  # progressive's second stage
    assert len(_trainable(model)) == len(list(model.parameters()))
    assert model.bn1.training and model.layer4[1].bn2.training


def test_freeze_batchnorm_is_a_no_op_when_everything_trains():
    model = create_model("crack_cnn").train()
    freeze_batchnorm(model)
    assert all(m.training for m in model.modules())


def test_trainable_part_follows_each_strategy():
    assert [trainable_part("feature", e, 2) for e in range(4)] == ["head"] * 4
    assert [trainable_part("finetune", e, 2) for e in range(4)] == ["all"] * 4
    assert [trainable_part("progressive", e, 2) for e in range(4)] == ["head", "head", "all", "all"]
    assert trainable_part(None, 0) == "all"  # a model without a strategy trains everything
    with pytest.raises(ValueError, match="'head' or 'all'"):
        set_trainable(create_model("resnet18_feature"), "backbone")


def test_pretrained_loads_the_cached_file_through_torchvision(saved_weights, monkeypatch, capsys):
    torch_home, state = saved_weights
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    assert pretrained_cache_file() == torch_home / "hub" / "checkpoints" / WEIGHTS_FILE
    model = create_model("resnet18_feature", pretrained=True)
    assert "Downloading" not in capsys.readouterr().out
    loaded = model.state_dict()
    backbone = [k for k in state if not k.startswith("fc.")]
    assert backbone and all(torch.equal(loaded[k], state[k]) for k in backbone)
    assert model.fc.weight.shape == (1, 512) and model.fc.bias.shape == (1,)
    assert count_params(model) == CRACK_PARAMS["resnet18_feature"]


def test_missing_cache_file_names_the_path_and_the_way_out(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    with pytest.raises(PretrainedWeightsError) as e:
        create_model("resnet18_progressive", pretrained=True)
    message = str(e.value)
    assert str(tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE) in message
    assert "pretrained: false" in message and "IMAGENET1K_V1" in message
    assert not (tmp_path / "hub" / "checkpoints" / WEIGHTS_FILE).exists()


def test_gray_conv1_is_the_rgb_kernels_summed(saved_weights, monkeypatch):
    torch_home, state = saved_weights
    monkeypatch.setenv("TORCH_HOME", str(torch_home))
    gray = create_model("resnet18_finetune", in_channels=1, pretrained=True).eval()
    rgb = create_model("resnet18_finetune", pretrained=True).eval()
    assert gray.conv1.weight.shape == (64, 1, 7, 7)
    assert torch.equal(gray.conv1.weight, state["conv1.weight"].sum(dim=1, keepdim=True))
    # Same network on a gray image as the RGB one on that image replicated to three channels.
    gray.fc.load_state_dict(rgb.fc.state_dict())
    x = torch.randn(2, 1, 64, 64)
    with torch.no_grad():
        torch.testing.assert_close(gray(x), rgb(x.expand(-1, 3, -1, -1)), rtol=1e-4, atol=1e-4)


def test_layer_table_of_crack_cnn():
    model = create_model("crack_cnn").train()
    rows = layer_table(model, (1, 64, 64))
    assert model.training  # restored
    shapes = [r["output_shape"] for r in rows if r["type"] == "MaxPool2d"]
    assert shapes == [(8, 32, 32), (16, 16, 16), (32, 8, 8), (64, 4, 4)]
    assert rows[-1] == {"name": "19", "type": "Linear", "output_shape": (1,), "params": 65}
    assert sum(r["params"] for r in rows) == count_params(model)
    table = format_layer_table(rows)
    assert table.splitlines()[0] == "| name | type | output shape | params |"
    assert "| 0 | Conv2d | 8x64x64 | 72 |" in table
    assert table.splitlines()[-1] == "| **total** | | | **24,569** |"


def test_layer_table_of_resnet18_gives_its_top_level_blocks():
    model = create_model("resnet18_feature")
    rows = layer_table(model, (3, 224, 224))
    assert [r["name"] for r in rows] == ["conv1", "bn1", "relu", "maxpool", "layer1", "layer2",
                                         "layer3", "layer4", "avgpool", "fc"]
    assert rows[7]["output_shape"] == (512, 7, 7) and rows[-1]["output_shape"] == (1,)
    assert sum(r["params"] for r in rows) == CRACK_PARAMS["resnet18_feature"]
