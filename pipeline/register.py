"""Stage `register`: the best evaluated model of a dataset becomes its registry champion.

    pipeline register --dataset mnist
    # registers models:/mnist-classifier@champion in the MLflow Model Registry and writes
    # metrics/registry/mnist.json; without --dataset: each dataset of params.yaml `datasets`

The champion is the model of `params.yaml`'s train.<dataset> with the highest validation accuracy
in metrics/<dataset>/<model>.json (its mean over the seeds; ties: fewer parameters, then lower
validation loss, then params.yaml's order), registered from the logged model of its seed with the
best validation accuracy (metrics/<dataset>/seeds/<model>.json), which must carry a signature and
an input example so that `mlflow models serve` can check requests against it. The test set selects
nothing: the test accuracies metrics/registry/<dataset>.json records (`test_accuracy`, the mean;
`run_test_accuracy`, the served seed's) are estimates made after the choice. One registered model
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
from pipeline.selection import rank_by_validation
from pipeline.tracking.registry import ALIAS, ModelRun, champion_uri, model_run, register_champion, registered_name
from pipeline.tracking.store import check_store

log = logging.getLogger(__name__)

@dataclass(frozen=True)
class Candidate:
    model: str
    val_accuracy: float  # the model's mean over its seeds: what models are ranked by
    val_loss: float
    params: int
    test_accuracy: float  # the mean over its seeds, measured after the choice: ranks nothing
    run: ModelRun  # the seed's run that is served


def main(params: Params, dataset: str | None = None) -> dict:
    """Registers the champion of `dataset` (None: of each listed dataset); returns {dataset: entry}."""
    if dataset is not None and dataset not in params.datasets:
        raise ConfigError(f"dataset {dataset!r} is not in params.yaml datasets {list(params.datasets)}")
    check_store()
    return {d: register_dataset(d, params.models(d)) for d in ([dataset] if dataset else params.datasets)}


def register_dataset(dataset: str, models: list[str]) -> dict:
    best = choose_champion([candidate(dataset, m) for m in models])
    entry = register_champion(registered_name(dataset), ALIAS, best.run.run_id, best.run.test_accuracy,
                              {"dataset": dataset, "model": best.model})
    # No record of whether this run registered anything: the file is the same either way.
    record = {"name": entry["name"], "version": entry["version"], "alias": ALIAS,
              "uri": champion_uri(dataset), "run_id": best.run.run_id, "model": best.model,
              "selected_on": "validation", "val_accuracy": best.val_accuracy,
              "run_val_accuracy": best.run.val_accuracy,
              "test_accuracy": best.test_accuracy, "run_test_accuracy": best.run.test_accuracy}
    log.info("%s: champion %s (validation accuracy %.4f; test accuracy %.4f, measured after the choice) "
             "is %s version %s (%s)", dataset, best.model, best.val_accuracy, best.test_accuracy,
             entry["name"], entry["version"], entry["change"])
    write_text(artifacts.registry_file(dataset), json.dumps(record, indent=2) + "\n")
    return record


def candidate(dataset: str, model: str) -> Candidate:
    metrics = artifacts.read_json(artifacts.metrics_file(dataset, model), evaluate_command(dataset, model),
                                  required=("val_accuracy", "val_loss", "params", "test_accuracy"))
    return Candidate(model, float(metrics["val_accuracy"]), float(metrics["val_loss"]), int(metrics["params"]),
                     float(metrics["test_accuracy"]), model_run(dataset, model))


def choose_champion(candidates: list[Candidate]) -> Candidate:
    """pipeline.selection's rule: highest mean validation accuracy; ties: fewer parameters, lower
    validation loss, then params.yaml's order."""
    return rank_by_validation(candidates, lambda c: (c.val_accuracy, c.params, c.val_loss))[0]
