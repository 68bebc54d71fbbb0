"""Everything MLflow, in one place: where runs go, what each run records, how runs are grouped."""
from __future__ import annotations

import hashlib
import os
import subprocess
from pathlib import Path
from typing import Any

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"  # relative: DVC runs stages at the repo root
GROUP_ENV = "PIPELINE_GROUP"


def tracking_uri() -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def _mlflow():
    import mlflow  # heavy import, only in the stages that track

    mlflow.set_tracking_uri(tracking_uri())
    return mlflow


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, check=True)
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def run_group(params_file: Path = Path("params.yaml")) -> str:
    """The tag shared by the runs of one `dvc repro`: same code commit and same params.yaml.

    DVC runs each stage in its own process, so the group is derived from what they share;
    set PIPELINE_GROUP to name a group explicitly.
    """
    if os.environ.get(GROUP_ENV):
        return os.environ[GROUP_ENV]
    digest = hashlib.sha256(params_file.read_bytes()).hexdigest()[:8] if params_file.exists() else "noparams"
    return f"{git_commit()[:10]}-{digest}"


def start_training_run(dataset: str, model: str, params: dict[str, Any], tags: dict[str, str]) -> str:
    """Opens the model's run in the dataset's experiment; returns its id (left active)."""
    mlflow = _mlflow()
    mlflow.set_experiment(dataset)
    run = mlflow.start_run(
        run_name=model,
        tags={"model": model, "dataset": dataset, "git_commit": git_commit(),
              "pipeline_group": run_group(), **tags},
    )
    mlflow.log_params(params)
    return run.info.run_id


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    _mlflow().log_metrics(metrics, step=epoch)


def end_run(status: str = "FINISHED") -> None:
    _mlflow().end_run(status=status)


def log_evaluation(run_id: str, metrics: dict[str, float], artifacts: list[Path], model, example) -> None:
    """Adds test metrics, figures and the logged model (with its signature) to the training run."""
    mlflow = _mlflow()
    with mlflow.start_run(run_id=run_id):
        mlflow.log_metrics(metrics)
        for path in artifacts:
            mlflow.log_artifact(str(path))
        _log_model(mlflow, model, example)


def _log_model(mlflow, model, example) -> None:
    import mlflow.pyfunc
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import infer_signature

    if isinstance(model, torch.nn.Module):
        with torch.inference_mode():
            output = model(torch.from_numpy(example)).numpy()
        mlflow.pytorch.log_model(
            model, name="model", signature=infer_signature(example, output), input_example=example,
            # Explicit requirements: MLflow's inference of them imports the model in a subprocess.
            pip_requirements=[f"torch=={torch.__version__.split('+')[0]}"],
        )
        return
    # The NumPy CNN has no MLflow flavour: a pyfunc model that carries its weights and, through
    # code_paths, the package that defines its forward pass.
    wrapped = _numpy_pyfunc(mlflow.pyfunc.PythonModel, model.state_dict())
    mlflow.pyfunc.log_model(
        name="model", python_model=wrapped, input_example=example,
        signature=infer_signature(example, wrapped.predict(None, example)),
        code_paths=[str(Path(__file__).resolve().parent)],
        pip_requirements=[f"numpy=={np.__version__}"],
    )


def _numpy_pyfunc(base: type, state: dict):
    """A pyfunc model: uint8 images (N,28,28) -> logits (N,10) of lab-D's NumPy CNN.

    The class is made here, not at module level, so that importing this module does not import
    mlflow; cloudpickle stores such a class by value.
    """

    class NumpyCNNPyfunc(base):
        def __init__(self) -> None:
            self.state = state

        def predict(self, context, model_input, params=None):
            from pipeline.models.numpy_cnn import NumpyCNN

            model = NumpyCNN()
            model.load_state_dict(self.state)
            return model.forward(model_input)

    return NumpyCNNPyfunc()


class TrackingError(RuntimeError):
    """The MLflow store cannot be reached, or lacks a run the pipeline's files point to."""


def check_runs_exist(runs: dict[str, str]) -> None:
    """Fails unless every run (label -> run id, from the checkpoints) is in the tracking store.

    Checked before the report draws anything: its figures are logged to these runs at the end.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for label, run_id in runs.items():
        try:
            client.get_run(run_id)
        except Exception as e:  # unreachable server, unreadable sqlite file, unknown run id alike
            raise TrackingError(
                f"MLflow run {run_id} of {label} (recorded in its checkpoint) cannot be read from the "
                f"tracking store {tracking_uri()}: {type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}. "
                f"Set MLFLOW_TRACKING_URI to the store the train stage used, or re-run the train stage."
            ) from e


def log_report_artifacts(run_id: str, files: list[Path], artifact_path: str = "report") -> None:
    """Adds the report's figures of one model to its training run, under `artifact_path`/.

    Through the client, not start_run: the run stays FINISHED, its end time untouched.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for path in files:
        try:
            client.log_artifact(run_id, str(path), artifact_path)
        except Exception as e:
            raise TrackingError(f"cannot log {Path(path).name} to MLflow run {run_id} in "
                                f"{tracking_uri()}: {type(e).__name__}: {e}") from e
