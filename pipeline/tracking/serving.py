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

Written by `model_request` and logged by `log_model` through `mlflow.models.Model.log(flavor=<this
module>)` as a pyfunc model that holds data only, never code or a pickle (whoever can write one
artifact of a shared store must not run code where a champion is loaded or served):
`data/model.json` names the network's architecture in the model registry (pipeline.models) and its
build settings, the evaluation preset's settings and the facts of the run (classes, threshold,
side); `data/weights.safetensors` holds the weights. Loading (`_load_pyfunc`, the flavour's
`loader_module`) rebuilds the network from the installed package's registry and refuses anything
else: a file of the old pickle format, weights that are not safetensors, a model.json that names
no registered model.
"""
from __future__ import annotations

import base64
import binascii
import contextlib
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from mlflow.models import Model

IMAGE_COLUMN = "image"
POSITIVE_COLUMN = "positive_probability"  # a binary model's P(positive class), whatever the class is called
MODEL_FILE = "model.json"
WEIGHTS_FILE = "weights.safetensors"
FORMAT = 1  # model.json's layout; a later change of it gets a new number
# What older versions logged: pickles. Loading names them instead of running them.
PICKLED_FILES = ("preset.pkl", "network.pkl", "model.pth", "pickle_module_info.txt")


class UnsafeModelError(ValueError):
    """A logged model that is not this module's data-only format: refused before anything in it runs."""


def model_request(model, servable: dict, folder: Path) -> dict:
    """What log_model needs of a trained model, as JSON: its data folder, written here under
    `folder` (model.json and the weights as safetensors), and its input example. The evaluate
    stage writes it, and its MLflow child (pipeline.tracking.run_log) logs it, so the stage never
    imports mlflow."""
    description = {"format": FORMAT, **servable["network"], "preset": servable["preset"], "spec": servable["spec"]}
    folder.mkdir(parents=True, exist_ok=True)
    data = write_data(folder / "data", description, _weights(model))
    # The example is a real test image, as a client posts it (the UI shows it), served once here
    # through this module's loader from the written files, as `mlflow models serve` would: a model
    # that does not load or answer fails the stage (MLflow's own check of it only warns, and would
    # import torch into the logging process).
    examples = [encode_png(img) for img in servable["images"]]
    answers = load_classifier(data).predict({IMAGE_COLUMN: examples})
    if len(answers) != len(examples):
        raise UnsafeModelError(f"the model written to {data} answered {len(answers)} of {len(examples)} images")
    return {"data": str(data), "binary": bool(servable["spec"]["binary"]), "examples": examples}


def log_model(run_id: str, request: dict) -> None:
    """Logs model_request()'s model to the run, as `model`."""
    from importlib.metadata import version

    import pandas as pd
    from mlflow.models import Model, ModelSignature
    from mlflow.types import ColSpec, Schema

    # Explicit requirements: MLflow's inference of them imports the model in a subprocess. Pillow
    # decodes the posted images; numpy does the NumPy CNN's maths; torch runs the preset. Read
    # from the installed distributions: this process need not import torch for them.
    requirements = [f"{name}=={version(name).split('+')[0]}" for name in ("torch", "numpy", "pillow", "scipy")]
    outputs = [ColSpec("string", "class"), ColSpec("double", "probability")]
    if request["binary"]:
        outputs += [ColSpec("double", POSITIVE_COLUMN), ColSpec("double", "threshold")]
    with _no_requirement_scan():
        Model.log(
            artifact_path=None, name="model", flavor=sys.modules[__name__], run_id=run_id, data=request["data"],
            # No input schema: one served model takes two forms (image files, tensors) that one MLflow
            # schema cannot describe; serving.ImageClassifier checks each request itself.
            signature=ModelSignature(outputs=Schema(outputs)),
            input_example=pd.DataFrame({IMAGE_COLUMN: request["examples"]}), pip_requirements=requirements,
            validate_serving_input=False,  # model_request() served it
        )


def preload() -> None:
    """Imports what logging a model takes (MLflow's model code): the evaluate stage's MLflow child
    does this while the stage scores, not after."""
    import mlflow.models  # noqa: F401
    import mlflow.pyfunc  # noqa: F401
    import pandas  # noqa: F401


