"""`pipeline predict IMAGE...`: classify image files with a trained model, as it was trained.

    pipeline predict --dataset mnist digit.png                 # the registry's champion
    pipeline predict --dataset crack --model crack_cnn a.jpg b.jpg --json

The model: by default the dataset's champion in the MLflow Model Registry
(`models:/<dataset>-classifier@champion`, set by `pipeline register`), i.e. what
`mlflow models serve` serves, so both answer alike; with --model, that model's run of this
workspace that `pipeline register` would pick (its seed with the best validation accuracy,
metrics/<dataset>/seeds/<model>.json).
Either way the run's logged model does everything, through the same image path as
`mlflow models serve` (pipeline.tracking.serving).

Preprocessing is the training's: every file is decoded as the prepare stage decodes an image
folder's files (gray or RGB as the dataset, resized with Lanczos to the cached side:
`prepare.<dataset>.image_size` for an image folder, 28 for MNIST, so a 28x28 grayscale digit is
read unchanged), then turned into the model's input
by the model's own preset, at the input size its run was trained with. MNIST digits are white on
black, as in the dataset. Crack: the class is "crack" when the crack probability reaches the
threshold the evaluate stage chose on the validation split (the run's `threshold` metric).

All files are read before anything is classified: one unreadable, missing or non-image file
stops the command with a message naming each such file, and prints no prediction. So does an
image under half the side of the training images (MNIST 28, an image folder its `image_size`):
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

from PIL import Image, ImageFile, UnidentifiedImageError

from pipeline.artifacts import evaluate_command, read_back
from pipeline.config import ConfigError, Params
from pipeline.data.datasets import get_dataset
from pipeline.data.images import decode_image
from pipeline.errors import DataError
from pipeline.tracking import serving
from pipeline.tracking.registry import ALIAS, champion_uri, model_run, registered_name, resolve_registered
from pipeline.tracking.runs import run_record
from pipeline.tracking.serving import IMAGE_COLUMN
from pipeline.tracking.store import check_store, check_store_exists

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
    record = get_dataset(dataset)
    images = read_images(files, record.image_side(params), allow_small)
    check_store()
    check_store_exists()
    model_uri, run_id = resolve_model(dataset, model)
    tags, _, _ = run_record(run_id)
    if tags.get("dataset") != dataset:
        raise ConfigError(f"{model_uri} (MLflow run {run_id}) was trained on {tags.get('dataset')!r}, "
                          f"not {dataset!r}: pass --dataset {tags.get('dataset')}")

    import pandas as pd

    rebuild = evaluate_command(dataset, tags['model'])  # logs the run's model
    # Checked to be data only (model.json + safetensors) before anything in it loads: not
    # mlflow.pyfunc.load_model, which imports whatever loader and code an MLmodel names.
    # A refused model (serving.UnsafeModelError) is told as an unreadable one, with the command to rebuild it.
    mlflow_model = read_back(f"the MLflow model {model_uri} (run {run_id})",
                             rebuild if model else f"{rebuild}` and `pipeline register",
                             lambda: serving.load_logged(model_uri))
    # The served model's own image path (pipeline.tracking.serving): decoding, preset, classes and
    # the crack threshold as `mlflow models serve` applies them.
    # In requests the model's own limits allow (serve.max_images), as a client of the server would.
    step = mlflow_model.limits()["max_images"]
    answers = pd.concat([mlflow_model.predict(pd.DataFrame({IMAGE_COLUMN: images[i:i + step]}))
                         for i in range(0, len(images), step)], ignore_index=True)
    predictions = [Prediction(f, str(row["class"]), float(row["probability"]))
                   for f, (_, row) in zip(files, answers.iterrows())]
    log.info("%s: %d images classified by %s (%s, MLflow run %s)", dataset, len(files), model_uri,
             tags["model"], run_id)
    print_predictions(predictions, as_json, {"model": tags["model"], "model_uri": model_uri, "run_id": run_id})
    return predictions


# Smaller than this share of the training images' side, an image is refused (or, allowed, warned of).
MIN_SIDE_SHARE = 0.5


def read_images(files: list[str], side: int, allow_small: bool = False) -> list[bytes]:
    """The files' bytes, each checked to decode as the prepare stage decodes (at `side`); DataError
    naming every file that cannot be, or is much smaller than `side`, before any is classified."""
    if not files:
        raise DataError("no image file given: pass one or more PNG or JPEG files")
    contents, problems = [], []
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
                decode_image(data, side)
                contents.append(data)
            except UnidentifiedImageError:
                problems.append(f"{name}: not an image Pillow can read (unknown format or empty)")
            except Exception as e:  # noqa: BLE001 - any decoder failure on a user's file: name it
                problems.append(f"{name}: cannot decode it, truncated or corrupt ({e})")
    if problems:
        raise DataError("cannot classify, fix or leave out these files (PNG or JPEG expected): "
                        + "; ".join(problems))
    return contents


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
        return champion_uri(dataset), resolve_registered(registered_name(dataset), ALIAS)
    run_id = model_run(dataset, model).run_id
    return f"runs:/{run_id}/model", run_id


def print_predictions(predictions: list[Prediction], as_json: bool, model: dict) -> None:
    if as_json:
        print(json.dumps({**model, "predictions": [
            {"file": p.file, "class": p.label, "probability": round(p.probability, 6)} for p in predictions
        ]}, indent=2))
        return
    for p in predictions:
        print(f"{p.file}\t{p.label}\t{p.probability:.4f}")
