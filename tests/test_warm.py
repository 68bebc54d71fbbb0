"""Warm starts (pipeline/warm/): a stage, or its MLflow child, forked from a template is the
process a new interpreter would have been: same outputs, same exit, killed with its caller."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts
from pipeline.engine import resume
from pipeline.warm import client as warm_client
from pipeline.warm import template as warm_template
from tests.conftest import REPO, STARTING_ENV, ctrl_c_once, new_store, shrunk_params_dict

MODEL, SEED = "logreg", 12
# What differs between any two runs of a stage, cold or warm: timings and the MLflow run.
VARYING = {"train_seconds", "train_seconds_per_epoch", "latency_ms_batch1", "latency_ms_batch256",
           "mlflow_run_id"}


@pytest.fixture(scope="module")
def templates(tmp_path_factory):
    """Templates of this file's own, so that their logs list this file's forks only. Started as
    CI starts them, from an environment without what importing torch sets in this process's."""
    root = tmp_path_factory.mktemp("templates")
    warm_template.start(root, parent=os.getpid(), env=STARTING_ENV)
    yield root
    warm_template.stop(root)


@pytest.fixture(scope="module")
def ws(tmp_path_factory, templates, shared_mnist, empty_store) -> tuple[Path, dict]:
    """A workspace where download and prepare ran (warm), logreg for 2 epochs on 2,000 images,
    and the environment that sends its stages to `templates`."""
    root = tmp_path_factory.mktemp("ws")
    raw = shrunk_params_dict(models=[MODEL], crack_models=[], epochs=2)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    long = shrunk_params_dict(models=[MODEL], crack_models=[], epochs=400, runtime={"threads": 1},
                              train={"mnist": {MODEL: {"patience": 0}}})
    (root / "long.yaml").write_text(yaml.safe_dump(long, sort_keys=False))  # ~1 min: to be stopped
    env = {**os.environ, warm_client.ENV: str(templates), "MLFLOW_TRACKING_URI": new_store(empty_store, root),
           "PIPELINE_GROUP": "pytest-warm"}
    for stage in ("download", "prepare"):
        _pipeline(root, env, stage, "--dataset", "mnist")
    return root, env


def _pipeline(root: Path, env: dict, *args: str, code: int = 0) -> subprocess.CompletedProcess:
    proc = subprocess.run(["pipeline", *args], cwd=root, env=env, capture_output=True, text=True)
    assert proc.returncode == code, proc.stderr
    return proc


def _forks(templates: Path, kind: str) -> list[str]:
    """The template's log: one line per process it forked."""
    return [line for line in (templates / f"{kind}.log").read_text().splitlines() if " pid " in line]


def _outputs(root: Path) -> tuple[dict, dict, list[str]]:
    checkpoint = torch.load(root / artifacts.checkpoint_file("mnist", MODEL, SEED), weights_only=True)
    metrics = json.loads((root / artifacts.metrics_file("mnist", MODEL)).read_text())
    curves = (root / artifacts.curves_file("mnist", MODEL, SEED)).read_text().splitlines()
    return (checkpoint["state_dict"], {k: v for k, v in metrics.items() if k not in VARYING},
            [line.rsplit(",", 1)[0] for line in curves])  # the last column: each epoch's seconds


