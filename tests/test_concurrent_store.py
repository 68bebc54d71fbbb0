"""Stages starting together on a new sqlite store (issue 26): real processes, each opening the
store and logging a run through the pipeline's own tracking code, released at the same instant."""
from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from tests.conftest import REPO

PROCESSES = 6
# Each child imports mlflow (the slow part) first, says so with its ready file, then waits for the
# go file, so that all of them open the new store within milliseconds of each other, as `dvc queue
# start -j 2` stages do.
CHILD = """
import sys, time
from pathlib import Path
from pipeline.tracking.runs import open_experiment
import mlflow.store.tracking.sqlalchemy_store  # noqa: F401 - imported before the start line
go, index = Path(sys.argv[1]), int(sys.argv[2])
(go.parent / f"ready{index}").touch()
while not go.exists():
    time.sleep(0.001)
mlflow = open_experiment("mnist")
with mlflow.start_run() as run:
    mlflow.log_param("index", index)
    mlflow.log_metric("val_accuracy", index / 10, step=1)
print(run.info.run_id)
"""


def _start(ws: Path, go: Path, index: int) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO), "MLFLOW_TRACKING_URI": f"sqlite:///{ws / 'mlflow.db'}"}
    return subprocess.Popen([sys.executable, "-c", CHILD, str(go), str(index)], cwd=ws, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_processes_starting_together_on_a_new_sqlite_store_lose_no_run(tmp_path):
    ws, go = tmp_path / "ws", tmp_path / "go"
    ws.mkdir()
    children = [_start(ws, go, i) for i in range(PROCESSES)]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(PROCESSES)):  # all imported mlflow
        assert time.monotonic() < deadline and all(c.poll() is None for c in children), \
            [c.communicate()[1][-800:] for c in children if c.poll() is not None]
        time.sleep(0.05)
    go.touch()
    results = [child.communicate(timeout=300) for child in children]
    failed = [(child.returncode, err[-800:]) for child, (_, err) in zip(children, results) if child.returncode]
    assert not failed, failed
    run_ids = {out.strip() for out, _ in results}
    with sqlite3.connect(ws / "mlflow.db") as db:
        runs = dict(db.execute("select run_uuid, status from runs"))
        metrics = dict(db.execute("select run_uuid, value from metrics where key = 'val_accuracy'"))
    assert set(runs) == run_ids and len(run_ids) == PROCESSES
    assert set(runs.values()) == {"FINISHED"}
    assert sorted(metrics.values()) == [i / 10 for i in range(PROCESSES)]
    # And the store stays usable: one more run after them.
    later = _start(ws, go, PROCESSES)
    out, err = later.communicate(timeout=300)
    assert later.returncode == 0, err[-800:]
