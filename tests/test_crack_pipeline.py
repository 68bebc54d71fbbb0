"""Crack models through the real train and evaluate stages, on 400 real images at 32x32."""
from __future__ import annotations

import json
import re

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts, cli, evaluate, train
from pipeline.artifacts import load_prepared, read_curves
from pipeline.engine.learners import build_learner
from tests.conftest import shrunk_params, shrunk_params_dict


def test_crack_cnn_trains_and_reports_binary_metrics(workspace, mlflow_uri):
    params = shrunk_params(crack_models=["crack_cnn"], epochs=3)
    (checkpoint,) = train.main(params, "crack", "crack_cnn")
    metrics = evaluate.main(params, "crack", "crack_cnn")
    assert json.loads(artifacts.metrics_file("crack", "crack_cnn").read_text()) == metrics
    assert {"test_accuracy", "test_loss", "params", "best_epoch", "train_seconds", "test_precision",
            "test_recall", "test_f1", "test_roc_auc", "threshold"} <= set(metrics)
    assert metrics["params"] == 24_569
    # About 240 training images, 3 epochs: measured accuracy 0.925 (74 of 80 test images) and
    # ROC-AUC 0.9894 (CPU, deterministic); floors just below.
    assert metrics["test_accuracy"] >= 0.92 and metrics["test_roc_auc"] >= 0.985

    # The threshold is the validation split's best, and test accuracy is scored at it.
    data = load_prepared("crack")
    learner = build_learner("crack_cnn", "crack", params.train_config("crack", "crack_cnn"),
                            torch.device("cpu"), params.seeds[0])
    learner.load_state_dict(checkpoint["state_dict"])
    from pipeline.engine.binary import choose_threshold

    val_logits = learner.logits(data["val_x"], params.runtime.eval_batch_size)
    # Kept by training for the best epoch, so evaluate chose the threshold without a second pass.
    # (equal but for float rounding: 1.2e-7 measured, a fresh model against the trained one)
    torch.testing.assert_close(checkpoint["best_val_logits"], val_logits, atol=1e-6, rtol=0)
    val_p = torch.sigmoid(val_logits[:, 0]).numpy()
    assert metrics["threshold"] == pytest.approx(choose_threshold(val_p, data["val_y"].numpy()))
    test_p = torch.sigmoid(learner.logits(data["test_x"], 1000)[:, 0]).numpy()
    predicted = test_p >= metrics["threshold"]
    assert metrics["test_accuracy"] == pytest.approx((predicted == data["test_y"].numpy()).mean())

    for kind, columns in (("roc", "fpr,tpr"), ("pr", "recall,precision")):
        assert artifacts.curve_points_file("crack", kind, "crack_cnn").read_text().startswith(columns)
    header = artifacts.predictions_file("crack", "crack_cnn").read_text().splitlines()[0]
    assert header == "actual,predicted,probability,file"

    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(checkpoint["mlflow_run_id"])
    assert run.data.tags["dataset"] == "crack" and run.data.tags["model"] == "crack_cnn"
    assert client.get_experiment(run.info.experiment_id).name == "crack"
    assert run.data.metrics["test_roc_auc"] == pytest.approx(metrics["test_roc_auc"])
    assert {"roc_pr.png", "confusion_matrix.png", "learning_curves.png"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


def test_progressive_trains_the_head_then_everything(workspace, mlflow_uri):
    params = shrunk_params(crack_models=["resnet18_progressive"], epochs=2,
                           train={"crack": {"resnet18_progressive": {"head_epochs": 1}}})
    cfg = params.train_config("crack", "resnet18_progressive")
    learner = build_learner("resnet18_progressive", "crack", cfg, torch.device("cpu"), 0)
    learner.begin_epoch(1)
    trainable = {n for n, p in learner.model.named_parameters() if p.requires_grad}
    assert trainable == {"fc.weight", "fc.bias"}
    assert learner.optimizer.param_groups[0]["lr"] == cfg.lr
    learner.begin_epoch(2)
    assert all(p.requires_grad for p in learner.model.parameters())
    assert learner.optimizer.param_groups[0]["lr"] == cfg.unfrozen_lr

    (checkpoint,) = train.main(params, "crack", "resnet18_progressive")
    run = mlflow.MlflowClient(mlflow_uri).get_run(checkpoint["mlflow_run_id"])
    assert run.data.params["pretrained"] == "False" and run.data.params["head_epochs"] == "1"
    assert [r["epoch"] for r in read_curves("crack", "resnet18_progressive", 12)] == [1, 2]


def test_transfer_settings_are_checked_before_training(workspace, mlflow_uri, capsys):
    bad = {
        "crack_cnn": ({"pretrained": True}, r"train\.crack\.crack_cnn\.pretrained"),
        "resnet18_progressive": ({"unfrozen_lr": None}, r"train\.crack\.resnet18_progressive: .*unfrozen_lr"),
    }
    for model, (override, message) in bad.items():
        raw = shrunk_params_dict(crack_models=[model], train={"crack": {model: override}})
        (workspace / "bad.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        assert cli.main(["--params", "bad.yaml", "train", "--dataset", "crack", "--model", model]) == 2
        assert re.search(message, capsys.readouterr().err)
    client = mlflow.MlflowClient(mlflow_uri)
    assert not client.search_runs([e.experiment_id for e in client.search_experiments()])
