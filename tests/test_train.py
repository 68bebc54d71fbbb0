"""Real tiny trainings on a real MNIST slice, tracked in a real MLflow store."""
from __future__ import annotations

import dataclasses
import json
import sys

import mlflow
import numpy as np
import pytest
import torch
import yaml

from pipeline import artifacts, cli, evaluate, train
from pipeline.artifacts import read_curves
from pipeline.data import mnist
from pipeline.engine import learners, optim
from pipeline.models import registry
from tests.conftest import SHARED_MNIST, shrunk_params, shrunk_params_dict


def _run(model: str, **overrides):
    params = shrunk_params(models=[model], **overrides)
    (checkpoint,) = train.main(params, "mnist", model)
    metrics = evaluate.main(params, "mnist", model)
    return checkpoint, metrics


def test_train_and_evaluate_log_one_complete_run(workspace, mlflow_uri):
    checkpoint, metrics = _run("cnn1", epochs=2)
    assert set(metrics) >= {"test_accuracy", "test_loss", "params", "best_epoch", "train_seconds"}
    assert json.loads(artifacts.metrics_file("mnist", "cnn1").read_text()) == metrics
    # 1,800 training images, 2 epochs: measured 0.8945 on CPU (deterministic); floor just below.
    assert metrics["test_accuracy"] > 0.892
    assert metrics["params"] == 54_410

    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(checkpoint["mlflow_run_id"])
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == "cnn1" and run.data.tags["pipeline_group"] == "pytest"
    assert run.data.tags["data_version"] and run.data.tags["git_commit"]
    assert run.data.params["optimizer"] == "adam" and run.data.params["batch_size"] == "128"
    assert "seeds" not in run.data.params and run.data.params["seed"]  # the run's own seed, not the list
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    history = client.get_metric_history(run.info.run_id, "val_accuracy")
    assert [m.step for m in history] == [1, 2]
    logged = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "per_class.json"} <= logged
    # The logged model (data only: pipeline.tracking.serving) loads back and takes tensors.
    model_uri = f"runs:/{run.info.run_id}/model"
    loaded = mlflow.pyfunc.load_model(model_uri)
    x = np.zeros((2, 1, 28, 28), dtype=np.float32)
    assert np.asarray(loaded.predict(x)).shape == (2, 10)
    info = mlflow.models.get_model_info(model_uri)
    assert info.signature is not None


@pytest.mark.parametrize("stage", ["train", "evaluate"])
def test_the_cli_looks_the_model_up_once_and_hands_its_spec_down(workspace, mlflow_uri, monkeypatch, stage):
    """The model name is resolved in one place: every module that holds the registry's lookup
    has it counted, with its caller (the real lookup still answers). Evaluate's written model is
    also loaded back as a server loads it, which reads the name from its model.json."""
    (workspace / "lookup.yaml").write_text(yaml.safe_dump(shrunk_params_dict(models=["logreg"])))
    if stage == "evaluate":  # a checkpoint to score
        assert cli.main(["--params", "lookup.yaml", "train", "--dataset", "mnist", "--model", "logreg"]) == 0
    looked_up, lookup = [], registry.get_model_spec

    def counted(name):
        looked_up.append((sys._getframe(1).f_globals["__name__"], name))
        return lookup(name)

    for module in [m for name, m in sys.modules.items() if name.startswith("pipeline.")]:
        if module is not registry and getattr(module, "get_model_spec", None) is lookup:
            monkeypatch.setattr(module, "get_model_spec", counted)
    assert cli.main(["--params", "lookup.yaml", stage, "--dataset", "mnist", "--model", "logreg"]) == 0
    served_check = [("pipeline.tracking.serving", "logreg")] if stage == "evaluate" else []
    assert looked_up == [("pipeline.cli", "logreg"), *served_check]


def test_same_params_give_identical_metrics_on_cpu(workspace, mlflow_uri):
    _, first = _run("lenet5", epochs=1)
    curves_first = read_curves("mnist", "lenet5", 12)
    _, second = _run("lenet5", epochs=1)
    drop = ("train_seconds", "train_seconds_per_epoch", "latency_ms_batch1", "latency_ms_batch256")
    assert {k: v for k, v in first.items() if k not in drop} == {k: v for k, v in second.items() if k not in drop}
    strip = lambda rows: [{k: v for k, v in r.items() if k != "seconds"} for r in rows]  # noqa: E731
    assert strip(curves_first) == strip(read_curves("mnist", "lenet5", 12))


