"""`pipeline predict IMAGE...`: classify image files with a trained model, as it was trained.

    pipeline predict --dataset mnist digit.png                 # the registry's champion
    pipeline predict --dataset crack --model crack_cnn a.jpg b.jpg --json

The model: by default the dataset's champion in the MLflow Model Registry
(`models:/<dataset>-classifier@champion`, set by `pipeline register`), i.e. what
`mlflow models serve` serves, so both answer alike; with --model, that model's run of this
workspace that `pipeline register` would pick (its best seed, metrics/<dataset>/seeds/<model>.json).
Either way the run's logged model does the maths.

Preprocessing is the training's: every file is decoded as the prepare stage decodes crack
photos (grayscale, resized with Lanczos to the cached side: `prepare.crack.image_size` for crack,
28 for MNIST, so a 28x28 grayscale digit is read unchanged), then turned into the model's input
by the model's own preset, at the input size its run was trained with. MNIST digits are white on
black, as in the dataset. Crack: the class is "positive" when the crack probability reaches the
threshold the evaluate stage chose on the validation split (the run's `threshold` metric).

All files are read before anything is classified: one unreadable, missing or non-image file
stops the command with a message naming each such file, and prints no prediction. So does an
image under half the side of the training images (MNIST 28, crack `prepare.crack.image_size`):
upscaled from a few pixels it holds nothing the model can read, yet would get a confident answer.
`--allow-small` classifies such images with a warning. The tracking store is only read: where
there is none, the command says so instead of creating an empty one.
"""
from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import logging
import math
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline import tracking
from pipeline.artifacts import read_back
from pipeline.config import ConfigError, Params
from pipeline.data import mnist
from pipeline.data.crack import decode_image
from pipeline.data.errors import DataError
from pipeline.register import ALIAS, champion_uri, model_run, registered_name

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class Prediction:
    file: str
    label: str
    probability: float


def main(params: Params, dataset: str, files: list[str], model: str | None = None,
         as_json: bool = False, allow_small: bool = False) -> list[Prediction]:
    if model is not None:
        params.train_config(dataset, model)  # an unknown name fails with the valid ones
    images = read_images(files, image_side(params, dataset), allow_small)
    tracking.check_store()
    tracking.check_store_exists()
    model_uri, run_id = resolve_model(dataset, model)
    tags, run_params, run_metrics = tracking.run_record(run_id)
    if tags.get("dataset") != dataset:
        raise ConfigError(f"{model_uri} (MLflow run {run_id}) was trained on {tags.get('dataset')!r}, "
                          f"not {dataset!r}: pass --dataset {tags.get('dataset')}")
    model_inputs = model_input(params, dataset, tags["model"], run_params, images)

    import mlflow.pyfunc

    rebuild = f"pipeline evaluate --dataset {dataset} --model {tags['model']}"  # logs the run's model
    mlflow_model = read_back(f"the MLflow model {model_uri} (run {run_id})",
                             rebuild if model else f"{rebuild}` and `pipeline register",
                             lambda: mlflow.pyfunc.load_model(model_uri))
    logits = np.asarray(mlflow_model.predict(model_inputs), dtype=np.float64)
    predictions = [Prediction(f, label, p) for f, (label, p)
                   in zip(files, classify(dataset, logits, run_metrics.get("threshold")))]
    log.info("%s: %d images classified by %s (%s, MLflow run %s)", dataset, len(files), model_uri,
             tags["model"], run_id)
    print_predictions(predictions, as_json, {"model": tags["model"], "model_uri": model_uri, "run_id": run_id})
    return predictions


def image_side(params: Params, dataset: str) -> int:
    return params.prepare.crack.image_size if dataset == "crack" else mnist.IMAGE_SIZE


# Smaller than this share of the training images' side, an image is refused (or, allowed, warned of).
MIN_SIDE_SHARE = 0.5


