"""Ctrl-C (SIGINT) and SIGTERM stop a real `pipeline train` process cleanly, whichever way they come:
to the stage alone or to its whole process group (its MLflow child too), and with SIGINT
inherited ignored, as a script's background job starts. Each test waits for the first epoch's
resume file, then signals a training far too long to have ended (see `EPOCHS`)."""
from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import sys
from pathlib import Path

import mlflow
import pytest
import torch
import yaml

from pipeline import artifacts
from pipeline.engine import resume
from pipeline.tracking.run_log import RunLog
from tests.conftest import REPO, new_store, shrunk_params_dict, signal_once

MODEL, SEED = "logreg", 12
# The signal comes once epoch 1 is saved: the rest of the epochs are the margin, hundreds of
# times the few milliseconds between the file appearing and the signal, on any machine.
EPOCHS = 2000


@pytest.fixture
def ws(prepared_workspace, tmp_path, empty_store) -> Path:
    """A folder with MNIST's prepared slice, its own store and a params file for a long training."""
    (tmp_path / "data" / "mnist").mkdir(parents=True)
    shutil.copy(prepared_workspace / artifacts.prepared_file("mnist"), tmp_path / artifacts.prepared_file("mnist"))
    new_store(empty_store, tmp_path)
    raw = shrunk_params_dict(models=[MODEL], epochs=EPOCHS, runtime={"threads": 1},
                             train={"mnist": {MODEL: {"patience": 0}}})
    raw["train"]["mnist"][MODEL]["seeds"] = [SEED]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return tmp_path


def _env(ws: Path) -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": str(REPO), "PIPELINE_GROUP": "pytest-signals",
            "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}"}


def _runs(ws: Path) -> dict[str, str]:
    with sqlite3.connect(f"file:{ws / 'mlflow.db'}?mode=ro", uri=True) as db:
        return dict(db.execute("select run_uuid, status from runs"))


CASES = {
    # name: (signal, to the whole group?, SIGINT inherited ignored?)
    "ctrl-c": (signal.SIGINT, True, False),
    "ctrl-c, started with SIGINT ignored": (signal.SIGINT, True, True),
    "SIGINT to the stage alone, started with SIGINT ignored": (signal.SIGINT, False, True),
    "SIGTERM to the group": (signal.SIGTERM, True, False),
    "SIGTERM to the stage alone": (signal.SIGTERM, False, False),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_signal_ends_the_stage_with_one_line_its_run_ended_and_the_resume_file_kept(ws, case):
    signum, group, sigint_ignored = CASES[case]
    code_expected, word, status = {signal.SIGINT: (130, "interrupted", "FAILED"),
                                   signal.SIGTERM: (143, "terminated", "KILLED")}[signum]
    resume_file = ws / resume.resume_file("mnist", MODEL, SEED)
    code, err = signal_once([sys.executable, "-m", "pipeline", "train", "--dataset", "mnist", "--model", MODEL],
                            resume_file, signum, group=group, sigint_ignored=sigint_ignored, cwd=ws, env=_env(ws))

    assert code == code_expected and "Traceback" not in err, err
    progress = torch.load(resume_file, weights_only=True)["progress"]  # kept: running again goes on from it
    assert 1 <= progress["epoch"] < EPOCHS
    run_id = progress["run_id"]
    message = [line for line in err.splitlines() if line.startswith("pipeline train: ")]
    assert message == [f"pipeline train: {word}: the seed in training wrote no checkpoint and its MLflow run "
                       f"{run_id} is marked {status}; run the stage again to go on from its last finished epoch"], err
    assert _runs(ws) == {run_id: status}
    assert not (ws / artifacts.checkpoint_file("mnist", MODEL, SEED)).exists()


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_the_mlflow_child_outlives_a_signal_and_ends_the_run_as_the_stage_says(workspace, mlflow_uri, signum):
    # What a signal to the process group does to the child while the stage goes on to end its run.
    with RunLog("mnist") as run_log:
        run_id = run_log.start(MODEL, {}, {})
        run_log.process.send_signal(signum)
        run_log.log({"val_accuracy": 0.5}, 1)
        run_log.end("KILLED" if signum == signal.SIGTERM else "FAILED")
    assert run_log.process.returncode == 0
    client = mlflow.MlflowClient(mlflow_uri)
    assert client.get_run(run_id).info.status == ("KILLED" if signum == signal.SIGTERM else "FAILED")
    assert [m.step for m in client.get_metric_history(run_id, "val_accuracy")] == [1]


@pytest.mark.parametrize("signum, status", [(signal.SIGINT, "FAILED"), (signal.SIGTERM, "KILLED")],
                         ids=["SIGINT", "SIGTERM"])
def test_a_run_the_stage_left_open_is_ended_by_the_child_after_a_signal(workspace, mlflow_uri, signum, status):
    # The stage was gone before it could end its run (killed while the signal reached the group):
    # the child ends it on its own once its stdin closes, FAILED for Ctrl-C as the stage would.
    run_log = RunLog("mnist")
    run_id = run_log.start(MODEL, {}, {})
    run_log.process.send_signal(signum)
    run_log.flush()  # answered after the signal: the child is still there
    run_log.process.stdin.close()
    assert run_log.process.wait(timeout=60) == 0
    run_log.process.stdout.close()
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.status == status


def test_a_request_cut_short_is_skipped_and_the_next_one_read_whole(workspace, mlflow_uri):
    # A signal's exception can cut the stage's write to a full pipe; the half line is ended and skipped.
    with RunLog("mnist") as run_log:
        run_id = run_log.start(MODEL, {}, {})
        run_log.process.stdin.write('{"op": "log", "metrics": {"val_acc\n')
        run_log.end("FAILED")
    assert mlflow.MlflowClient(mlflow_uri).get_run(run_id).info.status == "FAILED"


def test_answers_a_signal_left_unread_are_read_past(workspace, mlflow_uri):
    # Ctrl-C while the stage waited for the start's answer: its way out asks to end the run, and
    # must read that request's answer, then each later one its own, not the one before.
    with RunLog("mnist") as run_log:
        run_log.send_start(MODEL, {}, {})  # its answer never read
        run_log.end("FAILED")
        second = run_log.start(MODEL, {}, {})
        run_log.end()
    client = mlflow.MlflowClient(mlflow_uri)
    runs = client.search_runs([e.experiment_id for e in client.search_experiments()])
    assert {r.info.run_id: r.info.status for r in runs} == {
        next(r.info.run_id for r in runs if r.info.run_id != second): "FAILED", second: "FINISHED"}
