"""`pipeline predict` on real image files: MNIST test digits written to PNG from the official IDX
file, and crack JPEGs of the test split straight from ../shared/data/crack."""
from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from pipeline import artifacts, cli
from pipeline.data import mnist
from tests.conftest import SHARED_CRACK, SHARED_MNIST

N_DIGITS = 30
N_CRACKS = 24


@pytest.fixture(scope="module")
def digits(registered_store):
    """The first official test digits as 28x28 grayscale PNGs, and their labels."""
    root, _ = registered_store
    images = mnist.read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")[:N_DIGITS]
    labels = mnist.read_idx(SHARED_MNIST / "t10k-labels-idx1-ubyte.gz")[:N_DIGITS]
    folder = root / "digits"
    folder.mkdir()
    files = []
    for i, image in enumerate(images):
        Image.fromarray(image, mode="L").save(folder / f"digit{i:02d}.png")
        files.append(str(folder / f"digit{i:02d}.png"))
    return files, labels.astype(int)


def _predict(capsys, *argv) -> tuple[int, str, str]:
    code = cli.main(["predict", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _evaluated(dataset: str, model: str) -> list[dict]:
    """The evaluate stage's predictions of the test split, in its order."""
    with artifacts.predictions_file(dataset, model).open() as f:
        return list(csv.DictReader(f))


def test_predict_classifies_mnist_pngs_like_the_evaluate_stage(registered, digits, capsys):
    files, labels = digits
    code, out, _ = _predict(capsys, "--dataset", "mnist", "--json", *files)
    assert code == 0
    answer = json.loads(out)
    # The default model is the registry's champion: mlp, the more accurate of the two.
    assert answer["model"] == "mlp" and answer["model_uri"] == "models:/mnist-classifier@champion"
    assert [p["file"] for p in answer["predictions"]] == files
    predicted = [int(p["class"]) for p in answer["predictions"]]
    # Same decoding and preset as training: the exact classes evaluate gave the same test images.
    assert predicted == [int(row["predicted"]) for row in _evaluated("mnist", "mlp")[:N_DIGITS]]
    # mlp after one epoch on 1,800 images: 25 of these 30 right (measured, deterministic).
    assert (np.array(predicted) == labels).sum() >= 24
    # The probability is the softmax of the champion's own checkpoint on the same test images.
    from pipeline.artifacts import load_checkpoint, load_prepared
    from pipeline.engine.learners import build_learner

    _, params = registered
    learner = build_learner("mlp", "mnist", params.train_config("mnist", "mlp"), torch.device("cpu"), 12,
                            params.runtime)
    learner.load_state_dict(load_checkpoint("mnist", "mlp", 12)["state_dict"])
    logits = learner.logits(load_prepared("mnist")["test_x"][:N_DIGITS], 1000)
    expected = torch.softmax(logits.double(), 1).max(1).values.tolist()
    assert [p["probability"] for p in answer["predictions"]] == pytest.approx(expected, abs=1e-5)


def test_predict_resizes_larger_colour_digits_as_the_data_pipeline_does(registered, digits, capsys):
    files, labels = digits
    root, _ = registered
    big = []
    for name in files:
        path = root / "digits" / name.rsplit("/", 1)[-1].replace(".png", "_112rgb.jpg")
        Image.open(name).convert("RGB").resize((112, 112), Image.Resampling.BICUBIC).save(path, quality=95)
        big.append(str(path))
    code, out, _ = _predict(capsys, "--dataset", "mnist", *big)
    assert code == 0
    lines = [line.split("\t") for line in out.splitlines()]
    assert [line[0] for line in lines] == big
    predicted = np.array([int(line[1]) for line in lines])
    # Upscaled 4x, JPEG-compressed, read back down to 28x28: still 25 of 30 right (measured).
    assert (predicted == labels).sum() >= 24


def test_predict_with_model_uses_that_models_run(registered, digits, capsys):
    files, labels = digits
    code, out, err = _predict(capsys, "--dataset", "mnist", "--model", "logreg", "--json", *files)
    assert code == 0
    assert "Downloading artifacts" not in err + out  # no pages of MLflow's progress bars (issue 26)
    answer = json.loads(out)
    assert answer["model"] == "logreg" and answer["model_uri"].startswith("runs:/")
    predicted = [int(p["class"]) for p in answer["predictions"]]
    assert predicted == [int(row["predicted"]) for row in _evaluated("mnist", "logreg")[:N_DIGITS]]


def test_predict_classifies_real_crack_jpegs_as_evaluate_did(registered, capsys):
    # Test-split images, never trained on: the first of each class.
    rows = _evaluated("crack", "crack_cnn")
    evaluated = [row for row in rows if row["actual"] == "0"][:N_CRACKS // 2] + \
        [row for row in rows if row["actual"] == "1"][:N_CRACKS // 2]
    files = [str(SHARED_CRACK / row["file"]) for row in evaluated]
    code, out, _ = _predict(capsys, "--dataset", "crack", "--json", *files)
    assert code == 0
    answer = json.loads(out)
    assert answer["model"] == "crack_cnn" and answer["model_uri"] == "models:/crack-classifier@champion"
    names = ["no crack", "crack"]
    for p, row in zip(answer["predictions"], evaluated):
        # Decoded exactly as prepare decoded it for the cache: the same class and probability.
        assert p["class"] == names[int(row["predicted"])]
        positive = p["probability"] if p["class"] == "crack" else 1 - p["probability"]
        assert positive == pytest.approx(float(row["probability"]), abs=2e-6)
    right = sum(p["class"] == names[int(row["actual"])] for p, row in zip(answer["predictions"], evaluated))
    # crack_cnn after 3 epochs on 240 images: 22 of these 24 right (measured, deterministic).
    assert right >= 21


def test_unreadable_files_are_named_and_nothing_is_printed(registered, digits, capsys, tmp_path):
    files, _ = digits
    real_jpeg = sorted((SHARED_CRACK / "Positive").iterdir())[0].read_bytes()
    truncated = tmp_path / "truncated.jpg"
    truncated.write_bytes(real_jpeg[: len(real_jpeg) // 3])
    text = tmp_path / "notes.png"
    text.write_text("not an image\n")
    missing = tmp_path / "missing.png"
    folder = tmp_path / "a_folder"
    folder.mkdir()
    code, out, err = _predict(capsys, "--dataset", "mnist", files[0], str(truncated), str(text),
                              str(missing), str(folder))
    assert code == 2 and out == ""
    assert err.startswith("pipeline predict: error: cannot classify")
    assert f"{truncated}: cannot decode it, truncated or corrupt" in err
    assert f"{text}: not an image Pillow can read" in err
    assert f"{missing}: no such file" in err
    assert f"{folder}: is a folder" in err
    assert files[0] not in err  # the good file is not blamed


def test_no_registered_champion_says_how_to_register(registered, digits, capsys, monkeypatch, tmp_path):
    files, _ = digits
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    import mlflow

    mlflow.MlflowClient(uri).search_experiments()  # a store with no registered model (predict makes none)
    code, out, err = _predict(capsys, "--dataset", "mnist", files[0])
    assert code == 2 and out == ""
    assert "no model is registered as mnist-classifier@champion" in err and "`pipeline register`" in err


def test_read_images_gives_the_prepare_stage_pixels(registered, digits):
    # A 28x28 grayscale PNG comes back bit for bit: no resampling when the side already fits.
    from pipeline.data.datasets import get_dataset
    from pipeline.predict import read_images

    files, _ = digits
    _, params = registered
    images = mnist.read_idx(SHARED_MNIST / "t10k-images-idx3-ubyte.gz")[:3]
    contents = read_images(files[:3], 28)
    assert contents == [open(f, "rb").read() for f in files[:3]]
    decoded = np.stack([get_dataset("mnist").decode(data, params) for data in contents])
    assert np.array_equal(decoded, images)
