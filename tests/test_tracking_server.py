"""The pipeline against a team tracking server: `mlflow server` on a real PostgreSQL (Debian's)
with artifacts proxied by the server; a store that cannot take runs stops `pipeline train` before
any work; and no credential of the environment reaches runs, artifacts, logs or outputs."""
from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline import artifacts
from pipeline.tracking.server import free_port
from pipeline.tracking.store import TrackingError, check_store
from tests.conftest import shrunk_params_dict

MODEL = "logreg"
DB_USER, DB_PASSWORD = "mlflow", "db-password-for-the-server-only"
CLIENT_USER = "pipeline-ci"
# Distinct sentinels, so a failure names the variable that leaked.
SECRETS = {"KAGGLE_USERNAME": "kaggle-user-5e1f7a0c", "KAGGLE_KEY": "kaggle-key-9c2d4b6e",
           "MLFLOW_TRACKING_PASSWORD": "tracking-password-3b8e6d1f"}
URI_PASSWORD = "uri-password-7a1c9f2e"
SENTINELS = [*SECRETS.values(), URI_PASSWORD]


def _postgres_bin() -> Path | None:
    """Debian's server binaries: on PATH (symlinks) or under /usr/lib/postgresql/<version>/bin."""
    initdb = shutil.which("initdb")
    if initdb:
        return Path(initdb).resolve().parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return found[-1].parent if found else None


def _server_owner() -> pwd.struct_passwd | None:
    """The account PostgreSQL runs as: it refuses root, so as root that is Debian's `postgres`."""
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root without a `postgres` account, and PostgreSQL refuses to run as "
                    "root: apt-get install -y postgresql creates it")


