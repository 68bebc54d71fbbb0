"""Stage `evaluate`: score the best checkpoint on the official test set.

    pipeline evaluate --dataset mnist --model lenet5
    # writes metrics/mnist/lenet5.json, metrics/mnist/per_class/lenet5.json,
    #        metrics/mnist/predictions/lenet5.csv; logs them to the model's MLflow run
"""
from __future__ import annotations

import dataclasses
import json
import logging
import tempfile
from pathlib import Path

import torch
from sklearn.metrics import classification_report, confusion_matrix

from pipeline import binary, figures, paths, runtime, tracking
from pipeline.atomic import write_csv, write_text
from pipeline.config import Params
from pipeline.cost import cost_metrics
from pipeline.inference import loss_and_accuracy
from pipeline.learners import build_learner
from pipeline.prepare import load_prepared
from pipeline.train import read_curves

log = logging.getLogger(__name__)


def load_checkpoint(dataset: str, model_name: str) -> dict:
    path = paths.checkpoint_file(dataset, model_name)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `pipeline train --dataset {dataset} --model {model_name}`")
    return torch.load(path, map_location="cpu", weights_only=True)


CLASS_NAMES = {"crack": ["negative", "positive"]}


def main(params: Params, dataset: str, model_name: str) -> dict:
    cfg = params.train_config(dataset, model_name)  # fails early on a model not in params.yaml
    device = runtime.setup(params.runtime)
    checkpoint = load_checkpoint(dataset, model_name)
    # The weights come from the checkpoint: no need for (or download of) ImageNet's.
    cfg = dataclasses.replace(cfg, pretrained=False)
    learner = build_learner(model_name, dataset, cfg, device, params.runtime.seed, params.runtime.cuda)
    learner.load_state_dict(checkpoint["state_dict"])
    data = load_prepared(dataset)
    labels = data["test_y"]
    actual = labels.numpy()

    logits = learner.logits(data["test_x"], params.runtime.eval_batch_size)
    test_loss, test_accuracy = loss_and_accuracy(logits, labels)
    extra: dict = {}
    if logits.shape[1] == 1:
        # Binary: the threshold comes from the validation split, then scores the test split.
        val_logits = learner.logits(data["val_x"], params.runtime.eval_batch_size)
        threshold = binary.choose_threshold(torch.sigmoid(val_logits[:, 0]).numpy(), data["val_y"].numpy())
        probabilities = torch.sigmoid(logits[:, 0]).numpy()
        predicted = (probabilities >= threshold).astype(int)
        extra = binary.binary_metrics(probabilities, actual, threshold)
        test_accuracy = extra.pop("test_accuracy")
        curves = {"roc": binary.roc_points(probabilities, actual), "pr": binary.pr_points(probabilities, actual)}
    else:
        predicted = logits.argmax(1).numpy()
        probabilities, curves = None, {}
    class_names = CLASS_NAMES.get(dataset) or [str(c) for c in range(logits.shape[1])]
    report = classification_report(actual, predicted, labels=range(len(class_names)),
                                   target_names=class_names, output_dict=True, zero_division=0)
    matrix = confusion_matrix(actual, predicted, labels=range(len(class_names)))

    metrics = {
        "test_accuracy": test_accuracy,
        "test_loss": test_loss,
        "test_macro_f1": report["macro avg"]["f1-score"],
        **extra,
        "params": learner.num_params,
        "best_epoch": checkpoint["best_epoch"],
        "epochs_run": checkpoint["epochs_run"],
        "train_seconds": round(checkpoint["train_seconds"], 2),
        "train_seconds_per_epoch": round(checkpoint["train_seconds"] / checkpoint["epochs_run"], 2),
        **cost_metrics(learner, data["test_x"]),
    }
    write_text(paths.metrics_file(dataset, model_name), json.dumps(metrics, indent=2) + "\n")
    per_class = {"classes": {c: report[c] for c in class_names},
                 "confusion_matrix": matrix.tolist(), "test_size": int(len(actual))}
    write_text(paths.per_class_file(dataset, model_name), json.dumps(per_class, indent=2) + "\n")
    _write_predictions(dataset, model_name, data, actual, predicted, probabilities)
    for kind, points in curves.items():
        write_csv(paths.curve_points_file(dataset, kind, model_name), points)

    with tempfile.TemporaryDirectory() as tmp:
        artifacts = [
            figures.confusion_matrix(matrix, class_names, f"{model_name}: test confusion matrix",
                                     Path(tmp) / "confusion_matrix.png"),
            figures.learning_curves(read_curves(dataset, model_name), model_name,
                                    Path(tmp) / "learning_curves.png"),
            paths.per_class_file(dataset, model_name),
        ]
        if curves:
            artifacts.append(figures.roc_and_pr(curves["roc"], curves["pr"], metrics["test_roc_auc"],
                                                model_name, Path(tmp) / "roc_pr.png"))
        tracking.log_evaluation(checkpoint["mlflow_run_id"], {k: float(v) for k, v in metrics.items()},
                                artifacts, learner.served_model(), learner.example_input(data["test_x"][:4]))
    log.info("%s/%s: test accuracy %.4f, loss %.4f", dataset, model_name, test_accuracy, test_loss)
    return metrics


def _write_predictions(dataset, model_name, data, actual, predicted, probabilities) -> None:
    rows = [{"actual": a, "predicted": p} for a, p in zip(actual.tolist(), predicted.tolist())]
    if probabilities is not None:  # binary: which image, and how sure
        for row, name, prob in zip(rows, data.get("test_names", [""] * len(rows)), probabilities.tolist()):
            row.update(probability=round(prob, 6), file=name)
    write_csv(paths.predictions_file(dataset, model_name), rows)

