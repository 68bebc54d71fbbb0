"""The logged (and served) model: a classifier that takes image files, or tensors as before.

    mlflow models serve -m models:/mnist-classifier@champion --env-manager local -p 5001
    curl -H 'Content-Type: application/json' -d "{\"dataframe_records\": [{\"image\": \"$(base64 -w0 digit.png)\"}]}" \
        http://127.0.0.1:5001/invocations
    # {"predictions": [{"class": "7", "probability": 0.99}]}

Images: a column `image` of base64-encoded PNG or JPEG bytes (`dataframe_records`,
`dataframe_split`, or `inputs: {"image": [...]}`), decoded as the prepare stage decodes
(grayscale, Lanczos to the cached side), then put through the model's own evaluation preset;
one answer row per image: `class` and its `probability`, and for a binary model also the
positive class's probability and the `threshold` the evaluate stage chose, which made the call.
Tensors (the preset already applied, `inputs` [N, C, S, S]; raw uint8 [N, 28, 28] for the NumPy
CNN) get the logits, as they always did. A request that is neither gets a 400 naming what is
wrong; the server goes on serving.

Logged by `log_model` through `mlflow.models.Model.log(flavor=<this module>)`: a torch model keeps MLflow's
`pytorch` flavour (`mlflow.pytorch.load_model` still loads it); its `python_function` flavour
loads through `_load_pyfunc` below, from the package copy logged with it (code_paths).
"""
from __future__ import annotations

import base64
import binascii
import json
import pickle
import sys
from pathlib import Path

import numpy as np

IMAGE_COLUMN = "image"
POSITIVE_COLUMN = "positive_probability"  # a binary model's P(positive class), whatever the class is called
SPEC_FILE = "serving.json"


def log_model(run_id: str, model, servable: dict) -> None:
    import numpy as np
    import pandas as pd
    import PIL
    import scipy
    import torch
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    spec = servable["spec"]
    requirements = [f"torch=={torch.__version__.split('+')[0]}"] if isinstance(model, torch.nn.Module) else []
    # Explicit requirements: MLflow's inference of them imports the model in a subprocess. Pillow
    # decodes the posted images; numpy does the NumPy CNN's maths.
    requirements += [f"numpy=={np.__version__}", f"pillow=={PIL.__version__}", f"scipy=={scipy.__version__}"]
    binary = spec["binary"]
    outputs = [ColSpec("string", "class"), ColSpec("double", "probability")]
    if binary:
        outputs += [ColSpec("double", POSITIVE_COLUMN), ColSpec("double", "threshold")]

    # The example is a real test image, as a client posts it: the UI shows it, and at logging
    # MLflow serves it once through this module's loader (a broken model fails here).
    input_example = pd.DataFrame({IMAGE_COLUMN: [encode_png(img) for img in servable["images"]]})
    Model.log(
        artifact_path=None, name="model", flavor=sys.modules[__name__], run_id=run_id, network=model, spec=spec,
        preset=servable["preset"],
        # No input schema: one served model takes two forms (image files, tensors) that one MLflow
        # schema cannot describe; serving.ImageClassifier checks each request itself.
        signature=ModelSignature(outputs=Schema(outputs)), input_example=input_example,
        pip_requirements=requirements, code_paths=[str(Path(__file__).resolve().parents[1])],
    )