def test_checkpoint_holds_the_best_validation_epoch(workspace, mlflow_uri):
    # SGD at lr 0.5 with momentum makes validation accuracy jump around, so the best epoch is
    # usually not the last: the saved weights must be the best epoch's, not the last's.
    params = shrunk_params(models=["logreg"], epochs=5,
                           train={"mnist": {"logreg": {"optimizer": "sgd", "lr": 0.5, "momentum": 0.9,
                                                       "schedule": "constant", "seeds": [12]}}})
    (checkpoint,) = train.main(params, "mnist", "logreg")
    curves = read_curves("mnist", "logreg", 12)
    best = max(curves, key=lambda r: r["val_accuracy"])
    assert checkpoint["best_epoch"] == best["epoch"]

    from pipeline.artifacts import load_prepared
    from pipeline.data.presets import InputPreset
    from pipeline.engine.inference import loss_and_accuracy, predict_logits
    from pipeline.models import create_model

    saved = torch.load(artifacts.checkpoint_file("mnist", "logreg", 12), weights_only=True)
    model = create_model("logreg")
    model.load_state_dict(saved["state_dict"])
    data = load_prepared("mnist")
    logits = predict_logits(model, data["val_x"], InputPreset("mnist", 28), 1000, torch.device("cpu"))
    _, val_accuracy = loss_and_accuracy(logits, data["val_y"])
    assert val_accuracy == pytest.approx(best["val_accuracy"], abs=1e-6)


def test_early_stopping_stops_after_patience(workspace, mlflow_uri):
    # A learning rate this small cannot improve validation accuracy for long: stops early.
    params = shrunk_params(models=["logreg"], epochs=30,
                           train={"mnist": {"logreg": {"lr": 1e-7, "patience": 2, "seeds": [12]}}})
    (checkpoint,) = train.main(params, "mnist", "logreg")
    assert checkpoint["epochs_run"] < 30
    assert checkpoint["epochs_run"] - checkpoint["best_epoch"] == 2


def test_each_seed_is_its_own_run_and_the_metrics_are_their_mean(workspace, mlflow_uri):
    params = shrunk_params(models=["logreg"], train={"mnist": {"logreg": {"seeds": [12, 13]}}})
    checkpoints = train.main(params, "mnist", "logreg")
    summary = evaluate.main(params, "mnist", "logreg")
    assert [c["seed"] for c in checkpoints] == [12, 13]
    assert all(artifacts.checkpoint_file("mnist", "logreg", s).exists() for s in (12, 13))
    # Different seeds: different initial weights and shuffling, so different weights.
    assert not torch.equal(checkpoints[0]["state_dict"]["1.weight"], checkpoints[1]["state_dict"]["1.weight"])

    runs = json.loads(artifacts.seed_metrics_file("mnist", "logreg").read_text())
    assert [r["seed"] for r in runs] == [12, 13]
    accuracies = [r["test_accuracy"] for r in runs]
    assert summary["test_accuracy"] == pytest.approx(sum(accuracies) / 2)
    assert summary["test_accuracy_std"] == pytest.approx(abs(accuracies[0] - accuracies[1]) / 2 ** 0.5)
    assert summary["seeds"] == 2 and summary["params"] == 7_850

    client = mlflow.MlflowClient(mlflow_uri)
    for run, checkpoint in zip(runs, checkpoints):
        assert run["mlflow_run_id"] == checkpoint["mlflow_run_id"]
        logged = client.get_run(run["mlflow_run_id"])
        assert logged.data.tags["seed"] == str(run["seed"]) and logged.data.params["seed"] == str(run["seed"])
        assert logged.data.metrics["test_accuracy"] == pytest.approx(run["test_accuracy"])

    # One seed fewer: the dropped seed's files go, so nothing stale is read as current.
    params = shrunk_params(models=["logreg"], train={"mnist": {"logreg": {"seeds": [12]}}})
    train.main(params, "mnist", "logreg")
    assert not artifacts.checkpoint_file("mnist", "logreg", 13).exists()
    assert not artifacts.curves_file("mnist", "logreg", 13).exists()


@pytest.mark.parametrize("budget", [learners.PREPARED_SET_BYTES, 0])
def test_an_epoch_reports_the_loss_and_accuracy_of_its_batches(shared_mnist, budget):
    """The set normalised once (budget) or per batch (0): the same training, and the epoch's
    loss and accuracy are those of a plain loop over the same batches (last one partial)."""
    images, labels = (t[:1000] for t in mnist.load_split(shared_mnist, "train"))
    cfg = shrunk_params(models=["lenet5"]).train_config("mnist", "lenet5")
    # A plain loop's settings: no augmentation, no schedule.
    cfg = dataclasses.replace(cfg, batch_size=64, augment=False, schedule="constant")
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    learner = learners.build_learner("lenet5", "mnist", cfg, cpu, 0)
    learner.prepared_budget = budget
    torch.manual_seed(0)
    reference = learners.build_learner("lenet5", "mnist", cfg, cpu, 0)  # same initial weights

    loss, accuracy = learner.train_epoch(images, labels, torch.Generator().manual_seed(1), "test")
    assert (learner.prepared_inputs(images) is not None) == (budget > 0)

    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(1))
    total, correct = 0.0, 0
    for start in range(0, len(order), 64):
        idx = order[start:start + 64]
        logits = reference.model(reference.preset(images[idx]))
        batch_loss = torch.nn.functional.cross_entropy(logits, labels[idx])
        reference.optimizer.zero_grad()
        batch_loss.backward()
        reference.optimizer.step()
        total += batch_loss.item() * len(idx)
        correct += (logits.argmax(1) == labels[idx]).sum().item()
    assert loss == pytest.approx(total / len(images), rel=1e-5)
    assert accuracy == correct / len(images)
    for name, weight in reference.state_dict().items():
        torch.testing.assert_close(learner.state_dict()[name], weight, rtol=0, atol=0)


