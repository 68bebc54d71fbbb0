"""Stage `evaluate`: score the best checkpoint on the official test set, then on real images from
another source (the dataset record's `other_source`), neither of which selects anything; beside
them, each seed's validation figures (`val_accuracy`, `val_loss` of its best epoch), on which the
register stage chooses.

    pipeline evaluate --dataset mnist --model lenet5
    # writes metrics/mnist/lenet5.json (the mean over the seeds, with the accuracy's spread, and
    #        other_accuracy / other_size on the other source's images),
    #        metrics/mnist/seeds/lenet5.json (each seed's run), and for the first seed
    #        metrics/mnist/per_class/lenet5.json, metrics/mnist/predictions/lenet5.csv;
    #        logs each seed's metrics, figures and model to that seed's MLflow run (through the
#        MLflow child pipeline.tracking.run_log: this process never imports mlflow)
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import numpy as np
import torch

from pipeline import artifacts
from pipeline.artifacts import load_checkpoint, load_prepared, read_curves, write_csv, write_text
from pipeline.config import Params
from pipeline.data.datasets import get_dataset
from pipeline.data.split import check_classes
from pipeline.engine import binary, runtime, scores
from pipeline.engine.cost import cost_metrics, timed_logits
from pipeline.engine.inference import loss_and_accuracy
from pipeline.engine.learners import build_learner
from pipeline.models import get_model_spec
from pipeline.models.registry import ModelSpec
from pipeline.reporting import figures
from pipeline.reporting.stats import mean_and_spread
from pipeline.tracking import serving
from pipeline.tracking.run_log import RunLog
from pipeline.tracking.runs import prepared_dataset
from pipeline.tracking.store import check_store

log = logging.getLogger(__name__)


def main(params: Params, dataset: str, model: ModelSpec | str, run_log: RunLog | None = None) -> dict:
    """Scores each seed's checkpoint; returns the metrics averaged over the seeds. `model`: the
    spec the CLI looked up, or a registered name; `run_log`: the MLflow child `pipeline evaluate`
    started first thing; one is started here if None."""
    spec = model if isinstance(model, ModelSpec) else get_model_spec(model)
    with contextlib.ExitStack() as stack:
        run_log = run_log or stack.enter_context(RunLog(dataset, evaluate=True))
        # The figures and model files each seed's run gets stay until the child has logged them.
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory()))
        return _evaluate(params, dataset, spec, run_log, scratch)


def _evaluate(params: Params, dataset: str, spec: ModelSpec, run_log: RunLog, scratch: Path) -> dict:
    model_name = spec.name
    cfg = params.train_config(dataset, model_name)  # fails early on a model not in params.yaml
    seeds = params.seeds_for(dataset, model_name)
    device = runtime.setup(params.runtime, seeds[0])
    checkpoints = [load_checkpoint(dataset, model_name, seed) for seed in seeds]  # all, before any work
    validations = [validation_metrics(dataset, model_name, seed, c) for seed, c in zip(seeds, checkpoints)]
    # The weights come from the checkpoint: no need for (or download of) ImageNet's.
    cfg = dataclasses.replace(cfg, pretrained=False)
    check_store()
    data = load_prepared(dataset)
    # Checked again here, not only by prepare: scikit-learn only warns on a class missing from the
    # test split, and scores what is left as if nothing were missing (accuracy 1.0 on one class).
    check_classes({split: data[f"{split}_y"].numpy() for split in ("val", "test")},
                  list(get_dataset(dataset).class_names),
                  str(artifacts.prepared_file(dataset)), f"rebuild it with `pipeline prepare --dataset {dataset}`")
    other = load_other_source(params, dataset, data["test_x"].shape[-1])
    # The images each validation accuracy was measured on (a val_subset, or the whole split): the
    # report's interval around the champion's validation accuracy.
    val_sizes = [min(c.get("val_subset") or len(data["val_y"]), len(data["val_y"])) for c in checkpoints]
    # The prepared file's md5 names the data the runs were scored on (val: the threshold's): read once.
    evaluation_input = prepared_dataset(dataset, "evaluation", {"test": len(data["test_y"]), "val": len(data["val_y"])})
    runs, cost = [], None
    for seed, checkpoint, validation, val_size in zip(seeds, checkpoints, validations, val_sizes):
        learner = build_learner(spec, dataset, cfg, device, seed, params.runtime)
        learner.load_state_dict(checkpoint["state_dict"])
        scored = _score(learner, data, dataset, params.runtime.eval_batch_size, _stored_val_logits(checkpoint, data))
        # Only once the test set is scored: the other source comes after it and selects nothing.
        beyond = (score_other_source(learner, other, dataset, scored["metrics"].get("threshold"),
                                     params.runtime.eval_batch_size) if other is not None else {})
        # Every seed builds the same network: its cost is measured once.
        cost = cost or cost_metrics(learner, data["test_x"], checkpoint.get("flops_per_image"),
                                    {params.runtime.eval_batch_size: scored["latency_ms"]})
        metrics = {**scored["metrics"], **beyond, **validation, "val_size": val_size, "params": learner.num_params,
                   "best_epoch": checkpoint["best_epoch"], "epochs_run": checkpoint["epochs_run"],
                   "train_seconds": round(checkpoint["train_seconds"], 2),
                   "train_seconds_per_epoch": round(checkpoint["train_seconds"] / checkpoint["epochs_run"], 2),
                   **cost}
        if seed == seeds[0]:  # the first seed's run is the one the report draws
            _write_seed_outputs(dataset, model_name, data, scored)
        _log_to_run(run_log, scratch / f"seed{seed}", dataset, model_name, seed, checkpoint["mlflow_run_id"],
                    metrics, scored, learner, data, dataclasses.asdict(params.serve), evaluation_input)
        runs.append({"seed": seed, "mlflow_run_id": checkpoint["mlflow_run_id"], **metrics})
        log.info("%s/%s seed %d: test accuracy %.4f, loss %.4f", dataset, model_name, seed,
                 metrics["test_accuracy"], metrics["test_loss"])
        if beyond:
            log.info("%s/%s seed %d: accuracy %.4f on %d images from another source (%s)", dataset, model_name,
                     seed, beyond["other_accuracy"], beyond["other_size"], get_dataset(dataset).other_source.name)
    summary = summarize_seeds(runs)
    run_log.flush()  # a run MLflow could not take fails the stage before its metrics are written
    write_text(artifacts.seed_metrics_file(dataset, model_name), json.dumps(runs, indent=2) + "\n")
    write_text(artifacts.metrics_file(dataset, model_name), json.dumps(summary, indent=2) + "\n")
    if len(runs) > 1:
        log.info("%s/%s: test accuracy %.4f ± %.4f over %d seeds", dataset, model_name,
                 summary["test_accuracy"], summary["test_accuracy_std"], len(runs))
    return summary


def summarize_seeds(runs: list[dict]) -> dict:
    """The mean of each metric over the seeds' runs, plus the accuracy's spread and the seed count."""
    summary: dict = {}
    for key in runs[0]:
        if key in ("seed", "mlflow_run_id"):
            continue
        values = [run[key] for run in runs]
        mean = sum(values) / len(values)
        # Counts (params, epochs) stay integers where every seed agrees.
        summary[key] = values[0] if all(v == values[0] for v in values) else mean
    summary["test_accuracy_std"] = mean_and_spread([run["test_accuracy"] for run in runs])[1]
    if "other_accuracy" in runs[0]:
        summary["other_accuracy_std"] = mean_and_spread([run["other_accuracy"] for run in runs])[1]
    summary["seeds"] = len(runs)
    return summary


def validation_metrics(dataset: str, model_name: str, seed: int, checkpoint: dict) -> dict:
    """The seed's best epoch on the validation split, as training measured it: what register ranks by."""
    best = [row for row in read_curves(dataset, model_name, seed) if row["epoch"] == checkpoint["best_epoch"]]
    if not best:  # curves and checkpoint of different trainings: the loss would be another model's
        raise artifacts.ArtifactError(
            f"{artifacts.curves_file(dataset, model_name, seed)} has no row for the checkpoint's best epoch "
            f"{checkpoint['best_epoch']}: re-run `{artifacts.train_command(dataset, model_name)}`")
    return {"val_accuracy": float(checkpoint["best_val_accuracy"]), "val_loss": best[0]["val_loss"]}


