"""The deep models (SPEC.md: vgg16, resnet50, tiny_vgg, tiny_resnet): exact parameter counts at
SPEC.md's inputs, shapes, both datasets, MNIST resizing and augmentation, lr schedules, the CUDA
switches' CPU path, cost metrics, and a real subset training through the train/evaluate stages."""
from __future__ import annotations

import json

import mlflow
import pytest
import torch
import torch.nn.functional as F
import torchvision

from pipeline import artifacts, evaluate, train
from pipeline.config import ConfigError, RuntimeConfig, TrainConfig
from pipeline.data import mnist
from pipeline.data.presets import InputPreset
from pipeline.engine.cost import flops_per_image, timed_logits
from pipeline.engine.learners import build_learner
from pipeline.engine.runtime import accelerator
from pipeline.models import count_params, create_model, get_model_spec
from tests.conftest import shrunk_params

DEEP = ["vgg16", "resnet50", "tiny_vgg", "tiny_resnet"]
CPU = torch.device("cpu")


def _cfg(**overrides) -> TrainConfig:
    base = dict(optimizer="sgd", lr=0.05, batch_size=32, epochs=2, patience=0, momentum=0.9,
                weight_decay=5e-4)
    return TrainConfig(**{**base, **overrides})


# SPEC.md's counts: (in_channels, num_classes, input_size) -> params.
@pytest.mark.parametrize("name, channels, classes, size, expected", [
    ("vgg16", 1, 1000, 224, 138_356_392),
    ("vgg16", 1, 10, 32, 33_637_066),
    ("resnet50", 1, 10, 224, 23_522_250),
    ("tiny_vgg", 3, 10, 32, 3_838_282),
    ("tiny_vgg", 1, 10, 32, 3_837_130),
    ("tiny_resnet", 3, 10, 32, 2_777_674),
    ("tiny_resnet", 1, 10, 32, 2_776_522),
])
def test_parameter_counts_match_spec(name, channels, classes, size, expected):
    model = create_model(name, in_channels=channels, num_classes=classes, input_size=size)
    assert count_params(model) == expected


def test_three_channel_builders_match_torchvision():
    # SPEC.md: torchvision's 3-channel vgg16 has 138,357,544 params, resnet50 25,557,032.
    for name, reference in [("vgg16", torchvision.models.vgg16()), ("resnet50", torchvision.models.resnet50())]:
        ours = create_model(name, in_channels=3, num_classes=1000, input_size=224)
        assert count_params(ours) == count_params(reference)


def test_layer_shapes():
    vgg = create_model("vgg16", input_size=224)
    assert vgg[0](torch.zeros(1, 1, 224, 224)).shape == (1, 512, 7, 7)
    assert create_model("vgg16")[0](torch.zeros(1, 1, 32, 32)).shape == (1, 512, 1, 1)
    tiny = create_model("tiny_vgg")
    assert tiny[0](torch.zeros(1, 1, 32, 32)).shape == (1, 256, 4, 4)
    x, shapes = torch.zeros(1, 1, 32, 32), []
    for layer in list(create_model("tiny_resnet"))[:4]:  # stem, then the three stages
        x = layer(x)
        shapes.append(tuple(x.shape[1:]))
    assert shapes == [(64, 32, 32), (64, 32, 32), (128, 16, 16), (256, 8, 8)]
    # 1x1 conv + BN shortcuts exactly where the shape changes.
    shortcuts = [type(b.shortcut).__name__ for stage in list(create_model("tiny_resnet"))[1:4] for b in stage]
    assert shortcuts == ["Identity", "Identity", "Sequential", "Identity", "Sequential", "Identity"]


@pytest.mark.parametrize("name", DEEP)
def test_crack_build_gives_one_logit_and_trains(name):
    torch.manual_seed(0)
    spec = get_model_spec(name)
    assert spec.datasets == ("mnist", "crack")
    model = spec.build(dataset="crack", in_channels=3, input_size=64 if name != "tiny_vgg" else 32)
    side = 32 if name == "tiny_vgg" else 64
    logits = model(torch.randn(4, 3, side, side))
    assert logits.shape == (4, 1)
    loss = F.binary_cross_entropy_with_logits(logits[:, 0], torch.tensor([0.0, 1.0, 0.0, 1.0]))
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in model.parameters())