@contextlib.contextmanager
def _no_requirement_scan():
    """Skips MLflow's check of the model's requirements against the installed packages while the
    model is saved and its input example served once: the requirements are read from the installed
    packages, so the check cannot find a mismatch, and its first call indexes every installed
    distribution (about 1.3 s of each evaluate stage; MLflow has no setting to skip it)."""
    import mlflow.pyfunc
    import mlflow.utils.environment

    name = "warn_dependency_requirement_mismatches"
    modules = [m for m in (mlflow.pyfunc, mlflow.utils.environment) if hasattr(m, name)]
    saved = [getattr(m, name) for m in modules]
    for module in modules:
        setattr(module, name, lambda requirements: None)
    try:
        yield
    finally:
        for module, original in zip(modules, saved):
            setattr(module, name, original)


def _weights(model) -> dict[str, np.ndarray]:
    """The network's weights as plain arrays (a torch module's state dict, or the NumPy CNN's)."""
    import torch

    if isinstance(model, torch.nn.Module):
        return {k: v.detach().cpu().contiguous().numpy() for k, v in model.state_dict().items()}
    return {k: np.ascontiguousarray(v) for k, v in model.state_dict().items()}


def save_model(path, mlflow_model, data: str, signature, input_example, pip_requirements: list[str],
               validate_serving_input: bool = False) -> None:
    """The flavour's save hook (what Model.log calls, with Model.log's own `validate_serving_input`):
    the `data` folder of model_request(), served by this module (`loader_module`); no code is
    logged with it (no code_paths): loading uses the installed package."""
    import mlflow.pyfunc

    mlflow.pyfunc.save_model(str(path), loader_module=__name__, data_path=data, mlflow_model=mlflow_model,
                             signature=signature, input_example=input_example, pip_requirements=pip_requirements)


def write_data(data: Path, description: dict, weights: dict) -> Path:
    """The model's `data` folder: model.json and the weights as safetensors."""
    from safetensors.numpy import save_file

    data.mkdir()
    (data / MODEL_FILE).write_text(json.dumps(description, indent=2) + "\n")
    save_file(weights, str(data / WEIGHTS_FILE))
    return data


def _load_pyfunc(data_path: str, model_config=None) -> "ImageClassifier":
    """The pyfunc flavour's loader (mlflow.pyfunc.load_model, `mlflow models serve`)."""
    return load_classifier(Path(data_path))


def load_classifier(data: Path) -> "ImageClassifier":
    """The served model from a logged model's `data` folder; UnsafeModelError for anything that is
    not model.json + safetensors weights of a registered architecture. Nothing it reads runs code."""
    legacy = [name for name in PICKLED_FILES if (data / name).exists() or (data.parent / name).exists()]
    if legacy or not (data / MODEL_FILE).is_file():
        found = f"it holds {', '.join(legacy)} (pickles, which can run code when loaded)" if legacy else \
            f"it has no {MODEL_FILE}"
        raise UnsafeModelError(f"refusing to load the logged model at {data.parent}: {found}. Only models "
                               f"logged as {MODEL_FILE} + {WEIGHTS_FILE} load; re-run `pipeline evaluate` "
                               "(or `dvc repro`) to log the model again")
    try:
        description = json.loads((data / MODEL_FILE).read_text())
        if not isinstance(description, dict) or description.get("format") != FORMAT:
            raise ValueError(f"format {description.get('format') if isinstance(description, dict) else None!r}, "
                             f"expected {FORMAT}")
        network = _rebuild(description, data / WEIGHTS_FILE)
        preset = description["preset"]
        spec = description["spec"]
        if preset is not None:
            from pipeline.data.presets import InputPreset

            preset = InputPreset(**preset)
    except UnsafeModelError:
        raise
    except Exception as e:  # noqa: BLE001 - JSON, registry, safetensors or shape errors alike: name the model
        raise UnsafeModelError(f"cannot load the logged model at {data.parent}: {type(e).__name__}: {e}. "
                               "Re-run `pipeline evaluate` (or `dvc repro`) to log it again") from None
    if preset is None:  # the NumPy CNN reads raw pixels
        return ImageClassifier(network.forward, None, spec)
    import torch

    def forward(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            return network(torch.from_numpy(x)).numpy()

    return ImageClassifier(forward, preset, spec)


def _rebuild(description: dict, weights_file: Path):
    """The network of `description` from the installed registry, with the safetensors weights."""
    from safetensors.numpy import load_file

    from pipeline.models import get_model_spec

    spec = get_model_spec(str(description["architecture"]))
    build = description["build"]
    if not isinstance(build, dict) or not all(isinstance(v, (str, int, float, bool)) for v in build.values()):
        raise ValueError(f"build settings must be a table of plain values, got {build!r}")
    weights = load_file(str(weights_file))  # safetensors: a JSON header and raw arrays, never code
    network = spec.build(**build)
    if spec.framework == "numpy":
        network.load_state_dict(weights)
        return network
    import torch

    network.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()}, strict=True)
    return network.eval()


