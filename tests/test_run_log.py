"""The train and evaluate stages' MLflow child (pipeline.tracking.run_log): real `pipeline train` and
`pipeline evaluate` processes, a real sqlite store, real signals."""
from __future__ import annotations

import json
import signal
import subprocess
import sys

import mlflow
import numpy as np
import pytest
import torch
import yaml

from pipeline import artifacts, train
from pipeline.config import load_params
from pipeline.engine import resume
from pipeline.tracking import serving
from pipeline.tracking.run_log import RunLog
from pipeline.tracking.runs import file_md5
from pipeline.tracking.store import TrackingError
from tests.conftest import ctrl_c_once, shrunk_params, shrunk_params_dict

MODEL, SEED = "cnn1", 12


def _params_file(folder, epochs: int) -> str:
    raw = shrunk_params_dict(models=[MODEL], epochs=epochs, runtime={"threads": 1},
                             train={"mnist": {MODEL: {"patience": 0}}})
    path = folder / "params.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return str(path)


def test_the_training_process_never_imports_mlflow_and_its_child_logs_the_run(workspace, mlflow_uri, tmp_path):
    params = _params_file(tmp_path, epochs=2)
    code = ("import sys; from pipeline import cli; code = cli.main(['--params', sys.argv[1], 'train', '--dataset', "
            "'mnist', '--model', sys.argv[2]]); assert 'mlflow' not in sys.modules, 'mlflow imported'; sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, params, MODEL], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

    checkpoint = torch.load(artifacts.checkpoint_file("mnist", MODEL, SEED), weights_only=True)
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(checkpoint["mlflow_run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == f"{MODEL}-seed{SEED}"
    # The UI's Source column and the experiment's kind: the stage, and a model-training experiment.
    assert run.data.tags["mlflow.source.name"] == f"pipeline train --dataset mnist --model {MODEL}"
    experiment = client.get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    # Its data: the prepared file, under the digest DVC gives it.
    (data,) = run.inputs.dataset_inputs
    assert data.dataset.name == "mnist-prepared"
    assert data.dataset.digest == file_md5(artifacts.prepared_file("mnist"))
    assert {t.key: t.value for t in data.tags}["mlflow.data.context"] == "training"
    assert json.loads(data.dataset.profile) == {"train": 1800, "val": 200}  # the test split never reaches training
    assert data.dataset.source_type == "local" and "prepared.pt" in data.dataset.source
    assert run.data.params["batch_size"] == "128" and run.data.params["threads"] == "1"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1, 2]
    assert run.data.metrics["best_epoch"] == checkpoint["best_epoch"]
    assert run.data.metrics["train_seconds"] == pytest.approx(checkpoint["train_seconds"])


def test_the_evaluating_process_never_imports_mlflow_and_its_child_logs_model_and_figures(
        workspace, mlflow_uri, tmp_path, monkeypatch):
    params = _params_file(tmp_path, epochs=1)
    train.main(load_params(params), "mnist", MODEL)
    metrics_file = artifacts.metrics_file("mnist", MODEL)
    metrics_file.unlink(missing_ok=True)
    code = ("import sys; from pipeline import cli; code = cli.main(['--params', sys.argv[1], 'evaluate', '--dataset', "
            "'mnist', '--model', sys.argv[2]]); assert 'mlflow' not in sys.modules, 'mlflow imported'; sys.exit(code)")
    proc = subprocess.run([sys.executable, "-c", code, params, MODEL], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    metrics = json.loads(metrics_file.read_text())

    run_id = json.loads(artifacts.seed_metrics_file("mnist", MODEL).read_text())[0]["mlflow_run_id"]
    client = mlflow.MlflowClient(mlflow_uri)
    run = client.get_run(run_id)
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert {a.path for a in client.list_artifacts(run_id)} >= {"confusion_matrix.png", "learning_curves.png",
                                                               "per_class.json"}
    contexts = {{t.key: t.value for t in d.tags}["mlflow.data.context"] for d in run.inputs.dataset_inputs}
    assert contexts == {"training", "evaluation"}
    served = serving.load_logged(f"runs:/{run_id}/model")  # the child logged what the stage wrote
    assert len(served.predict({serving.IMAGE_COLUMN: [serving.encode_png(np.full((28, 28), 255, np.uint8))]})) == 1

    # A store that lacks the training run: the stage fails naming it, and writes no metrics file.
    metrics_file.unlink()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'other.db'}")
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--params", params, "evaluate", "--dataset", "mnist",
                           "--model", MODEL], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert run_id in proc.stderr and not metrics_file.exists()


def test_ctrl_c_ends_the_run_as_failed(workspace, mlflow_uri, tmp_path):
    # Ctrl-C signals the whole process group, the child too: it must outlive the stage's
    # KeyboardInterrupt to end the run.
    resume_file = workspace / resume.resume_file("mnist", MODEL, SEED)
    resume_file.unlink(missing_ok=True)
    code, stderr = ctrl_c_once([sys.executable, "-m", "pipeline", "--params", _params_file(tmp_path, epochs=50),
                                "train", "--dataset", "mnist", "--model", MODEL], resume_file, timeout_s=60)
    assert code == 130 and "Traceback" not in stderr, stderr
    run_id = torch.load(resume_file, weights_only=True)["progress"]["run_id"]
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.status == "FAILED"


def test_a_metric_mlflow_refuses_is_told_at_the_flush_and_fails_the_run(workspace, mlflow_uri):
    with RunLog("mnist") as run_log:
        run_id = run_log.start(MODEL, {"lr": 0.1}, {})
        run_log.log({"val_accuracy": 0.5}, 1)
        run_log.log({"../escape": 1.0}, 2)  # MLflow refuses a name that leaves its folder
        with pytest.raises(TrackingError, match=r"cannot log the metrics of step 2 in sqlite:///.*Invalid"):
            run_log.flush()
        run_log.flush()  # told once
        run_log.end()
    client = mlflow.MlflowClient(mlflow_uri)
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1]
    assert client.get_run(run_id).info.status == "FINISHED"