def test_a_forked_stage_and_mlflow_child_write_what_new_interpreters_write(ws, templates):
    root, env = ws
    cold_env = {k: v for k, v in env.items() if k != warm_client.ENV}
    for stage in ("train", "evaluate"):
        _pipeline(root, cold_env, stage, "--dataset", "mnist", "--model", MODEL)
    cold = _outputs(root)
    forked = {kind: len(_forks(templates, kind)) for kind in warm_template.PRELOAD}
    for stage in ("train", "evaluate"):
        _pipeline(root, env, stage, "--dataset", "mnist", "--model", MODEL)
    warm_weights, warm_metrics, warm_curves = _outputs(root)

    assert warm_weights.keys() == cold[0].keys()
    assert all(torch.equal(warm_weights[k], cold[0][k]) for k in cold[0])
    assert (warm_metrics, warm_curves) == cold[1:]
    stages = _forks(templates, "stage")[forked["stage"]:]
    assert [line.split(": ", 1)[1].split(" (in ")[0].split(" ", 1)[1] for line in stages] == [
        f"{stage} --dataset mnist --model {MODEL}" for stage in ("train", "evaluate")]
    children = _forks(templates, "mlflow")[forked["mlflow"]:]
    assert len(children) == 2 and all("python -m pipeline.tracking.run_log mnist" in c for c in children)
    # Both trainings' runs, the warm child's as the cold one's: finished, with the same test accuracy.
    runs = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).search_runs(
        [mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"]).get_experiment_by_name("mnist").experiment_id])
    assert [r.info.status for r in runs] == ["FINISHED", "FINISHED"]
    assert len({r.data.metrics["test_accuracy"] for r in runs}) == 1


def _pid_of_fork(templates: Path, before: int, timeout_s: float = 60) -> int:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        lines = _forks(templates, "stage")[before:]
        if lines:
            return int(lines[0].split(" pid ")[1].split(":")[0])
        time.sleep(0.05)
    raise AssertionError("no fork started")


def _ends(pid: int, timeout_s: float = 10) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return True
        time.sleep(0.05)
    return False


def test_a_stage_killed_takes_its_fork_with_it(ws, templates):
    root, env = ws
    before = len(_forks(templates, "stage"))
    proc = subprocess.Popen(["pipeline", "--params", "long.yaml", "train", "--dataset", "mnist", "--model", MODEL],
                            cwd=root, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    fork = _pid_of_fork(templates, before)
    try:
        while not (root / resume.resume_file("mnist", MODEL, SEED)).exists():  # training, its run open
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert proc.returncode == -signal.SIGKILL
    assert _ends(fork), "the fork outlived the killed stage"
    # As a killed cold stage's: its MLflow child, left its stdin's end, marks the run KILLED.
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id],
                                  "params.epochs = '400'")
        if runs and runs[0].info.status == "KILLED":
            break
        time.sleep(0.1)
    assert [r.info.status for r in runs] == ["KILLED"]


def test_ctrl_c_reaches_the_fork_and_its_exit_comes_back(ws, templates):
    root, env = ws
    resume_file = root / resume.resume_file("mnist", MODEL, SEED)
    resume_file.unlink(missing_ok=True)
    before = len(_forks(templates, "stage"))
    code, err = ctrl_c_once(["pipeline", "--params", "long.yaml", "train", "--dataset", "mnist", "--model", MODEL],
                            resume_file, cwd=root, env=env)
    assert len(_forks(templates, "stage")) == before + 1  # it ran warm
    assert code == 130, err
    assert "pipeline train: interrupted: the seed in training wrote no checkpoint" in err


def test_an_error_comes_back_and_a_process_no_template_fits_starts_cold(ws, templates):
    root, env = ws
    before = len(_forks(templates, "stage"))
    failed = _pipeline(root, env, "train", "--dataset", "mnist", "--model", "lenet", code=2)
    assert "pipeline train: error:" in failed.stderr and "lenet5" in failed.stderr
    # A fork that ends at once (argparse's usage error): its pid and status reach the caller together.
    usage = _pipeline(root, env, "train", code=2)
    assert "the following arguments are required: --dataset, --model" in usage.stderr
    assert len(_forks(templates, "stage")) == before + 2
    # torch's kernels are chosen as it is imported: another choice cannot be a fork of the template.
    other = "avx2" if torch.backends.cpu.get_cpu_capability() != "AVX2" else "default"
    _pipeline(root, {**env, "ATEN_CPU_CAPABILITY": other}, "download", "--dataset", "mnist")
    _pipeline(root, {**env, "PIPELINE_WARM": str(root / "no-templates-here")}, "download", "--dataset", "mnist")
    assert len(_forks(templates, "stage")) == before + 2


def test_a_fork_runs_the_pipeline_code_its_path_names(ws, templates, tmp_path):
    """A template keeps nothing of pipeline/: a copy on PYTHONPATH (as the tests' `dvc repro`
    repos run theirs) runs as copied, and the next fork runs the installed one again."""
    root, env = ws
    shutil.copytree(REPO / "pipeline", tmp_path / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    with (tmp_path / "pipeline" / "download.py").open("a") as f:
        f.write("\nprint('the copy of pipeline/')\n")
    before = len(_forks(templates, "stage"))
    copied = _pipeline(root, {**env, "PYTHONPATH": str(tmp_path)}, "download", "--dataset", "mnist")
    installed = _pipeline(root, env, "download", "--dataset", "mnist")
    assert "the copy of pipeline/" in copied.stdout and "the copy of pipeline/" not in installed.stdout
    assert len(_forks(templates, "stage")) == before + 2


def test_a_folder_no_socket_fits_in_is_refused_before_anything_starts(tmp_path):
    folder = tmp_path / ("x" * 120)
    proc = subprocess.run(["pipeline", "warm", "start", str(folder)], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr
    assert f"pipeline warm: error: {folder}: a folder with a shorter path is needed" in proc.stderr
    assert not folder.exists()


def test_a_pid_and_a_status_sent_together_are_read_as_two_answers():
    """A fork that ends before its caller reads has both of the supervisor's lines waiting."""
    import socket

    supervisor, caller = socket.socketpair()
    with supervisor, caller:
        supervisor.sendall(b'{"pid": 12345}\n{"status": 2}\n')
        assert warm_client._read_line(caller) == {"pid": 12345}
        assert warm_client._read_line(caller) == {"status": 2}
        supervisor.shutdown(socket.SHUT_WR)
        assert warm_client._read_line(caller) is None  # the supervisor is gone
