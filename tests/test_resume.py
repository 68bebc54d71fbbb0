"""Resumable training: a real `pipeline train` killed with SIGKILL and run again ends exactly
like an uninterrupted run; a resume file made with other settings is ignored. Only the killed run
is a process of its own (SIGKILL is the point); the others call the stage here."""
from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts, train
from pipeline.artifacts import load_prepared
from pipeline.config import load_params
from pipeline.engine import resume
from pipeline.engine.learners import build_learner
from tests.conftest import new_store, shrunk_params, shrunk_params_dict

MODEL, SEED, EPOCHS = "cnn1", 12, 6
RESUME = resume.resume_file("mnist", MODEL, SEED)
CHECKPOINT = artifacts.checkpoint_file("mnist", MODEL, SEED)


def _params_file(folder: Path, **train) -> Path:
    # One thread: the same float sums in every run, and an epoch (~0.5 s here) slow enough for
    # the test to kill the run mid-way. patience 0: all six epochs run, a predictable window.
    raw = shrunk_params_dict(models=[MODEL], epochs=EPOCHS, runtime={"threads": 1},
                             train={"mnist": {MODEL: {"patience": 0, **train}}})
    path = folder / f"params-{len(list(folder.glob('params-*')))}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    return path


def _train(params_file: Path, cwd: Path, env: dict, caplog: pytest.LogCaptureFixture | None = None) -> str:
    """The train stage in this process, as `_command` runs it; what it logged."""
    threads = torch.get_num_threads()  # the params' one thread, for this stage only
    with pytest.MonkeyPatch.context() as monkeypatch, (
            caplog.at_level(logging.INFO) if caplog else contextlib.nullcontext()):
        monkeypatch.chdir(cwd)
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        try:
            train.main(load_params(params_file), "mnist", MODEL)
        finally:
            torch.set_num_threads(threads)
    return caplog.text if caplog else ""


def _command(params_file: Path) -> list[str]:
    return [sys.executable, "-m", "pipeline", "--params", str(params_file), "train",
            "--dataset", "mnist", "--model", MODEL]


def _train_killed(params_file: Path, cwd: Path, env: dict) -> dict:
    """Starts the stage and SIGKILLs it once an epoch's resume file exists; returns that file."""
    (cwd / RESUME).unlink(missing_ok=True)
    (cwd / CHECKPOINT).unlink(missing_ok=True)  # as DVC deletes a stage's outputs before running it
    proc = subprocess.Popen(_command(params_file), cwd=cwd, env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        while not (cwd / RESUME).exists() and proc.poll() is None:
            time.sleep(0.01)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert not (cwd / CHECKPOINT).exists()
    state = torch.load(cwd / RESUME, weights_only=True)
    assert 1 <= state["progress"]["epoch"] < EPOCHS
    return state


def _outputs(cwd: Path) -> tuple[dict, list[str]]:
    checkpoint = torch.load(cwd / CHECKPOINT, weights_only=True)
    curves = (cwd / artifacts.curves_file("mnist", MODEL, SEED)).read_text().splitlines()
    # The last column is each epoch's wall time, the one thing a resumed run may not repeat.
    return checkpoint, [line.rsplit(",", 1)[0] for line in curves]


def _assert_same_training(checkpoint: dict, curves: list[str], reference: tuple[dict, list[str]]) -> None:
    ref_checkpoint, ref_curves = reference
    assert curves == ref_curves
    for key in ("best_epoch", "epochs_run", "best_val_accuracy"):
        assert checkpoint[key] == ref_checkpoint[key], key
    assert checkpoint["state_dict"].keys() == ref_checkpoint["state_dict"].keys()
    for name, tensor in ref_checkpoint["state_dict"].items():
        assert torch.equal(checkpoint["state_dict"][name], tensor), name


@pytest.fixture(scope="module")
def stage_env(prepared_workspace, tmp_path_factory, empty_store):
    folder = tmp_path_factory.mktemp("resume")
    env = {"MLFLOW_TRACKING_URI": new_store(empty_store, folder), "PIPELINE_GROUP": "pytest"}
    return prepared_workspace, folder, env


@pytest.fixture(scope="module")
def uninterrupted(stage_env):
    """The final checkpoint and curves of the run never interrupted."""
    cwd, folder, env = stage_env
    _train(_params_file(folder), cwd, env)
    return _outputs(cwd)


def test_killed_run_resumes_to_the_uninterrupted_result(stage_env, uninterrupted, caplog):
    cwd, folder, env = stage_env
    params_file = _params_file(folder)
    killed = _train_killed(params_file, cwd, env)
    done = killed["progress"]["epoch"]

    rerun = _train(params_file, cwd, env, caplog)
    assert f"resuming from {RESUME} after epoch {done}" in rerun
    checkpoint, curves = _outputs(cwd)
    _assert_same_training(checkpoint, curves, uninterrupted)
    assert not (cwd / RESUME).exists()  # deleted once the run finished

    # The killed run's MLflow run was continued, not a new one opened: each epoch logged once.
    run_id = killed["progress"]["run_id"]
    assert checkpoint["mlflow_run_id"] == run_id
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert client.get_run(run_id).info.status == "FINISHED"
    steps = [m.step for m in client.get_metric_history(run_id, "val_accuracy")]
    assert sorted(steps) == list(range(1, EPOCHS + 1))


def test_resume_file_of_other_settings_is_ignored(stage_env, uninterrupted, caplog):
    cwd, folder, env = stage_env
    stale = _train_killed(_params_file(folder, lr=0.001), cwd, env)  # cnn1 trains at 0.003

    rerun = _train(_params_file(folder), cwd, env, caplog)  # the uninterrupted run's settings
    assert f"ignoring resume file {RESUME}: made with other settings" in rerun
    checkpoint, curves = _outputs(cwd)
    _assert_same_training(checkpoint, curves, uninterrupted)
    assert checkpoint["mlflow_run_id"] != stale["progress"]["run_id"]
    assert not (cwd / RESUME).exists()


def test_numpy_learner_resumes_exactly(workspace):
    # The NumPy CNN's state: its weights and its own numpy Generator, through a real resume file
    # (torch.save, then torch.load with weights_only=True).
    cfg = shrunk_params(models=["numpy_cnn"], train={"mnist": {"numpy_cnn": {"batch_size": 16}}}
                        ).train_config("mnist", "numpy_cnn")
    data = load_prepared("mnist")
    x, y = data["train_x"][:600], data["train_y"][:600]
    cpu = torch.device("cpu")

    def learner():
        return build_learner("numpy_cnn", "mnist", cfg, cpu, seed=5)

    straight = learner()
    straight_epochs = [straight.train_epoch(x, y, torch.Generator(), "") for _ in range(3)]

    first = learner()
    epochs = [first.train_epoch(x, y, torch.Generator(), "")]
    saved = resume.ResumeFile("mnist", "numpy_cnn", 5, fingerprint="test")
    try:
        saved.save(first, torch.Generator(), {"epoch": 1})
        second = learner()  # a fresh process's learner: same seed, so the same initial state
        assert resume.ResumeFile("mnist", "numpy_cnn", 5, fingerprint="test").load(
            second, torch.Generator()) == {"epoch": 1}
    finally:
        saved.remove()
    epochs += [second.train_epoch(x, y, torch.Generator(), "") for _ in range(2)]

    assert epochs == straight_epochs
    for name, tensor in straight.state_dict().items():
        assert torch.equal(second.state_dict()[name], tensor), name