def _as_owner(owner, command: list[str], what: str, log: Path | None = None) -> None:
    prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
    proc = subprocess.run(prefix + command, capture_output=True, text=True, timeout=120)
    if proc.returncode != 0:
        tail = log.read_text(errors="replace")[-3000:] if log and log.exists() else ""
        pytest.fail(f"{what} failed ({' '.join(command)}):\n{proc.stdout}\n{proc.stderr}\n{tail}")


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster on 127.0.0.1 (password auth over TCP) holding an empty
    `mlflow` database; yields its SQLAlchemy URI, stopped and deleted afterwards."""
    import psycopg

    bin_dir = _postgres_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL server binaries not found (no initdb on PATH or in "
                    "/usr/lib/postgresql/*/bin): apt-get install -y postgresql (.ci/run does)")
    owner = _server_owner()
    # Not under pytest's tmp dir: that is private to root, and the cluster's owner must reach it.
    root = Path(tempfile.mkdtemp(prefix="pytest-postgres-"))
    data, log, pwfile = root / "data", root / "server.log", root / "pwfile"
    pwfile.write_text(DB_PASSWORD + "\n")
    if owner:
        for path in (root, pwfile):
            os.chown(path, owner.pw_uid, owner.pw_gid)
    port = free_port("127.0.0.1")
    try:
        _as_owner(owner, [str(bin_dir / "initdb"), "-D", str(data), "-U", DB_USER, f"--pwfile={pwfile}",
                          "--auth-local=trust", "--auth-host=scram-sha-256", "-E", "UTF8", "--no-sync"],
                  "initdb")
        _as_owner(owner, [str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60",
                          "-o", f"-h 127.0.0.1 -p {port} -k {root} -c fsync=off", "start"],
                  "pg_ctl start", log)
        with psycopg.connect(host="127.0.0.1", port=port, user=DB_USER, password=DB_PASSWORD,
                             dbname="postgres", autocommit=True) as conn:
            conn.execute("CREATE DATABASE mlflow")
        yield f"postgresql://{DB_USER}:{DB_PASSWORD}@127.0.0.1:{port}/mlflow"
    finally:
        if (data / "postmaster.pid").exists():
            prefix = ["runuser", "-u", owner.pw_name, "--"] if owner else []
            subprocess.run(prefix + [str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                           capture_output=True, timeout=120)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` on that database, serving artifacts itself (proxied, its default) from a
    temp folder; yields (its URL, the artifacts folder)."""
    root = tmp_path_factory.mktemp("tracking_server")
    stored, log_path = root / "artifacts", root / "server.log"
    port = free_port("127.0.0.1")
    mlflow_cli = Path(sys.executable).parent / "mlflow"
    command = [str(mlflow_cli) if mlflow_cli.exists() else "mlflow", "server",
               "--backend-store-uri", postgres, "--artifacts-destination", str(stored),
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    with log_path.open("wb") as log:
        # Its own process group: the CLI's uvicorn workers are stopped with it.
        process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            _wait_healthy(process, f"http://127.0.0.1:{port}", log_path)
            yield f"http://127.0.0.1:{port}", stored
        finally:
            _stop(process)


def _wait_healthy(process: subprocess.Popen, url: str, log: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"mlflow server exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # not listening yet
            pass
        time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url}/health in {timeout_s:.0f} s:\n{log.read_text()[-3000:]}")


def _stop(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=5)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        pass
    try:  # a worker that outlived the CLI
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.wait()


def _mnist_workspace(prepared_workspace: Path, ws: Path) -> Path:
    """A workspace of its own (other tests train logreg elsewhere) with the prepared MNIST slice
    and a params.yaml of that one model, so the stages run as `dvc repro` runs them."""
    (ws / artifacts.prepared_file("mnist")).parent.mkdir(parents=True)
    shutil.copy(prepared_workspace / artifacts.prepared_file("mnist"), ws / artifacts.prepared_file("mnist"))
    (ws / "params.yaml").write_text(yaml.safe_dump(shrunk_params_dict(models=[MODEL], crack_models=[])))
    return ws


def _stage(ws: Path, env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pipeline", *args], cwd=ws, env=env,
                          capture_output=True, text=True, timeout=600)


def _client_env(url: str) -> dict:
    """The environment of a team member: the server's URL with credentials in it and in
    MLFLOW_TRACKING_USERNAME/PASSWORD (an auth-less server ignores them), and Kaggle's keys."""
    return {**os.environ, **SECRETS, "MLFLOW_TRACKING_USERNAME": CLIENT_USER,
            "MLFLOW_TRACKING_URI": url.replace("http://", f"http://{CLIENT_USER}:{URI_PASSWORD}@"),
            "PIPELINE_GROUP": "pytest-server"}


@pytest.fixture(scope="module")
def tracked(tracking_server, prepared_workspace, tmp_path_factory):
    """`pipeline train`, `evaluate` and `report` of one model, each a process of its own as under
    DVC, tracking into the server; returns (workspace, server URL, artifacts folder, stage logs)."""
    url, stored = tracking_server
    ws = _mnist_workspace(prepared_workspace, tmp_path_factory.mktemp("tracked_ws"))
    env = _client_env(url)
    logs = {}
    for args in (("train", "--model", MODEL), ("evaluate", "--model", MODEL), ("report",)):
        proc = _stage(ws, env, *args)
        assert proc.returncode == 0, f"pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        logs[args[0]] = proc.stdout + proc.stderr
    return ws, url, stored, logs


def _the_run(url: str):
    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("mnist")
    (run,) = client.search_runs([experiment.experiment_id])
    return client, run


def test_runs_go_to_postgres_and_artifacts_through_the_server(tracked, postgres):
    import psycopg

    ws, url, stored, _ = tracked
    client, run = _the_run(url)
    metrics = json.loads((ws / artifacts.metrics_file("mnist", MODEL)).read_text())
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == MODEL and run.data.tags["pipeline_group"] == "pytest-server"
    assert run.data.params["optimizer"] and run.data.params["seed"] == "12"
    assert run.data.metrics["test_accuracy"] == pytest.approx(metrics["test_accuracy"])
    assert [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")] == [1]

    # Proxied: the client wrote through the server's mlflow-artifacts API, the server to its folder.
    assert run.info.artifact_uri.startswith("mlflow-artifacts:/")
    listed = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"confusion_matrix.png", "learning_curves.png", "per_class.json", "report"} <= listed
    on_disk = stored / run.info.experiment_id / run.info.run_id / "artifacts"
    assert (on_disk / "confusion_matrix.png").stat().st_size > 1000
    assert list(stored.glob(f"{run.info.experiment_id}/models/*/artifacts/MLmodel"))

    # The logged model loads back through the server and classifies.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        import torch

        model = mlflow.pytorch.load_model(f"runs:/{run.info.run_id}/model")
        assert model(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
    finally:
        mlflow.set_tracking_uri(previous)

    # The server's store is the PostgreSQL database, not a file of its own.
    with psycopg.connect(postgres) as conn:
        status = conn.execute("SELECT status FROM runs WHERE run_uuid = %s", (run.info.run_id,)).fetchone()
        logged = conn.execute("SELECT value FROM latest_metrics WHERE run_uuid = %s AND key = 'test_accuracy'",
                              (run.info.run_id,)).fetchone()
    assert status == ("FINISHED",)
    assert logged[0] == pytest.approx(metrics["test_accuracy"])


def _files_holding(root: Path, secrets: list[str]) -> dict[str, list[str]]:
    """{file: [secrets in its bytes]} for every file under root."""
    found = {}
    for path in (p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        hits = [s for s in secrets if s.encode() in data]
        if hits:
            found[str(path)] = hits
    return found


def test_no_credential_reaches_runs_artifacts_logs_or_outputs(tracked, tmp_path):
    ws, url, stored, logs = tracked
    client, run = _the_run(url)
    recorded = "\n".join([*run.data.params, *run.data.params.values(), *run.data.tags,
                          *run.data.tags.values(), *run.data.metrics, run.info.run_name])
    assert [s for s in SENTINELS if s in recorded] == []

    downloaded = Path(mlflow.artifacts.download_artifacts(run_id=run.info.run_id, dst_path=str(tmp_path / "run"),
                                                          tracking_uri=url))
    for logged in client.search_logged_models([run.info.experiment_id]):
        mlflow.artifacts.download_artifacts(artifact_uri=logged.artifact_location, tracking_uri=url,
                                            dst_path=str(tmp_path / "models" / logged.model_id))
    # The scan reads what it should: the downloaded MLmodel names the run it was logged by.
    assert _files_holding(tmp_path / "models", [run.info.run_id])
    assert (downloaded / "report").is_dir()
    assert _files_holding(tmp_path, SENTINELS) == {}
    assert _files_holding(stored, SENTINELS) == {}  # everything the server stored

    assert "MLflow run" in logs["train"]  # the logs hold the stages' real output
    assert {stage: [s for s in SENTINELS if s in text] for stage, text in logs.items()} == \
        {stage: [] for stage in logs}
    assert (ws / "reports" / "index.html").exists() and (ws / artifacts.metrics_file("mnist", MODEL)).exists()
    for folder in ("reports", "metrics"):
        assert _files_holding(ws / folder, SENTINELS) == {}


def test_unreachable_server_stops_train_in_seconds_without_a_checkpoint(prepared_workspace, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago and that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = _mnist_workspace(prepared_workspace, tmp_path)
    start = time.monotonic()
    proc = _stage(ws, _client_env(f"http://127.0.0.1:{port}"), "train", "--model", MODEL)
    seconds = time.monotonic() - start
    # MLflow's own client would retry for minutes, and only after the model was built.
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert seconds < 60
    assert f"MLFLOW_TRACKING_URI=http://{CLIENT_USER}:***@127.0.0.1:{port}" in proc.stderr
    assert "no MLflow tracking server answers there" in proc.stderr and "Start the server" in proc.stderr
    assert URI_PASSWORD not in proc.stdout + proc.stderr
    assert not (ws / "models").exists()


def test_a_server_path_that_is_not_the_tracking_api_is_refused(tracking_server, monkeypatch):
    url, _ = tracking_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"{url}/not-mlflow")
    with pytest.raises(TrackingError, match=r"HTTP 404 .*not an MLflow tracking server.*server's root"):
        check_store()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    check_store()  # the server's root is accepted


def test_sqlite_store_in_a_missing_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/missing/mlflow.db")
    with pytest.raises(TrackingError, match=rf"MLFLOW_TRACKING_URI=sqlite:///.*{tmp_path / 'missing'}, does not exist"):
        check_store()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    check_store()


def test_a_relative_store_inside_a_queued_experiment_is_refused(tmp_path, monkeypatch):
    # Where `dvc queue start` runs a queued experiment's stages (DVC's EXEC_TMP_DIR).
    copy = tmp_path / "repo" / ".dvc" / "tmp" / "exps" / "tmpab12cd"
    copy.mkdir(parents=True)
    monkeypatch.chdir(copy)
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(TrackingError, match=r"default tracking URI sqlite:///mlflow.db .*temporary copy.*"
                                            r"Set MLFLOW_TRACKING_URI to an absolute store"):
        check_store()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_store()  # an absolute store outside the copy is fine


def test_a_database_store_is_checked_with_one_quick_connection(postgres, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", postgres)
    check_store()  # the live database
    wrong = postgres.replace(DB_PASSWORD, "not-the-password")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", wrong)
    start = time.monotonic()
    with pytest.raises(TrackingError, match=r"MLFLOW_TRACKING_URI=postgresql://mlflow:\*\*\*@.*does not accept "
                                            r"a connection.*password") as refused:
        check_store()
    assert time.monotonic() - start < 10
    assert "not-the-password" not in str(refused.value)