def load_logged(model_uri: str) -> "ImageClassifier":
    """The served model of `model_uri` (runs:/..., models:/...), downloaded without progress bars
    and checked to be this module's format before anything in it is loaded: its MLmodel must name
    this module as its only loader and carry no code. (mlflow.pyfunc.load_model would import
    whatever loader_module and code an MLmodel names.)"""
    return load_logged_with_metadata(model_uri)[0]


def load_logged_with_metadata(model_uri: str) -> tuple["ImageClassifier", "Model"]:
    """load_logged, and the model's MLmodel (signature, input example) that MLflow's scoring app
    needs (pipeline.tracking.bounded_server)."""
    import os
    import tempfile

    import mlflow.artifacts
    from mlflow.models import Model

    previous = os.environ.get("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR")
    os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = "false"  # pages of bars on a terminal
    try:
        with tempfile.TemporaryDirectory() as tmp:
            local = Path(mlflow.artifacts.download_artifacts(artifact_uri=model_uri, dst_path=tmp))
            classifier = _checked_load(local)  # first: Model.load below reads a file we now trust
            return classifier, Model.load(str(local / "MLmodel"))
    finally:
        if previous is None:
            os.environ.pop("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", None)
        else:
            os.environ["MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR"] = previous


def _checked_load(local: Path) -> "ImageClassifier":
    import yaml

    try:
        mlmodel = yaml.safe_load((local / "MLmodel").read_text())
    except (OSError, yaml.YAMLError) as e:
        raise UnsafeModelError(f"the logged model at {local} has no readable MLmodel ({e})") from None
    flavors = (mlmodel or {}).get("flavors") or {}
    pyfunc = flavors.get("python_function") or {}
    extra = sorted(set(flavors) - {"python_function"})  # e.g. pytorch: mlflow.pytorch unpickles
    if pyfunc.get("loader_module") != __name__ or pyfunc.get("code") or extra:
        raise UnsafeModelError(
            f"refusing to load the logged model at {local}: its MLmodel names loader "
            f"{pyfunc.get('loader_module')!r}, code {pyfunc.get('code')!r}, flavours {sorted(flavors)}; only "
            f"{__name__} with no logged code loads. Re-run `pipeline evaluate` to log it again")
    data = (local / str(pyfunc.get("data", "data"))).resolve()
    if not data.is_relative_to(local.resolve()):
        raise UnsafeModelError(f"refusing to load the logged model at {local}: its data path leaves the model")
    return load_classifier(data)


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

    def limits(self) -> dict:
        """params.yaml's `serve` section as the evaluate stage logged it (older models: its defaults)."""
        import dataclasses

        from pipeline.config.schema import ServeConfig

        return {**dataclasses.asdict(ServeConfig()), **(self.spec.get("limits") or {})}

    def decode(self, images) -> np.ndarray:
        """uint8 [N, side, side] of the base64 files; one error naming every bad row. What the
        request may cost is checked first: the count and bytes of its files, then each file's
        declared pixels from its header before it is decoded, and the time, between files."""
        import io
        import time

        from PIL import Image, ImageFile, UnidentifiedImageError

        from pipeline.data.images import decode_image

        limits, start = self.limits(), time.monotonic()
        if len(images) > limits["max_images"]:
            raise _bad_request(f"{len(images)} images in one request, more than the limit of "
                               f"{limits['max_images']} (serve.max_images): send them in smaller requests")
        size = sum(len(v) for v in images if isinstance(v, (str, bytes)))
        if size > limits["max_request_bytes"]:
            raise _bad_request(f"{size} bytes of image files in one request, more than the limit of "
                               f"{limits['max_request_bytes']} (serve.max_request_bytes): send fewer or "
                               "smaller files per request")
        pixels, problems = [], []
        # A truncated file must fail, not be padded with grey (some libraries flip this global).
        previous, ImageFile.LOAD_TRUNCATED_IMAGES = ImageFile.LOAD_TRUNCATED_IMAGES, False
        try:
            for row, value in enumerate(images):
                if time.monotonic() - start > limits["timeout_s"]:
                    raise _bad_request(f"decoding took more than the limit of {limits['timeout_s']} s "
                                       f"(serve.timeout_s) at row {row}: send fewer images per request")
                try:
                    data = value if isinstance(value, bytes) else base64.b64decode(str(value), validate=True)
                except (binascii.Error, ValueError):
                    problems.append(f"row {row}: not base64")
                    continue
                try:
                    with Image.open(io.BytesIO(data)) as header:  # reads the header only
                        width, height = header.size
                    if width * height > limits["max_pixels"]:
                        problems.append(f"row {row}: the image declares {width}x{height} = {width * height} "
                                        f"pixels, more than the limit of {limits['max_pixels']} "
                                        "(serve.max_pixels); not decoded")
                        continue
                    pixels.append(decode_image(data, self.spec["side"], self.spec.get("channels", 1)))
                except UnidentifiedImageError:
                    problems.append(f"row {row}: not a PNG or JPEG image ({len(data)} bytes)")
                except Image.DecompressionBombError as e:
                    problems.append(f"row {row}: refused by Pillow as a decompression bomb ({e})")
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
        if array.ndim and len(array) > self.limits()["max_images"]:
            raise _bad_request(f"{len(array)} tensors in one request, more than the limit of "
                               f"{self.limits()['max_images']} (serve.max_images)")
        if array.ndim != len(expected) + 1 or array.shape[1:] != expected:
            raise _bad_request(f"a tensor input must be shaped [N, {', '.join(map(str, expected))}] "
                               f"(the model's preset applied), got {list(array.shape)}; or send image "
                               f"files in a column '{IMAGE_COLUMN}'")
        return array.astype(self.spec["input_dtype"])