@pytest.mark.parametrize("name, size, message", [
    ("vgg16", 48, "multiple of 32"),
    ("tiny_vgg", 64, "reads 32x32"),
])
def test_an_input_size_the_layers_cannot_take_is_a_config_error(name, size, message):
    with pytest.raises(ConfigError, match=rf"train\.mnist\.{name}\.input_size: .*{message}"):
        build_learner(name, "mnist", _cfg(input_size=size), CPU, 0)


def test_mnist_is_resized_on_the_batch_for_deep_models():
    images = torch.randint(0, 256, (5, 28, 28), dtype=torch.uint8)
    for size in (32, 224):
        x = InputPreset("mnist", size, resize=True)(images)
        assert x.shape == (5, 1, size, size)
        one = InputPreset("mnist", size, resize=True)(images[2:3])
        assert torch.allclose(x[2:3], one, atol=1e-6)  # batched = one at a time
    # LeNet-5 keeps SPEC.md's zero padding: the centre is the image itself.
    padded = InputPreset("mnist", 32)(images)
    assert torch.equal(padded[:, :, 2:30, 2:30], InputPreset("mnist", 28)(images))


def test_mnist_augmentation_is_seeded_and_keeps_the_digit():
    images = torch.zeros(64, 28, 28, dtype=torch.uint8)
    images[:, 9:19, 12:16] = 255  # a bar in the middle, like a "1"
    preset = InputPreset("mnist", 32, augment=True, resize=True)
    torch.manual_seed(3)
    first = preset(images)
    torch.manual_seed(3)
    assert torch.equal(first, preset(images))
    plain = InputPreset("mnist", 32, resize=True)(images)
    assert first.shape == plain.shape
    moved = (first - plain).abs().flatten(1).amax(1) > 0.5
    assert moved.float().mean() > 0.9  # nearly every image changed...
    background = -0.1307 / 0.3081
    ink = lambda x: (x > background + 1).flatten(1).sum(1).float()  # noqa: E731
    ratio = ink(first) / ink(plain)
    assert ratio.min() > 0.6 and ratio.max() < 1.5  # ...and none lost its digit (scale 0.9-1.1)


@pytest.mark.parametrize("schedule", ["onecycle", "cosine"])
def test_schedules_step_every_batch_over_the_whole_run(schedule):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (256, 28, 28), dtype=torch.uint8)
    labels = torch.arange(256) % 10
    # cnn1: the schedule is the learner's, whatever the network; a small one keeps the test cheap.
    learner = build_learner("cnn1", "mnist", _cfg(schedule=schedule, batch_size=64), CPU, 0)
    lrs = []
    for epoch in (1, 2):
        learner.train_epoch(images, labels, torch.Generator().manual_seed(epoch), desc="t")
        lrs.append(learner.optimizer.param_groups[0]["lr"])
    assert learner.scheduler.last_epoch == 8  # 2 epochs x 4 batches, one step each
    # The schedule spans the whole run, so the last batch trains at (about) zero lr.
    if schedule == "onecycle":
        assert learner.scheduler.total_steps == 8
        assert lrs[0] > 0.05 * 0.4  # half-way: past the warm-up (30%), still high
    else:
        assert lrs[0] == pytest.approx(0.05 / 2, rel=1e-6)  # cosine at half-way
        assert lrs[1] == pytest.approx(0.0, abs=1e-12)  # and zero at the run's last step


def test_schedule_and_nesterov_are_validated():
    with pytest.raises(ConfigError, match="nesterov"):
        _cfg(optimizer="adam", nesterov=True)
    with pytest.raises(ConfigError, match="schedule"):
        _cfg(schedule="onecycle", head_epochs=1, epochs=3)
    with pytest.raises(ConfigError, match="train_subset"):
        _cfg(train_subset=10)


