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

from pipeline import artifacts
from pipeline.artifacts import evaluate_command, write_text
from pipeline.config import ConfigError, Params
from pipeline.tracking.registry import ALIAS, champion_uri, model_run, register_champion, registered_name
from pipeline.tracking.store import check_store

log = logging.getLogger(__name__)

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
    check_store()
    return {d: register_dataset(d, params.models(d)) for d in ([dataset] if dataset else params.datasets)}


def register_dataset(dataset: str, models: list[str]) -> dict:
    best = choose_champion([candidate(dataset, m) for m in models])
    entry = register_champion(registered_name(dataset), ALIAS, best.run_id, best.run_accuracy,
                                       {"dataset": dataset, "model": best.model})
    # No record of whether this run registered anything: the file is the same either way.
    record = {"name": entry["name"], "version": entry["version"], "alias": ALIAS,
              "uri": champion_uri(dataset), "run_id": best.run_id, "model": best.model,
              "test_accuracy": best.test_accuracy, "run_test_accuracy": best.run_accuracy}
    log.info("%s: champion %s (test accuracy %.4f) is %s version %s (%s)", dataset, best.model,
             best.test_accuracy, entry["name"], entry["version"], entry["change"])
    write_text(artifacts.registry_file(dataset), json.dumps(record, indent=2) + "\n")
    return record


def candidate(dataset: str, model: str) -> Candidate:
    metrics = artifacts.read_json(artifacts.metrics_file(dataset, model), evaluate_command(dataset, model))
    run_id, run_accuracy = model_run(dataset, model)
    return Candidate(model, float(metrics["test_accuracy"]), float(metrics["test_loss"]), run_id, run_accuracy)


def choose_champion(candidates: list[Candidate]) -> Candidate:
    """Highest mean test accuracy; ties: lower test loss, then the first in params.yaml's order."""
    return max(candidates, key=lambda c: (c.test_accuracy, -c.test_loss, -candidates.index(c)))