def _image_column(model_input):
    """The base64 values of the `image` column, None for a tensor; 400 for any other table."""
    if isinstance(model_input, dict):
        if set(model_input) != {IMAGE_COLUMN}:
            raise _bad_request(f"expected one input named '{IMAGE_COLUMN}', got {sorted(model_input)}")
        return list(np.asarray(model_input[IMAGE_COLUMN], dtype=object).reshape(-1))
    import pandas as pd  # here, not above: the evaluate stage's check of a dict needs none of it

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


def servable(learner, dataset: str, test_x, classes: list[str], binary: bool, threshold: float | None,
             limits: dict | None = None) -> dict:
    """How the learner's model reads image files: log_evaluation's `servable`. `limits`: params.yaml's
    `serve` section (what one request may cost); None: its defaults."""
    if limits is None:
        import dataclasses

        from pipeline.config.schema import ServeConfig

        limits = dataclasses.asdict(ServeConfig())
    example = learner.example_input(test_x[:1])
    preset = getattr(learner, "preset", None)  # None: the NumPy CNN reads raw pixels
    return {"network": learner.recipe,
            "preset": None if preset is None else preset.settings(),
            "images": test_x[:2].numpy(),
            "spec": {"dataset": dataset, "side": int(test_x.shape[-1]),
                     "channels": 1 if test_x.dim() == 3 else int(test_x.shape[1]),  # gray [N,S,S], RGB [N,3,S,S]
                     "input_shape": list(example.shape[1:]),
                     "input_dtype": str(example.dtype), "classes": list(classes), "binary": binary,
                     "threshold": None if threshold is None else float(threshold), "limits": dict(limits)}}


def encode_png(pixels: np.ndarray) -> str:
    """base64 of a uint8 image (gray [S,S] or RGB [3,S,S]) as PNG: the input example, and what a
    client sends."""
    import io

    from PIL import Image

    buffer = io.BytesIO()
    image = Image.fromarray(pixels) if pixels.ndim == 2 else Image.fromarray(pixels.transpose(1, 2, 0))
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
