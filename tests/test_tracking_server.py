"""The pipeline against a team tracking server: `mlflow server` on a real PostgreSQL (Debian's)
with artifacts proxied by the server; a store that cannot take runs stops `pipeline train` before
any work; no credential of the environment reaches runs, artifacts, logs or outputs; and the
runs of one pipeline_group, compared in MLflow's UI (headless Chromium) and its REST search API."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline import artifacts, evaluate, train
from pipeline.config import parse_params
from pipeline.tracking.store import TrackingError, check_store
from tests.browser import headless_chromium, save_screenshot
from tests.conftest import shrunk_params_dict
from tests.servers import mlflow_server, postgres_cluster

MODEL = "logreg"
GROUP, OTHER_GROUP = "pytest-server", "pytest-server-other"  # the tracked runs' pipeline_group, another
DB_USER, DB_PASSWORD = "mlflow", "db-password-for-the-server-only"
CLIENT_USER = "pipeline-ci"
# Distinct sentinels, so a failure names the variable that leaked.
SECRETS = {"KAGGLE_USERNAME": "kaggle-user-5e1f7a0c", "KAGGLE_KEY": "kaggle-key-9c2d4b6e",
           "MLFLOW_TRACKING_PASSWORD": "tracking-password-3b8e6d1f"}
URI_PASSWORD = "uri-password-7a1c9f2e"
SENTINELS = [*SECRETS.values(), URI_PASSWORD]


@pytest.fixture(scope="module")
def postgres():
    """A throwaway PostgreSQL cluster with an empty `mlflow` database; yields its SQLAlchemy URI."""
    with postgres_cluster(DB_USER, DB_PASSWORD) as uri:
        yield uri


@pytest.fixture(scope="module")
def tracking_server(postgres, tmp_path_factory):
    """`mlflow server` on that database, serving artifacts itself (proxied, its default) from a
    temp folder; yields (its URL, the artifacts folder)."""
    root = tmp_path_factory.mktemp("tracking_server")
    with mlflow_server(postgres, root / "artifacts", root / "server.log") as url:
        yield url, root / "artifacts"


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
    return {**os.environ, **_client_variables(url)}


def _client_variables(url: str) -> dict:
    return {**SECRETS, "MLFLOW_TRACKING_USERNAME": CLIENT_USER,
            "MLFLOW_TRACKING_URI": url.replace("http://", f"http://{CLIENT_USER}:{URI_PASSWORD}@"),
            "PIPELINE_GROUP": GROUP}


@pytest.fixture(scope="module")
def tracked(tracking_server, prepared_workspace, tmp_path_factory):
    """`pipeline train`, `evaluate` and `report` of one model, each a process of its own as under
    DVC, tracking into the server; returns (workspace, server URL, artifacts folder, stage logs)."""
    url, stored = tracking_server
    ws = _mnist_workspace(prepared_workspace, tmp_path_factory.mktemp("tracked_ws"))
    env = _client_env(url)
    logs = {}
    model = ("--dataset", "mnist", "--model", MODEL)
    for args in (("train", *model), ("evaluate", *model), ("report",)):
        proc = _stage(ws, env, *args)
        assert proc.returncode == 0, f"pipeline {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}"
        logs[args[0]] = proc.stdout + proc.stderr
    return ws, url, stored, logs


def _the_run(url: str):
    """The tracked stages' run (the UI test adds others beside it)."""
    client = mlflow.MlflowClient(url)
    experiment = client.get_experiment_by_name("mnist")
    (run,) = client.search_runs([experiment.experiment_id], f"tags.pipeline_group = '{GROUP}' and tags.seed = '12'")
    return client, run


def test_runs_go_to_postgres_and_artifacts_through_the_server(tracked, postgres):
    import psycopg

    ws, url, stored, _ = tracked
    client, run = _the_run(url)
    metrics = json.loads((ws / artifacts.metrics_file("mnist", MODEL)).read_text())
    assert run.info.status == "FINISHED"
    assert run.data.tags["model"] == MODEL and run.data.tags["pipeline_group"] == GROUP
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

    # The logged model (data only) loads back through the server, checked, and classifies tensors.
    previous = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(url)
    try:
        import numpy as np

        from pipeline.tracking.serving import load_logged

        model = load_logged(f"runs:/{run.info.run_id}/model")
        assert np.asarray(model.predict(np.zeros((2, 1, 28, 28), dtype=np.float32))).shape == (2, 10)
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


@pytest.fixture(scope="module")
def compared(tracked, prepared_workspace, tmp_path_factory):
    """Beside the tracked run (logreg-seed12): logreg-seed13 in the same pipeline_group, trained and
    evaluated, and logreg-seed14 of another group, trained; the stages in this process, on the same
    server. Returns the experiment id and {run name: test_accuracy} of the group's runs, from the
    evaluate stage's metrics files."""
    ws, url, _, _ = tracked
    other_ws = _mnist_workspace(prepared_workspace, tmp_path_factory.mktemp("compared_ws"))
    raw = yaml.safe_load((other_ws / "params.yaml").read_text())
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(other_ws)
        for name, value in _client_variables(url).items():
            mp.setenv(name, value)
        params = parse_params({**raw, "seeds": [13]})
        train.main(params, "mnist", MODEL)
        evaluate.main(params, "mnist", MODEL)
        mp.setenv("PIPELINE_GROUP", OTHER_GROUP)
        train.main(parse_params({**raw, "seeds": [14]}), "mnist", MODEL)
    accuracy = {f"{MODEL}-seed{seed}": json.loads((root / artifacts.metrics_file("mnist", MODEL)).read_text())
                ["test_accuracy"] for seed, root in ((12, ws), (13, other_ws))}
    return mlflow.MlflowClient(url).get_experiment_by_name("mnist").experiment_id, accuracy