def test_a_killed_stage_leaves_its_run_killed_and_the_logs_it_sent(workspace, mlflow_uri):
    run_log = RunLog("mnist")
    run_id = run_log.start(MODEL, {}, {})
    run_log.log({"val_accuracy": 0.5}, 1)
    run_log.process.stdin.close()  # what the stage's death does to the pipe
    assert run_log.process.wait(timeout=30) == 0
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == "KILLED"
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1]


def test_resuming_a_run_the_store_lacks_says_what_to_do(workspace, mlflow_uri):
    missing = "0" * 32
    with RunLog("mnist") as run_log:
        with pytest.raises(TrackingError, match=rf"resume file's MLflow run {missing} cannot be continued: "
                                                rf".*sqlite:///.*delete models/.resume to train from epoch 1"):
            resume.reopen_run(run_log, missing)


def test_an_unused_child_is_stopped_not_waited_for(workspace, mlflow_uri):
    # Invalid params, or a launching process: nothing asked, so nothing to wait 2 s of imports for.
    with RunLog("mnist") as run_log:
        pass
    assert run_log.process.returncode == -signal.SIGTERM


def test_system_metrics_are_sampled_into_the_run_only_when_switched_on(workspace, mlflow_uri, monkeypatch):
    # MLflow logs a sample once its interval has passed: a short one gives a 2-epoch run several.
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    # params.yaml decides, whatever MLflow's own switch says.
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "true")
    assert shrunk_params().runtime.system_metrics is False  # the default in params.yaml
    client = mlflow.MlflowClient(mlflow_uri)
    runs = {}
    for on in (True, False):
        params = shrunk_params(models=[MODEL], epochs=2, runtime={"system_metrics": on, "threads": 1},
                               train={"mnist": {MODEL: {"patience": 0}}})
        (checkpoint,) = train.main(params, "mnist", MODEL)
        runs[on] = client.get_run(checkpoint["mlflow_run_id"])

    sampled = runs[True].data.metrics
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes",
            "system/system_memory_usage_percentage"} <= set(sampled), sorted(sampled)
    assert 0 <= sampled["system/cpu_utilization_percentage"] <= 100
    assert 0 < sampled["system/system_memory_usage_percentage"] < 100
    steps = [m.step for m in client.get_metric_history(runs[True].info.run_id, "system/cpu_utilization_percentage")]
    assert len(steps) >= 2 and steps == list(range(len(steps))), steps
    assert [m.step for m in client.get_metric_history(runs[True].info.run_id, "val_accuracy")] == [1, 2]
    assert [k for k in runs[False].data.metrics if k.startswith("system/")] == []
    assert {r.info.status for r in runs.values()} == {"FINISHED"}