def load_other_source(params: Params, dataset: str, side: int) -> tuple[np.ndarray, np.ndarray] | None:
    """The other source's images at the stored side, or None (logged) when there are none to score."""
    source = get_dataset(dataset).other_source
    loaded = source.load(params, side) if source is not None else None
    if loaded is None:
        setting = f" ({source.setting} in params.yaml names no folder of them)" if source and source.setting else ""
        log.info("%s: no images from another source to score%s", dataset, setting)
    return loaded


def score_other_source(learner, other: tuple[np.ndarray, np.ndarray], dataset: str, threshold: float | None,
                       batch_size: int) -> dict:
    """Accuracy on the other source's images. A binary model keeps the threshold it chose on
    validation (the other source chooses nothing); its ROC-AUC there tells how much of a drop is
    that threshold's and how much the scores' own, its balanced accuracy what the threshold gives
    whatever the other source's mix of classes."""
    images, labels = other
    logits = learner.logits(torch.from_numpy(images), batch_size)
    extra = {}
    if get_dataset(dataset).binary:
        probabilities = torch.sigmoid(logits[:, 0]).numpy()
        predicted = (probabilities >= threshold).astype(int)
        extra["other_roc_auc"] = binary.roc_auc(probabilities, labels)
        extra["other_balanced_accuracy"] = binary.balanced_accuracy(predicted, labels)
    else:
        predicted = logits.argmax(1).numpy()
    return {"other_accuracy": float((predicted == labels).mean()), "other_size": int(len(labels)), **extra}