def _search_api(url: str, experiment_id: str, search: str) -> dict[str, float | None]:
    """{run name: test_accuracy} of the runs MLflow's REST search API finds (None: no such metric)."""
    request = urllib.request.Request(
        f"{url}/api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"experiment_ids": [experiment_id], "filter": search, "max_results": 100}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        runs = json.loads(response.read()).get("runs", [])
    return {run["info"]["run_name"]: {m["key"]: m["value"] for m in run["data"].get("metrics", [])}
            .get("test_accuracy") for run in runs}


def test_rest_search_finds_a_groups_runs_with_their_test_accuracy(tracking_server, compared):
    url, _ = tracking_server
    experiment_id, expected = compared
    found = _search_api(url, experiment_id, f"tags.pipeline_group = '{GROUP}'")
    assert found == pytest.approx(expected)
    # The filter is what keeps the other group's run out: unfiltered, it is there.
    assert f"{MODEL}-seed14" in _search_api(url, experiment_id, "")


def test_the_ui_shows_a_groups_runs_with_their_test_accuracy(tracking_server, compared):
    """The experiment in MLflow's UI (headless Chromium), filtered by the group as the README says:
    the group's runs by name, with test_accuracy as the UI shows it, and not the other group's."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions as shown
    from selenium.webdriver.support.ui import WebDriverWait

    url, _ = tracking_server
    experiment_id, expected = compared
    search = f"tags.pipeline_group = '{GROUP}'"
    assert _search_api(url, experiment_id, search) == pytest.approx(expected)  # what the UI must show
    # Wide enough for every column of the runs table, test_accuracy included, in the screenshot.
    browser = headless_chromium(2400, 900)
    try:
        wait = WebDriverWait(browser, 90)  # the React app's first load on 2 busy cores
        browser.get(f"{url}/#/experiments/{experiment_id}/runs?searchFilter={urllib.parse.quote(search)}")
        for name in expected:
            wait.until(shown.text_to_be_present_in_element((By.TAG_NAME, "body"), name))
        page = browser.find_element(By.TAG_NAME, "body").text
        assert "Training runs" in page  # the experiment's kind opened it on its runs, not on traces
        assert f"{len(expected)} matching runs" in page and f"{MODEL}-seed14" not in page, page[-2000:]
        # Metrics are hidden by default: tick test_accuracy under Metrics in the Columns menu.
        browser.find_element(By.CSS_SELECTOR, "[data-testid='column-selection-dropdown']").click()
        wait.until(shown.element_to_be_clickable((By.XPATH, "//span[@title='test_accuracy']"))).click()
        browser.find_element(By.TAG_NAME, "body").send_keys(Keys.ESCAPE)
        cells = "[role='gridcell'][col-id='metrics.`test_accuracy`']"
        wait.until(lambda b: len([c for c in b.find_elements(By.CSS_SELECTOR, cells) if c.text]) == len(expected))
        names = {row.get_attribute("row-id"): row.text for row in browser.find_elements(
            By.CSS_SELECTOR, "[role='row'][row-id]") if any(n in row.text for n in expected)}
        shown_accuracy = {}
        for cell in browser.find_elements(By.CSS_SELECTOR, cells):
            row_id = cell.find_element(By.XPATH, "./ancestor::*[@row-id][1]").get_attribute("row-id")
            (name,) = [n for n in expected if n in names.get(row_id, "")]
            shown_accuracy[name] = cell.text
        assert set(shown_accuracy) == set(expected)
        for name, text in shown_accuracy.items():
            decimals = len(text.partition(".")[2])
            # The UI may round: equal to the stored value at the decimals it shows, and at least 3.
            assert decimals >= 3 and float(text) == pytest.approx(expected[name], abs=0.51 * 10 ** -decimals), \
                f"{name}: the UI shows test_accuracy {text}, the run holds {expected[name]}"
        for close in browser.find_elements(By.CSS_SELECTOR, "[data-component-id='mlflow.assistant.chat_panel.close']"):
            close.click()  # MLflow 3's assistant panel, which would cover the table's right half
        save_screenshot(browser, "mlflow_ui_runs.png")
    finally:
        browser.quit()


def test_unreachable_server_stops_train_in_seconds_without_a_checkpoint(prepared_workspace, tmp_path):
    with socket.socket() as s:  # a port that was free a moment ago and that nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    ws = _mnist_workspace(prepared_workspace, tmp_path)
    start = time.monotonic()
    proc = _stage(ws, _client_env(f"http://127.0.0.1:{port}"), "train", "--dataset", "mnist", "--model", MODEL)
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
