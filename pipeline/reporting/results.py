"""What the report reads about each trained model: metrics, per-class scores, curves, predictions.

Everything is checked to exist before any figure is drawn, so a missing input fails in seconds
with its file name and the command that makes it, not after minutes of plotting.
"""
from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline import artifacts
from pipeline.artifacts import evaluate_command, read_curves, train_command
from pipeline.config import Params, TrainConfig
from pipeline.data.datasets import get_dataset
from pipeline.models import get_model_spec
from pipeline.models.registry import ModelSpec


@dataclass
class ModelResult:
    name: str
    dataset: str
    spec: ModelSpec
    cfg: TrainConfig
    metrics: dict  # the mean over the seeds' runs (metrics/<dataset>/<model>.json)
    # One metrics dict per seed's run, with its seed and MLflow run id; the table shows their
    # mean and spread (see tables.accuracy_cell).
    runs: list[dict]
    # The first seed's run: its per-class scores, curves, predictions and figures.
    per_class: dict
    curves: list[dict]
    predictions: list[dict]  # rows of the predictions CSV, in test-set order

    @property
    def seed(self) -> int:
        return self.runs[0]["seed"]

    @property
    def mlflow_run_id(self) -> str:
        return self.runs[0]["mlflow_run_id"]

    @property
    def correct(self) -> np.ndarray:
        """Per test image: did this model get it right (for McNemar's paired test)."""
        return np.array([r["actual"] == r["predicted"] for r in self.predictions])

    @property
    def test_size(self) -> int:
        return len(self.predictions)


def required_files(dataset: str, model: str, seeds: tuple[int, ...]) -> dict[Path, str]:
    """Each input of the report for one model, with the command that writes it."""
    train = train_command(dataset, model)
    evaluate = evaluate_command(dataset, model)
    files = {path: train for seed in seeds
             for path in (artifacts.checkpoint_file(dataset, model, seed), artifacts.curves_file(dataset, model, seed))}
    files |= {
        artifacts.metrics_file(dataset, model): evaluate,
        artifacts.seed_metrics_file(dataset, model): evaluate,
        artifacts.per_class_file(dataset, model): evaluate,
        artifacts.predictions_file(dataset, model): evaluate,
    }
    if get_dataset(dataset).binary:  # ROC and precision-recall points too
        files.update({artifacts.curve_points_file(dataset, kind, model): evaluate for kind in ("roc", "pr")})
    return files


def check_inputs(params: Params) -> None:
    """Fails naming every missing input file (and what makes it) before any work starts."""
    missing = []
    for dataset in params.datasets:
        models = params.models(dataset)
        if models and not artifacts.prepared_file(dataset).exists():
            missing.append(f"{artifacts.prepared_file(dataset)} (run `pipeline prepare --dataset {dataset}`)")
        for model in models:
            files = required_files(dataset, model, params.seeds_for(dataset, model))
            missing += [f"{path} (run `{cmd}`)" for path, cmd in files.items() if not path.exists()]
    if missing:
        raise FileNotFoundError("pipeline report needs these files, which are missing: " + "; ".join(missing))


def load_results(params: Params, dataset: str) -> list[ModelResult]:
    results = []
    for name in params.models(dataset):
        runs = _read_json(artifacts.seed_metrics_file(dataset, name))
        seeds = list(params.seeds_for(dataset, name))
        if [run.get("seed") for run in runs] != seeds:
            raise ValueError(f"{artifacts.seed_metrics_file(dataset, name)} holds the runs of seeds "
                             f"{[run.get('seed') for run in runs]}, params.yaml asks for {seeds}: re-run "
                             f"`pipeline evaluate --dataset {dataset} --model {name}`")
        results.append(ModelResult(
            name=name, dataset=dataset, spec=get_model_spec(name), cfg=params.train_config(dataset, name),
            metrics=_read_json(artifacts.metrics_file(dataset, name)), runs=runs,
            per_class=_read_json(artifacts.per_class_file(dataset, name)),
            curves=read_curves(dataset, name, seeds[0]),
            predictions=read_csv(artifacts.predictions_file(dataset, name)),
        ))
    sizes = {r.name: r.test_size for r in results}
    if len(set(sizes.values())) > 1:
        # McNemar pairs image i of one model with image i of another: they must be the same set.
        raise ValueError(f"{dataset}: the predictions files cover different test sets {sizes}; "
                         f"re-run the evaluate stages")
    return results


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"{path} is not valid JSON ({e}): re-run the stage that writes it") from None


def read_csv(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))