def _stored_val_logits(checkpoint: dict, data: dict) -> torch.Tensor | None:
    """The validation logits training kept for the checkpoint's epoch, where they cover the whole
    validation split (no val_subset); None otherwise (an older checkpoint too)."""
    logits = checkpoint.get("best_val_logits")
    if logits is None or checkpoint.get("val_subset") is not None or len(logits) != len(data["val_y"]):
        return None
    return logits


def _score(learner, data: dict, dataset: str, batch_size: int, val_logits: torch.Tensor | None = None) -> dict:
    """Test metrics, predictions and (binary) curves of one trained model. `val_logits`: the
    validation split's, when training kept them (computed here otherwise)."""
    labels = data["test_y"]
    actual = labels.numpy()
    logits, latency_ms = timed_logits(learner, data["test_x"], batch_size)
    test_loss, test_accuracy = loss_and_accuracy(logits, labels)
    extra: dict = {}
    record = get_dataset(dataset)
    if record.binary:
        # Binary: the threshold comes from the validation split, then scores the test split.
        if val_logits is None:
            val_logits = learner.logits(data["val_x"], batch_size)
        threshold = binary.choose_threshold(torch.sigmoid(val_logits[:, 0]).numpy(), data["val_y"].numpy())
        probabilities = torch.sigmoid(logits[:, 0]).numpy()
        predicted = (probabilities >= threshold).astype(int)
        extra = binary.binary_metrics(probabilities, actual, threshold)
        test_accuracy = extra.pop("test_accuracy")
        curves = {"roc": binary.roc_points(probabilities, actual), "pr": binary.pr_points(probabilities, actual)}
    else:
        predicted = logits.argmax(1).numpy()
        probabilities, curves = None, {}
    class_names = list(record.class_names)
    matrix = scores.confusion_matrix(actual, predicted, len(class_names))
    report = scores.classification_report(matrix, class_names)
    metrics = {"test_accuracy": test_accuracy, "test_loss": test_loss,
               "test_macro_f1": report["macro avg"]["f1-score"], **extra}
    return {"metrics": metrics, "latency_ms": latency_ms, "actual": actual, "predicted": predicted,
            "probabilities": probabilities, "curves": curves, "class_names": class_names,
            "per_class": {"classes": {c: report[c] for c in class_names},
                          "confusion_matrix": matrix.tolist(),
                          "test_size": int(len(actual))}}


def _write_seed_outputs(dataset: str, model_name: str, data: dict, scored: dict) -> None:
    write_text(artifacts.per_class_file(dataset, model_name), json.dumps(scored["per_class"], indent=2) + "\n")
    _write_predictions(dataset, model_name, data, scored["actual"], scored["predicted"], scored["probabilities"])
    for kind, points in scored["curves"].items():
        write_csv(artifacts.curve_points_file(dataset, kind, model_name), points)


def _log_to_run(run_log: RunLog, folder: Path, dataset, model_name, seed, run_id, metrics, scored, learner, data,
                limits: dict, evaluation_input: dict) -> None:
    """The seed's test metrics, served model and figures, sent to the MLflow child for its
    training run; the files go into `folder`. The model first: the child logs it (its slowest
    part, 0.3-0.5 s) while this process draws the figures (BENCHMARKS.md, "Stage overheads")."""
    folder.mkdir()
    model = serving.model_request(learner.served_model(),
                                  serving.servable(learner, dataset, data["test_x"], scored["class_names"],
                                                   get_dataset(dataset).binary, metrics.get("threshold"), limits),
                                  folder)
    # The run already holds val_accuracy and val_loss per epoch (steps 1..n): a step-0 value would
    # read as one more epoch, to the UI and to resuming (reopen_training_run).
    logged = {k: float(v) for k, v in metrics.items() if k not in ("val_accuracy", "val_loss")}
    run_log.log_evaluation(run_id, logged, model, evaluation_input)
    per_class = folder / "per_class.json"
    per_class.write_text(json.dumps(scored["per_class"], indent=2) + "\n")
    files = [
        figures.confusion_matrix(np.array(scored["per_class"]["confusion_matrix"]), scored["class_names"],
                                 f"{model_name}: test confusion matrix", folder / "confusion_matrix.png"),
        figures.learning_curves(read_curves(dataset, model_name, seed), model_name, folder / "learning_curves.png"),
        per_class,
    ]
    if scored["curves"]:
        files.append(figures.roc_and_pr(scored["curves"]["roc"], scored["curves"]["pr"], metrics["test_roc_auc"],
                                        model_name, folder / "roc_pr.png"))
    run_log.log_files(run_id, [str(f) for f in files])


def _write_predictions(dataset, model_name, data, actual, predicted, probabilities) -> None:
    rows = [{"actual": a, "predicted": p} for a, p in zip(actual.tolist(), predicted.tolist())]
    if probabilities is not None:  # binary: which image, and how sure
        for row, name, prob in zip(rows, data.get("test_names", [""] * len(rows)), probabilities.tolist()):
            row.update(probability=round(prob, 6), file=name)
    write_csv(artifacts.predictions_file(dataset, model_name), rows)