def test_cuda_switches_are_no_ops_on_a_cpu_and_channels_last_is_not(shared_mnist):
    accel = accelerator(CPU, RuntimeConfig())
    assert (accel.amp_dtype, accel.pin_memory, accel.non_blocking, accel.channels_last) == (None, False, False, True)
    torch.manual_seed(0)
    learner = build_learner("tiny_vgg", "mnist", _cfg(), CPU, 0, RuntimeConfig())
    assert learner.model[0][0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not learner.scaler.is_enabled()
    torch.manual_seed(0)
    nchw = build_learner("tiny_vgg", "mnist", _cfg(), CPU, 0, RuntimeConfig(channels_last=False))
    assert nchw.model[0][0].weight.is_contiguous()
    # Same weights, other memory layout: the same logits up to float rounding.
    images = mnist.load_split(shared_mnist, "t10k")[0][:64]
    torch.testing.assert_close(learner.logits(images, 32), nchw.logits(images, 32), rtol=1e-4, atol=1e-4)


def test_flops_are_counted_from_the_model():
    # cnn1: conv 32@3x3 on 28x28 -> 26x26: 26*26*32*9 multiply-adds; linear 5,408 -> 10.
    assert flops_per_image(create_model("cnn1"), (1, 28, 28)) == 2 * (26 * 26 * 32 * 9 + 5408 * 10)
    # VGG-16 at 224 is the well-known ~15.5 GMACs (+ the 1-channel first conv's saving).
    vgg = flops_per_image(create_model("vgg16", input_size=224, num_classes=1000), (1, 224, 224))
    assert 2 * 15.3e9 < vgg < 2 * 15.6e9


def test_the_scoring_pass_times_its_own_batches(workspace):
    # The evaluate stage takes its batch latency from the pass that scores the test set: the same
    # logits as one call, batch by batch, and a time per image from its full batches.
    params = shrunk_params(models=["cnn1"])
    learner = build_learner("cnn1", "mnist", params.train_config("mnist", "cnn1"), torch.device("cpu"), 12)
    images = artifacts.load_prepared("mnist")["test_x"][:1100]
    logits, latency = timed_logits(learner, images, 256)
    assert torch.equal(logits, learner.logits(images, 256)) and logits.shape == (1100, 10)
    assert 0 < latency < 10  # ms per image: cnn1 takes about 0.05 here
    assert timed_logits(learner, images[:700], 256)[1] is None  # one full batch after the first


def test_subset_training_through_the_stages(workspace, mlflow_uri):
    # cnn1, not a deep model: what is tested is the subsets' path through train and evaluate, which
    # is the same for every model; a deep one would spend a minute scoring the test set.
    params = shrunk_params(models=["cnn1"], epochs=2, train={"mnist": {"cnn1": {
        "train_subset": 300, "val_subset": 200, "schedule": "onecycle", "augment": True}}})
    (checkpoint,) = train.main(params, "mnist", "cnn1")
    metrics = evaluate.main(params, "mnist", "cnn1")
    run = mlflow.MlflowClient(mlflow_uri).get_run(checkpoint["mlflow_run_id"])
    assert run.data.params["train_size"] == "300" and run.data.params["val_size"] == "200"
    assert run.data.params["schedule"] == "onecycle" and run.data.params["input_size"] == "28"
    assert metrics["params"] == 54_410
    # Counted by the train stage on the built network, carried to evaluate in the checkpoint.
    assert metrics["flops_per_image"] == checkpoint["flops_per_image"] == flops_per_image(create_model("cnn1"),
                                                                                           (1, 28, 28))
    assert metrics["latency_ms_batch1"] > 0 and metrics["latency_ms_batch256"] > 0
    assert metrics["train_seconds_per_epoch"] == pytest.approx(checkpoint["train_seconds"] / 2, abs=0.01)
    assert json.loads(artifacts.metrics_file("mnist", "cnn1").read_text()) == metrics
    # The subset is stratified: each digit keeps its share of the training split.
    prepared = torch.load(artifacts.prepared_file("mnist"), weights_only=True)
    data = train.subset_splits(prepared, params.train_config("mnist", "cnn1"), params.seeds[0])
    share = torch.bincount(prepared["train_y"]) * 300 / len(prepared["train_y"])
    assert (torch.bincount(data["train_y"]) - share).abs().max() <= 1


def test_report_layer_table_follows_the_trained_input_and_dataset():
    from pipeline.reporting.build import layer_rows
    from pipeline.reporting.results import ModelResult

    def rows(name, dataset, **cfg):
        result = ModelResult(name, dataset, get_model_spec(name), _cfg(**cfg), metrics={}, runs=[{}],
                             per_class={}, curves=[], predictions=[])
        return layer_rows(result)

    vgg = rows("vgg16", "mnist", input_size=64)
    assert vgg[0]["output_shape"] == (512, 2, 2) and sum(r["params"] for r in vgg) == count_params(
        create_model("vgg16", input_size=64))
    crack = rows("tiny_resnet", "crack", input_size=64)
    assert crack[-1]["output_shape"] == (1,)  # one logit, as trained on crack
