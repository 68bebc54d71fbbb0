"""Stage `register`: the best evaluated model of a dataset becomes its registry champion.

    pipeline register --dataset mnist
    # registers models:/mnist-classifier@champion in the MLflow Model Registry and writes
    # metrics/registry/mnist.json; without --dataset: each dataset of params.yaml `datasets`

The champion is the model of `params.yaml`'s train.<dataset> with the highest test accuracy in
metrics/<dataset>/<model>.json (its mean over the seeds), registered from the logged model of its
best seed's MLflow run (metrics/<dataset>/seeds/<model>.json), which must carry a signature and
an input example so that `mlflow models serve` can check requests against it. One registered model
per dataset, named `<dataset>-classifier`: what a client binds to is the task; which architecture
wins can change from one run of the pipeline to the next, and each winner is a new version.
One stage per dataset (DVC's register@<dataset>), so a dataset runs and registers on its own.

Idempotent: if the champion alias already points at a version of the chosen run, nothing is
registered; if an older version holds that run (the alias moved away and back), the alias moves
back to it.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from pipeline import paths, tracking
from pipeline.atomic import write_text
from pipeline.config import ConfigError, Params
from pipeline.data.errors import DataError

log = logging.getLogger(__name__)

ALIAS = "champion"


def registry_file(dataset: str) -> Path:
    """The stage's output: what is registered now for `dataset`."""
    return Path("metrics") / "registry" / f"{dataset}.json"


def registered_name(dataset: str) -> str:
    return f"{dataset}-classifier"


def champion_uri(dataset: str) -> str:
    return f"models:/{registered_name(dataset)}@{ALIAS}"


@dataclass(frozen=True)
class Candidate:
    model: str
    test_accuracy: float  # the model's mean over its seeds: what models are ranked by
    test_loss: float
    run_id: str  # the seed's run that is served
    run_accuracy: float


def main(params: Params, dataset: str | None = None) -> dict:
    """Registers the champion of `dataset` (None: of each listed dataset); returns {dataset: entry}."""
    if dataset is not None and dataset not in params.datasets:
        raise ConfigError(f"dataset {dataset!r} is not in params.yaml datasets {list(params.datasets)}")
    tracking.check_store()
    return {d: register_dataset(d, params.models(d)) for d in ([dataset] if dataset else params.datasets)}


def register_dataset(dataset: str, models: list[str]) -> dict:
    best = choose_champion([candidate(dataset, m) for m in models])
    entry = tracking.register_champion(registered_name(dataset), ALIAS, best.run_id, best.run_accuracy,
                                       {"dataset": dataset, "model": best.model})
    # No record of whether this run registered anything: the file is the same either way.
    record = {"name": entry["name"], "version": entry["version"], "alias": ALIAS,
              "uri": champion_uri(dataset), "run_id": best.run_id, "model": best.model,
              "test_accuracy": best.test_accuracy, "run_test_accuracy": best.run_accuracy}
    log.info("%s: champion %s (test accuracy %.4f) is %s version %s (%s)", dataset, best.model,
             best.test_accuracy, entry["name"], entry["version"], entry["change"])
    write_text(registry_file(dataset), json.dumps(record, indent=2) + "\n")
    return record


def candidate(dataset: str, model: str) -> Candidate:
    metrics = _read_json(paths.metrics_file(dataset, model), dataset, model)
    run_id, run_accuracy = model_run(dataset, model)
    return Candidate(model, float(metrics["test_accuracy"]), float(metrics["test_loss"]), run_id, run_accuracy)


def model_run(dataset: str, model: str) -> tuple[str, float]:
    """(MLflow run id, its test accuracy) of the run that stands for `model`: of its seeds' runs,
    the most accurate on the test set (ties: the first seed). Seeds differ by noise only, and
    the model was already chosen on its mean, so this picks the best copy of a chosen model."""
    runs = _read_json(paths.seed_metrics_file(dataset, model), dataset, model)
    best = max(runs, key=lambda run: (run["test_accuracy"], -runs.index(run)))
    return best["mlflow_run_id"], float(best["test_accuracy"])


def choose_champion(candidates: list[Candidate]) -> Candidate:
    """Highest mean test accuracy; ties: lower test loss, then the first in params.yaml's order."""
    return max(candidates, key=lambda c: (c.test_accuracy, -c.test_loss, -candidates.index(c)))


def _read_json(path: Path, dataset: str, model: str):
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `pipeline evaluate --dataset {dataset} "
                                f"--model {model}` first")
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise DataError(f"{path} is not valid JSON ({e}): run `pipeline evaluate --dataset {dataset} "
                        f"--model {model}` again") from None