def save_model(path, mlflow_model, network, spec: dict, preset, signature, input_example,
               pip_requirements: list[str], code_paths: list[str]) -> None:
    """The flavour's save hook (what Model.log calls): `network` and how to feed it images."""
    import mlflow.pyfunc
    import torch

    path = Path(path)
    common = {"mlflow_model": mlflow_model, "signature": signature, "input_example": input_example,
              "pip_requirements": pip_requirements, "code_paths": code_paths}
    if isinstance(network, torch.nn.Module):
        import mlflow.pytorch

        # Pickle, not MLflow 3's default pt2: pt2 traces the network on a tensor example under a
        # tensor signature, and this model's example and requests are image files too.
        mlflow.pytorch.save_model(network, str(path), serialization_format="pickle", **common)
        data = path / mlflow_model.flavors["python_function"]["data"]
        (data / "preset.pkl").write_bytes(pickle.dumps(preset))
        (data / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        mlflow_model.flavors["python_function"]["loader_module"] = __name__
        mlflow_model.save(str(path / "MLmodel"))
        return
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:  # the NumPy CNN: a pyfunc model only
        data = Path(tmp) / "data"
        data.mkdir()
        (data / "network.pkl").write_bytes(pickle.dumps(network))
        (data / SPEC_FILE).write_text(json.dumps(spec, indent=2) + "\n")
        mlflow.pyfunc.save_model(str(path), loader_module=__name__, data_path=str(data), **common)


def _load_pyfunc(data_path: str, model_config=None) -> "ImageClassifier":
    data = Path(data_path)
    spec = json.loads((data / SPEC_FILE).read_text())
    if (data / "network.pkl").exists():
        network = pickle.loads((data / "network.pkl").read_bytes())
        return ImageClassifier(network.forward, None, spec)
    import mlflow.pytorch
    import torch

    model = mlflow.pytorch.load_model(str(data.parent))  # saved in eval mode (served_model)

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return model(torch.from_numpy(x)).numpy()

    return ImageClassifier(forward, pickle.loads((data / "preset.pkl").read_bytes()), spec)


class ImageClassifier:
    """What the pyfunc flavour serves; spec: dataset, side, input_shape, input_dtype, classes,
    threshold (binary) -- the facts of its training run."""

    def __init__(self, forward, preset, spec: dict) -> None:
        self.forward, self.preset, self.spec = forward, preset, spec

    def predict(self, model_input, params=None):
        images = _image_column(model_input)
        if images is not None:
            return self.classify(self.decode(images))
        return self.forward(self._tensor(model_input))

    def decode(self, images) -> np.ndarray:
        """uint8 [N, side, side] of the base64 files; one error naming every bad row."""
        from PIL import ImageFile, UnidentifiedImageError

        from pipeline.data.images import decode_image

        pixels, problems = [], []
        # A truncated file must fail, not be padded with grey (some libraries flip this global).
        previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            for row, value in enumerate(images):
                try:
                    data = value if isinstance(value, bytes) else base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    problems.append(f"row {row}: not base64")
                    continue
                try:
                    pixels.append(decode_image(data, self.spec["side"], self.spec.get("channels", 1)))
                except UnidentifiedImageError:
                    problems.append(f"row {row}: not a PNG or JPEG image ({len(data)} bytes)")
                except Exception as e:  # noqa: BLE001 - a truncated or corrupt file: name it
                    problems.append(f"row {row}: cannot decode the image, truncated or corrupt ({e})")
        finally:
            ImageFile.LOAD_TRUNCATED_IMAGES = previous
        if problems:
            raise _bad_request(f"column '{IMAGE_COLUMN}' must hold base64 PNG or JPEG files: "
                               + "; ".join(problems))
        if not pixels:
            raise _bad_request(f"column '{IMAGE_COLUMN}' holds no image")
        return np.stack(pixels)

    def classify(self, pixels: np.ndarray):
        """One row per image: class, probability (binary: and the positive probability, threshold)."""
        import pandas as pd
        import torch

        x = self.preset(torch.from_numpy(pixels)).numpy() if self.preset is not None else pixels
        from scipy.special import expit, softmax

        logits = np.asarray(self.forward(x), dtype=np.float64)
        classes, threshold = self.spec["classes"], self.spec.get("threshold")
        if self.spec["binary"]:  # one logit, the positive class's; the validation split's threshold
            positive = expit(logits[:, 0])
            decided = positive >= threshold
            return pd.DataFrame({"class": np.where(decided, classes[1], classes[0]),
                                 "probability": np.where(decided, positive, 1.0 - positive),
                                 POSITIVE_COLUMN: positive, "threshold": threshold})
        probabilities = softmax(logits, axis=1)
        best = probabilities.argmax(axis=1)
        return pd.DataFrame({"class": [classes[k] for k in best],
                             "probability": probabilities[np.arange(len(best)), best]})

    def _tensor(self, model_input) -> np.ndarray:
        expected = tuple(self.spec["input_shape"])
        try:
            array = np.asarray(model_input, dtype=np.float64)
        except (TypeError, ValueError):
            raise _bad_request(f"expected a column '{IMAGE_COLUMN}' of base64 PNG or JPEG files, or "
                               f"`inputs` of numbers shaped [N, {', '.join(map(str, expected))}]") from None
        if array.ndim != len(expected) + 1 or array.shape[1:] != expected:
            raise _bad_request(f"a tensor input must be shaped [N, {', '.join(map(str, expected))}] "
                               f"(the model's preset applied), got {list(array.shape)}; or send image "
                               f"files in a column '{IMAGE_COLUMN}'")
        return array.astype(self.spec["input_dtype"])


def _image_column(model_input):
    """The base64 values of the `image` column, None for a tensor; 400 for any other table."""
    import pandas as pd

    if isinstance(model_input, dict):
        if set(model_input) != {IMAGE_COLUMN}:
            raise _bad_request(f"expected one input named '{IMAGE_COLUMN}', got {sorted(model_input)}")
        return list(np.asarray(model_input[IMAGE_COLUMN], dtype=object).reshape(-1))
    if isinstance(model_input, pd.DataFrame):
        if list(model_input.columns) != [IMAGE_COLUMN]:
            raise _bad_request(f"expected one column '{IMAGE_COLUMN}' of base64 PNG or JPEG files, got "
                               f"columns {[str(c) for c in model_input.columns]}")
        return model_input[IMAGE_COLUMN].tolist()
    return None


def _bad_request(message: str):
    from mlflow.exceptions import MlflowException
    from mlflow.protos.databricks_pb2 import INVALID_PARAMETER_VALUE

    return MlflowException(message, error_code=INVALID_PARAMETER_VALUE)


def servable(learner, dataset: str, test_x, classes: list[str], binary: bool, threshold: float | None) -> dict:
    """How the learner's model reads image files: log_evaluation's `servable`."""
    example = learner.example_input(test_x[:1])
    return {"preset": getattr(learner, "preset", None),  # None: the NumPy CNN reads raw pixels
            "images": test_x[:2].numpy(),
            "spec": {"dataset": dataset, "side": int(test_x.shape[-1]),
                     "channels": 1 if test_x.dim() == 3 else int(test_x.shape[1]),  # gray [N,S,S], RGB [N,3,S,S]
                     "input_shape": list(example.shape[1:]),
                     "input_dtype": str(example.dtype), "classes": list(classes), "binary": binary,
                     "threshold": None if threshold is None else float(threshold)}}


def encode_png(pixels: np.ndarray) -> str:
    """base64 of a uint8 image (gray [S,S] or RGB [3,S,S]) as PNG: the input example, and what a
    client sends."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if pixels.ndim == 2 else Image.fromarray(pixels.transpose(1, 2, 0))
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
