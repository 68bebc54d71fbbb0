"""Issue #25's robust-by-design inputs on real crack photos: per-image standardisation (training,
evaluation and the logged model alike) and the batched photometric and geometric augmentation."""
from __future__ import annotations

import csv
import json
import re
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts, cli, evaluate, train
from pipeline.artifacts import load_prepared
from pipeline.data.presets import PER_IMAGE_MIN_STD, InputPreset
from pipeline.tracking import serving
from tests.conftest import shrunk_params, shrunk_params_dict

ROBUST = {"normalise": "per_image", "photometric": True, "geometric": True}


@pytest.fixture
def photos(workspace) -> torch.Tensor:
    """64 real training photos of the shared crack set, as the prepare stage cached them (uint8)."""
    return load_prepared("crack")["train_x"][:64]


def test_augmentation_is_seeded_and_keeps_shapes_and_dtypes(photos):
    preset = InputPreset("crack", 32, 1, photometric=True, geometric=True)
    torch.manual_seed(12)
    first = preset(photos)
    torch.manual_seed(12)
    again = preset(photos)
    torch.manual_seed(13)
    other = preset(photos)
    assert first.shape == (64, 1, 32, 32) and first.dtype == torch.float32
    assert torch.equal(first, again) and not torch.equal(first, other)
    assert torch.isfinite(first).all()
    # A larger input side: the crop is sampled at the model's side, from the cached 32.
    assert InputPreset("crack", 48, 1, geometric=True)(photos).shape == (64, 1, 48, 48)
    # Three channels (the ResNet-18 strategies): the gray replicated.
    rgb = InputPreset("crack", 32, 3, photometric=True, normalise="per_image")(photos)
    assert rgb.shape == (64, 3, 32, 32) and torch.equal(rgb[:, 0], rgb[:, 2])


def test_per_image_standardisation_ignores_each_photos_exposure_and_contrast(photos):
    preset = InputPreset("crack", 32, 1, normalise="per_image")
    x = preset(photos)
    flat = x.flatten(1)
    torch.testing.assert_close(flat.mean(1), torch.zeros(64), atol=1e-5, rtol=0)
    raw_std = photos.float().div(255).flatten(1).std(1, correction=0)
    unfloored = raw_std > PER_IMAGE_MIN_STD
    torch.testing.assert_close(flat.std(1, correction=0)[unfloored], torch.ones(int(unfloored.sum())), atol=1e-4,
                               rtol=0)
    # Another camera's exposure and contrast (an affine change of the pixels, kept in range): the
    # same inputs but for uint8 rounding, where the dataset's fixed mean and std give other ones.
    darker = (photos.float() * 0.7 + 20).round().to(torch.uint8)
    fixed = InputPreset("crack", 32, 1)
    moved = (fixed(darker) - fixed(photos)).abs().mean()
    # measured at 64x64 on the shared set: 0.074 against 1.11
    assert moved > 0.5 and (preset(darker) - x).abs().mean() < 0.15 * moved


def test_settings_that_cannot_work_are_refused_naming_the_key(workspace, mlflow_uri, capsys):
    bad = {
        "mnist": ("lenet5", {"augment": False, "geometric": True}, r"train\.mnist\.lenet5: .*orientation"),
        "crack": ("crack_cnn", {"augment": True, "photometric": True}, r"train\.crack\.crack_cnn\.augment"),
    }
    for dataset, (model, override, message) in bad.items():
        raw = shrunk_params_dict(models=["lenet5"], crack_models=["crack_cnn"], train={dataset: {model: override}})
        (workspace / "bad.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        assert cli.main(["--params", "bad.yaml", "train", "--dataset", dataset, "--model", model]) == 2
        assert re.search(message, capsys.readouterr().err)
    raw = shrunk_params_dict(crack_models=["crack_cnn"], train={"crack": {"crack_cnn": {"normalise": "imagenet"}}})
    (workspace / "bad.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    assert cli.main(["--params", "bad.yaml", "train", "--dataset", "crack", "--model", "crack_cnn"]) == 2
    assert re.search(r"train\.crack\.crack_cnn\.normalise: .*dataset, per_image", capsys.readouterr().err)
    client = mlflow.MlflowClient(mlflow_uri)  # refused before any run was opened
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])


def test_per_image_standardisation_round_trips_through_the_logged_model(workspace, mlflow_uri, tmp_path):
    params = shrunk_params(crack_models=["crack_cnn"], epochs=2, train={"crack": {"crack_cnn": ROBUST}})
    (checkpoint,) = train.main(params, "crack", "crack_cnn")
    evaluate.main(params, "crack", "crack_cnn")
    uri = f"runs:/{checkpoint['mlflow_run_id']}/model"
    local = Path(mlflow.artifacts.download_artifacts(uri, dst_path=str(tmp_path)))
    described = json.loads((local / "data/data/model.json").read_text())
    assert described["preset"] == {"dataset": "crack", "input_size": 32, "channels": 1, "resize": False,
                                   "normalise": "per_image"}
    # Served from the logged files alone: the evaluate stage's probabilities for the test photos.
    with artifacts.predictions_file("crack", "crack_cnn").open() as f:
        rows = list(csv.DictReader(f))[:20]
    test_x = load_prepared("crack")["test_x"][:20]
    frame = __import__("pandas").DataFrame({"image": [serving.encode_png(i.numpy()) for i in test_x]})
    answers = serving.load_logged(uri).predict(frame)
    assert answers[serving.POSITIVE_COLUMN].tolist() == pytest.approx([float(r["probability"]) for r in rows],
                                                                      abs=2e-6)
