"""What each MLflow run records: the training run (params, tags, its data as a dataset input,
per-epoch metrics), then the evaluation's metrics, figures and logged model, and the report's figures."""
from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path
from typing import Any

from pipeline import artifacts
from pipeline.tracking import serving
from pipeline.tracking.store import TrackingError, check_runs_exist, connect, describe, redacted, tracking_uri

GROUP_ENV = "PIPELINE_GROUP"


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


# MLflow 3's UI opens an experiment by its kind; without the tag it guesses GenAI and opens on
# traces. The value is the one the UI names CUSTOM_MODEL_DEVELOPMENT (MLflow 3.17's build).
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")


def open_experiment(dataset: str):
    """mlflow, its store opened and the dataset's experiment made the active one, declared as
    model training so the UI opens it on its runs."""
    mlflow = connect()
    experiment = mlflow.set_experiment(dataset)
    if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
        mlflow.MlflowClient(tracking_uri()).set_experiment_tag(experiment.experiment_id, *EXPERIMENT_KIND)
    return mlflow


# Seconds between two samples of the machine (runtime.system_metrics). MLflow logs a sample only
# once its interval has passed, so its 10 s default would leave most CPU-profile stages (3-100 s)
# with none or one.
SYSTEM_METRICS_INTERVAL_S = 1.0
SYSTEM_METRICS_INTERVAL_ENV = "MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL"


def start_training_run(dataset: str, model: str, params: dict[str, Any], tags: dict[str, str],
                       system_metrics: bool = False) -> str:
    """Opens the model's run in the dataset's experiment, its prepared data as the run's dataset
    input; returns its id (left active). `system_metrics`: sample the machine into the run."""
    mlflow = open_experiment(dataset)
    seed = tags.get("seed")
    command = artifacts.train_command(dataset, model)
    _system_metrics_interval(mlflow, system_metrics)
    run = mlflow.start_run(
        # Explicit either way: params.yaml decides, not MLflow's MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING.
        log_system_metrics=system_metrics,
        run_name=f"{model}-seed{seed}" if seed else model,
        tags={"model": model, "dataset": dataset, "git_commit": git_commit(),
              "pipeline_group": run_group(),
              # The UI's Source column: the stage's command, not this logging child's file name.
              "mlflow.source.name": command, "mlflow.source.type": "LOCAL",
              "mlflow.project.entryPoint": command, **tags},
    )
    mlflow.log_params(params)
    if artifacts.prepared_file(dataset).exists():
        log_dataset(run.info.run_id, **prepared_dataset(dataset, "training", {
            split: int(params[f"{split}_size"]) for split in ("train", "val", "test") if f"{split}_size" in params}))
    return run.info.run_id


def _system_metrics_interval(mlflow, system_metrics: bool) -> None:
    if system_metrics and not os.environ.get(SYSTEM_METRICS_INTERVAL_ENV):
        mlflow.set_system_metrics_sampling_interval(SYSTEM_METRICS_INTERVAL_S)


def prepared_dataset(dataset: str, context: str, sizes: dict[str, int]) -> dict:
    """log_dataset()'s arguments for the dataset's prepared file."""
    prepared = artifacts.prepared_file(dataset)
    # One name per use: MLflow keeps a run's input of a (name, digest) once, whatever its context.
    name = f"{dataset}-prepared" if context == "training" else f"{dataset}-prepared-{context}"
    return {"name": name, "digest": file_md5(prepared), "source": str(prepared.resolve()),
            "context": context, "sizes": sizes}


def log_epoch(metrics: dict[str, float], epoch: int) -> None:
    connect().log_metrics(metrics, step=epoch)


def end_run(status: str = "FINISHED") -> None:
    connect().end_run(status=status)


def reopen_training_run(run_id: str, system_metrics: bool = False) -> set[int]:
    """Makes an interrupted training run the active one again; returns the epochs it logged.
    System metrics go on from the run's last sample step (MLflow's resume_logging)."""
    mlflow = connect()
    _system_metrics_interval(mlflow, system_metrics)
    mlflow.start_run(run_id=run_id, log_system_metrics=system_metrics)
    return {m.step for m in mlflow.MlflowClient(tracking_uri()).get_metric_history(run_id, "val_accuracy")}


def log_evaluation(run_id: str, metrics: dict[str, float], model: dict, test_split: dict | None = None) -> None:
    """Adds test metrics, the test split as a dataset input and the logged model (which takes
    image files, pipeline.tracking.serving) to the training run; its figures follow with
    log_run_files. JSON in, so that the evaluate stage's MLflow child (pipeline.tracking.run_log)
    can be sent it.

    `model`: serving.model_request()'s; `test_split`: log_dataset()'s arguments for the test split.
    """
    import time

    from mlflow.entities import Metric

    mlflow = connect()
    # Through the client, not start_run: the run keeps the end time its training gave it, so the
    # UI's duration is the training's.
    client = mlflow.MlflowClient(tracking_uri())
    mlflow.set_experiment(experiment_id=client.get_run(run_id).info.experiment_id)  # where its model goes
    now = int(time.time() * 1000)
    client.log_batch(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in metrics.items()])
    if test_split:
        log_dataset(run_id, **test_split)
    serving.log_model(run_id, model)


def log_dataset(run_id: str, name: str, digest: str, source: str, context: str, sizes: dict[str, int]) -> None:
    """A dataset input of the run (the UI's Dataset column): name, digest (the DVC md5 of the
    prepared file, so `dvc.lock` names the same bytes), source (its path) and the split sizes
    as its profile; `context`: "training" or "evaluation"."""
    from mlflow.data.dataset_source_registry import resolve_dataset_source
    from mlflow.data.meta_dataset import MetaDataset
    from mlflow.entities import DatasetInput, InputTag

    class PreparedSplits(MetaDataset):  # MetaDataset stores no profile of its own
        @property
        def profile(self):
            return sizes

        def to_dict(self):
            return {**super().to_dict(), "profile": json.dumps(sizes)}

    import warnings

    with warnings.catch_warnings():
        # MLflow registers its local artifact source twice (file:// and no scheme) and warns it
        # picked one of the two, which are the same class.
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted in multiple ways")
        dataset = PreparedSplits(resolve_dataset_source(source), name=name, digest=digest)
    client = connect().MlflowClient(tracking_uri())
    client.log_inputs(run_id, datasets=[DatasetInput(dataset._to_mlflow_entity(),
                                                     [InputTag("mlflow.data.context", context)])])


def file_md5(path: Path) -> str:
    """The md5 DVC records for a file output in dvc.lock."""
    h = hashlib.md5()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def log_run_files(run_id: str, files: list[str | Path], artifact_path: str | None = None) -> None:
    """Adds files (figures) to a run, under `artifact_path`/ (None: at its top).

    Through the client, not start_run: the run stays FINISHED, its end time untouched.
    """
    import mlflow

    client = mlflow.MlflowClient(tracking_uri())
    for path in files:
        try:
            client.log_artifact(run_id, str(path), artifact_path)
        except Exception as e:
            raise TrackingError(f"cannot log {Path(path).name} to MLflow run {run_id} in "
                                f"{redacted(tracking_uri())}: {describe(e)}") from e


def run_record(run_id: str) -> tuple[dict[str, str], dict[str, str], dict[str, float]]:
    """(tags, params, metrics) of a run: what predict needs to rebuild its preprocessing."""
    check_runs_exist({"the model": run_id})
    data = connect().MlflowClient(tracking_uri()).get_run(run_id).data
    return dict(data.tags), dict(data.params), dict(data.metrics)
