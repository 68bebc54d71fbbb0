"""The MLflow Model Registry: each dataset's champion as `models:/<dataset>-classifier@champion`.

Champions and their runs are chosen on validation accuracy; the test accuracy each carries is an
estimate made after the choice and selects nothing.
"""
from __future__ import annotations

from typing import NamedTuple

from pipeline import artifacts
from pipeline.artifacts import evaluate_command
from pipeline.tracking.store import TrackingError, check_runs_exist, connect, describe, redacted, tracking_uri

ALIAS = "champion"


class ModelRun(NamedTuple):
    """The seed's MLflow run that stands for a model, with its accuracies."""
    run_id: str
    val_accuracy: float  # what chose it among the model's seeds
    test_accuracy: float  # measured after the choice: checked against the run, selects nothing


def registered_name(dataset: str) -> str:
    """One registered model per dataset: what a client binds to is the task, not the architecture."""
    return f"{dataset}-classifier"


def champion_uri(dataset: str) -> str:
    return f"models:/{registered_name(dataset)}@{ALIAS}"


def register_champion(name: str, alias: str, run_id: str, test_accuracy: float,
                      tags: dict[str, str]) -> dict:
    """Points `name@alias` in the Model Registry at the logged model of `run_id`; returns
    {name, version, run_id, change}, change being "new version", "alias moved" or "none".

    A new version only when no version of `name` holds this run yet, so re-running with the same
    champion changes nothing. The run must hold the `test_accuracy` its metrics file says (files
    left from another training would register the wrong weights; the figure chooses nothing) and a
    logged model with a signature and an input example (what `mlflow models serve` checks
    requests against).
    """
    mlflow = connect()
    client = mlflow.MlflowClient(tracking_uri())
    check_runs_exist({f"{name}'s champion": run_id})
    logged = client.get_run(run_id).data.metrics.get("test_accuracy")
    if logged is None or abs(logged - test_accuracy) > 1e-9:
        raise TrackingError(
            f"MLflow run {run_id} holds test_accuracy {logged}, its metrics file {test_accuracy}: "
            f"the metrics file and the run come from different trainings. Re-run "
            f"`pipeline evaluate` for {tags.get('model', 'this model')} (or `dvc repro`).")
    model_uri = f"runs:/{run_id}/model"
    try:
        info = mlflow.models.get_model_info(model_uri)
    except Exception as e:  # no such artifact, unreadable MLmodel, unreachable artifact store alike
        raise TrackingError(f"MLflow run {run_id} has no logged model at {model_uri} ({describe(e)}); "
                            f"re-run `pipeline evaluate`, which logs it") from e
    if info.signature is None or info.saved_input_example_info is None:
        raise TrackingError(f"the model logged by MLflow run {run_id} lacks a signature or an input "
                            f"example, which serving needs; re-run `pipeline evaluate` to log it again")

    current = _version_by_alias(client, name, alias)
    if current is not None and current.run_id == run_id:
        return {"name": name, "version": int(current.version), "run_id": run_id, "change": "none"}
    existing = client.search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    # From the logged model itself (models:/m-...): the run's `model` path is only an alias of it.
    version = existing[0] if existing else mlflow.register_model(info.model_uri, name, tags=tags)
    client.set_registered_model_alias(name, alias, version.version)
    return {"name": name, "version": int(version.version), "run_id": run_id,
            "change": "alias moved" if existing else "new version"}


def _version_by_alias(client, name: str, alias: str):
    from mlflow.exceptions import MlflowException

    try:
        return client.get_model_version_by_alias(name, alias)
    except MlflowException as e:
        if e.error_code == "RESOURCE_DOES_NOT_EXIST":  # no such model or alias yet: first registration
            return None
        raise TrackingError(f"cannot read {name}@{alias} from the Model Registry of {redacted(tracking_uri())}: "
                            f"{describe(e)}") from e


def resolve_registered(name: str, alias: str) -> str:
    """The run id behind `name@alias`; TrackingError saying how to register it when it is missing."""
    client = connect().MlflowClient(tracking_uri())
    version = _version_by_alias(client, name, alias)
    if version is None:
        raise TrackingError(f"no model is registered as {name}@{alias} in {redacted(tracking_uri())}: run "
                            f"`pipeline register` (after the evaluate stages), or set "
                            f"MLFLOW_TRACKING_URI to the store where it was registered")
    return version.run_id


def model_run(dataset: str, model: str) -> ModelRun:
    """Of `model`'s seeds' runs, the one with the best validation accuracy (ties: the first seed):
    seeds differ by noise only, so this picks the best copy of a model, without the test set."""
    runs = artifacts.read_json(artifacts.seed_metrics_file(dataset, model), evaluate_command(dataset, model),
                               required=("mlflow_run_id", "val_accuracy", "test_accuracy"))
    best = max(runs, key=lambda run: (run["val_accuracy"], -runs.index(run)))
    return ModelRun(best["mlflow_run_id"], float(best["val_accuracy"]), float(best["test_accuracy"]))