def read_images(files: list[str], side: int, allow_small: bool = False) -> torch.Tensor:
    """uint8 [N, side, side] of the files, decoded as the prepare stage decodes; DataError naming
    every file that cannot be, or is much smaller than `side`, before any is classified."""
    if not files:
        raise DataError("no image file given: pass one or more PNG or JPEG files")
    pixels, problems = [], []
    with _truncated_images_fail():
        for name in files:
            try:
                data = Path(name).read_bytes()
            except FileNotFoundError:
                problems.append(f"{name}: no such file")
                continue
            except IsADirectoryError:
                problems.append(f"{name}: is a folder, not an image file")
                continue
            except OSError as e:
                problems.append(f"{name}: cannot read it ({e.strerror or e})")
                continue
            try:
                small = _too_small(data, side)
                if small and not allow_small:
                    problems.append(f"{name}: {small}; pass a larger image, or --allow-small to classify "
                                    "it anyway")
                    continue
                if small:
                    log.warning("%s: %s; classified anyway (--allow-small)", name, small)
                pixels.append(decode_image(data, side))
            except UnidentifiedImageError:
                problems.append(f"{name}: not an image Pillow can read (unknown format or empty)")
            except Exception as e:  # noqa: BLE001 - any decoder failure on a user's file: name it
                problems.append(f"{name}: cannot decode it, truncated or corrupt ({e})")
    if problems:
        raise DataError("cannot classify, fix or leave out these files (PNG or JPEG expected): "
                        + "; ".join(problems))
    return torch.from_numpy(np.stack(pixels))


def _too_small(data: bytes, side: int) -> str | None:
    """Why the image is much smaller than the model's input, or None."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    if min(width, height) < MIN_SIDE_SHARE * side:
        return (f"{width}x{height} pixels, much smaller than the {side}x{side} images the model was "
                f"trained on (at least {math.ceil(MIN_SIDE_SHARE * side)} pixels a side)")
    return None


@contextlib.contextmanager
def _truncated_images_fail():
    # As in the prepare stage: Pillow pads a truncated file with grey when this global is True
    # (some libraries set it), which would classify a broken file instead of refusing it.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        yield
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous


def resolve_model(dataset: str, model: str | None) -> tuple[str, str]:
    """(model URI, MLflow run id): the registry's champion, or `model`'s run of this workspace."""
    if model is None:
        return champion_uri(dataset), tracking.resolve_registered(registered_name(dataset), ALIAS)
    run_id, _ = model_run(dataset, model)
    return f"runs:/{run_id}/model", run_id


def model_input(params: Params, dataset: str, model_name: str, run_params: dict[str, str],
                images: torch.Tensor) -> np.ndarray:
    """The images as the model's input: its learner's preset at the input size of its run."""
    from pipeline.learners import build_learner

    # The run's input size, not params.yaml's, which may have changed since it trained; no
    # ImageNet download: the weights come from MLflow.
    cfg = dataclasses.replace(params.train_config(dataset, model_name), pretrained=False,
                              input_size=int(run_params["input_size"]))
    # Built for its preset only: the seed of its random weights does not matter.
    learner = build_learner(model_name, dataset, cfg, torch.device("cpu"), seed=0)
    return learner.example_input(images)


def classify(dataset: str, logits: np.ndarray, threshold: float | None) -> list[tuple[str, float]]:
    """(class name, probability of that class) per row of logits."""
    from pipeline.evaluate import CLASS_NAMES

    if logits.shape[1] == 1:  # binary: one logit, the positive class's
        if threshold is None:
            raise ConfigError("the binary model's run has no `threshold` metric: re-run `pipeline evaluate`")
        names = CLASS_NAMES[dataset]
        positive = 1.0 / (1.0 + np.exp(-logits[:, 0]))
        return [(names[1], float(p)) if p >= threshold else (names[0], float(1.0 - p)) for p in positive]
    shifted = logits - logits.max(axis=1, keepdims=True)
    probabilities = np.exp(shifted) / np.exp(shifted).sum(axis=1, keepdims=True)
    names = CLASS_NAMES.get(dataset) or [str(c) for c in range(logits.shape[1])]
    return [(names[k], float(row[k])) for k, row in zip(probabilities.argmax(axis=1), probabilities)]


def print_predictions(predictions: list[Prediction], as_json: bool, model: dict) -> None:
    if as_json:
        print(json.dumps({**model, "predictions": [
            {"file": p.file, "class": p.label, "probability": round(p.probability, 6)} for p in predictions
        ]}, indent=2))
        return
    for p in predictions:
        print(f"{p.file}\t{p.label}\t{p.probability:.4f}")