def test_train_never_reads_the_test_split(workspace, mlflow_uri):
    """Training with the test split removed from the prepared file gives the same weights and
    curves: no recipe, early stop or best epoch can depend on it."""
    with_test, _ = _run("cnn1", epochs=2)
    prepared = artifacts.prepared_file("mnist")
    data = torch.load(prepared, weights_only=True)
    assert {"test_x", "test_y"} <= set(data)
    torch.save({k: v for k, v in data.items() if not k.startswith("test_")}, prepared)
    try:
        params = shrunk_params(models=["cnn1"], epochs=2)
        (without_test,) = train.main(params, "mnist", "cnn1")
    finally:
        torch.save(data, prepared)
    assert without_test["best_epoch"] == with_test["best_epoch"]
    assert without_test["best_val_accuracy"] == with_test["best_val_accuracy"]
    for key, tensor in with_test["state_dict"].items():
        assert torch.equal(tensor, without_test["state_dict"][key]), key


def test_warmup_cosine_rises_linearly_then_anneals_to_zero():
    factor = optim._warmup_cosine
    assert [factor(s, 4, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert factor(4, 4, 12) == 1.0
    assert factor(8, 4, 12) == pytest.approx(0.5)
    assert factor(12, 4, 12) == pytest.approx(0.0)


def test_label_smoothing_moves_targets_towards_uniform():
    from pipeline.engine.inference import loss_fn

    logits = torch.tensor([[2.0, 0.0, -1.0]])
    logp = torch.log_softmax(logits, 1)[0]
    expected = -(0.9 * logp[0] + 0.1 * logp.mean())
    assert loss_fn(logits, torch.tensor([0]), 0.1).item() == pytest.approx(expected.item(), rel=1e-6)
    one = torch.tensor([[1.5]])
    target = 1 * 0.8 + 0.5 * 0.2  # a positive smoothed by 0.2
    bce = -(target * torch.nn.functional.logsigmoid(one) + (1 - target) * torch.nn.functional.logsigmoid(-one))
    assert loss_fn(one, torch.tensor([1]), 0.2).item() == pytest.approx(bce.item(), rel=1e-6)


def _learner(model: str, **changes):
    from pipeline.config import TrainConfig

    cfg = TrainConfig(**{"optimizer": "sgd", "lr": 0.1, "batch_size": 64, "epochs": 1, **changes})
    torch.manual_seed(0)
    return learners.build_learner(model, "mnist", cfg, torch.device("cpu"), 0)


def _one_step(learner, n: int = 64):
    images, labels = mnist.load_split(SHARED_MNIST, "train")
    learner.train_epoch(images[:n], labels[:n], torch.Generator().manual_seed(0), desc="step")


def test_gradient_clipping_bounds_the_sgd_step():
    before = _learner("cnn1", grad_clip=0.01)
    start = torch.cat([p.detach().flatten().clone() for p in before.model.parameters()])
    _one_step(before)
    step = torch.cat([p.detach().flatten() for p in before.model.parameters()]) - start
    assert step.norm().item() <= 0.1 * 0.01 * 1.0001  # lr x max norm
    free = _learner("cnn1")
    start = torch.cat([p.detach().flatten().clone() for p in free.model.parameters()])
    _one_step(free)
    assert (torch.cat([p.detach().flatten() for p in free.model.parameters()]) - start).norm() > 10 * step.norm()


def test_weight_average_is_what_is_validated_and_checkpointed():
    learner = _learner("cnn2", ema_decay=0.5)
    _one_step(learner, 256)  # 4 steps
    raw = {k: v.clone() for k, v in learner.model.state_dict().items()}
    average = learner.state_dict()
    assert learner.average.steps == 4
    assert set(average) == set(raw)
    assert any(not torch.equal(average[k], raw[k]) for k in raw if raw[k].is_floating_point())
    images, _ = mnist.load_split(SHARED_MNIST, "t10k")
    from pipeline.engine.inference import predict_logits

    expected = predict_logits(learner.average.module, images[:50], learner.preset, 50, torch.device("cpu"))
    assert torch.equal(learner.logits(images[:50], 50), expected)


def test_a_diverging_run_stops_at_the_first_non_finite_loss_naming_the_setting():
    learner = _learner("cnn1")
    with torch.no_grad():  # weights a diverged step would leave: the next loss is not finite
        next(learner.model.parameters()).fill_(float("inf"))
    with pytest.raises(learners.TrainingDiverged, match=r"train\.mnist\.cnn1: the training loss became nan at "
                                                        r"step 1 .*lower train\.mnist\.cnn1\.lr.*grad_clip"):
        _one_step(learner)
