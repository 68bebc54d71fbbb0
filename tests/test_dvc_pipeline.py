"""The real `dvc repro` in a temp git repo on small slices of the real MNIST and crack images.

One repro is built per module and committed (metrics, plots and dvc.lock in git, as a user
commits them); every test works on its own copy of it, so none depends on another's order.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from tests.conftest import REPO, new_store, shrunk_params_dict

pytestmark = pytest.mark.slow
MODELS = ["logreg", "keras_cnn2", "keras_cnn3"]
CRACK_MODELS = ["crack_cnn"]
# What DVC caches and pushes; everything under metrics/ travels in git instead.
CACHED_OUTS = ["data/mnist/raw", "data/mnist/prepared.pt", "data/crack/raw", "data/crack/prepared.pt",
               "data/crack/prepare_report.json", "models", "reports"]
# Test accuracy of the tiny run (3,000 MNIST images, 2 epochs; 400 crack images at 32x32), measured
# on CPU; floors just below, well above chance (0.1 for MNIST, 0.5 for crack).
ACCURACY_FLOORS = {"logreg": 0.80, "keras_cnn2": 0.80, "keras_cnn3": 0.80, "crack_cnn": 0.70}


def _sh(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


def _crack_slice(shared_crack: Path, dest: Path, per_class: int = 200) -> Path:
    """The first images of each class: the download stage's outputs are what DVC hashes, caches,
    pushes and pulls, and prepare keeps 400 anyway."""
    for cls in ("Positive", "Negative"):
        (dest / cls).mkdir(parents=True)
        for image in sorted((shared_crack / cls).iterdir())[:per_class]:
            shutil.copy(image, dest / cls / image.name)
    return dest


def _commit(root: Path, env: dict, message: str) -> None:
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", message], root, env)


def _env(root: Path) -> dict:
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    for name in ("PIPELINE_GROUP", "PIPELINE_MNIST_MIRROR", "PIPELINE_CRACK_SOURCE"):
        env.pop(name, None)
    return env


@pytest.fixture(scope="module")
def built(tmp_path_factory, shared_mnist, shared_crack, empty_store):
    """A repo after one `dvc repro`, committed; read only: tests that change it take `repo`."""
    root = tmp_path_factory.mktemp("built") / "repo"
    new_store(empty_store, root)  # ignored by git, as a user's mlflow.db is
    crack = _crack_slice(shared_crack, tmp_path_factory.mktemp("crack") / "images")
    for name in ("dvc.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    raw = shrunk_params_dict(models=MODELS, epochs=2, train_limit=3000, crack_models=CRACK_MODELS)
    raw["train"]["mnist"]["logreg"]["seeds"] = [12, 13]  # a model with two seeds through the DAG
    raw["download"]["crack"]["source"] = str(crack)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = _env(root)
    _sh(["git", "init", "-q"], root, env)
    _sh(["dvc", "init", "-q"], root, env)
    _commit(root, env, "init")
    first = _sh(["dvc", "repro"], root, env)
    _commit(root, env, "repro")  # what a user commits after a repro: dvc.lock and metrics/
    return root, env, first


@pytest.fixture
def repo(built, tmp_path):
    """This test's own copy of the built repo: workspace, git history, DVC cache and MLflow store."""
    root = tmp_path / "repo"
    shutil.copytree(built[0], root, symlinks=True)
    return root, _env(root)


def _metric(root: Path, dataset: str, model: str) -> dict:
    return json.loads((root / "metrics" / dataset / f"{model}.json").read_text())


def test_repro_produces_every_declared_output(built):
    root, env, first = built
    assert "Running stage 'download@mnist'" in first.stdout
    for model in MODELS:
        metrics = _metric(root, "mnist", model)
        assert ACCURACY_FLOORS[model] < metrics["test_accuracy"] <= 1.0, (model, metrics["test_accuracy"])
        seeds = [12, 13] if model == "logreg" else [12]
        assert sorted(p.name for p in (root / "models" / "mnist" / model).iterdir()) == [f"seed{s}.pt" for s in seeds]
        assert metrics["seeds"] == len(seeds)
    metrics = _metric(root, "crack", "crack_cnn")
    assert ACCURACY_FLOORS["crack_cnn"] < metrics["test_accuracy"] <= 1.0, metrics["test_accuracy"]
    assert 0.0 < metrics["threshold"] < 1.0
    prepared = json.loads((root / "data" / "crack" / "prepare_report.json").read_text())
    assert prepared["image_size"] == 32
    report = (root / "reports" / "comparison.md").read_text()
    table_rows = [line for line in report.splitlines() if line.startswith("| ") and "%" in line]
    # Every model has its row (in the results table and, with a reported figure, the source table).
    assert {row.split("|")[1].strip() for row in table_rows} == set(MODELS + CRACK_MODELS)
    crack = report[report.index("## CRACK"):]
    assert "Layers at 32x32" in crack[crack.index("#### crack_cnn"):]
    assert (root / "reports" / "figures" / "crack_crack_cnn_roc_pr.png").stat().st_size > 1000
    for png in ("mnist_logreg_curves.png", "mnist_logreg_confusion.png",
                "mnist_keras_cnn2_vs_keras_cnn3_accuracy.png"):
        assert (root / "reports" / "figures" / png).stat().st_size > 1000
        assert f"figures/{png}" in report


def test_metrics_and_plots_are_committed_to_git_and_models_are_not(built):
    root, env, _ = built
    tracked = set(_sh(["git", "ls-files"], root, env).stdout.split())
    assert {"dvc.lock", "metrics/mnist/logreg.json", "metrics/mnist/seeds/logreg.json",
            "metrics/mnist/curves/logreg/seed13.csv", "metrics/crack/roc/crack_cnn.csv",
            "metrics/registry/mnist.json", "metrics/registry/crack.json"} <= tracked
    outputs = [path for path in tracked if path.startswith(("models/", "reports/", "data/"))]
    assert outputs == []
    assert _sh(["git", "status", "--porcelain"], root, env).stdout == ""  # nothing left out


def test_mlflow_holds_one_run_per_model_with_identical_metric_names(built):
    root, env, _ = built
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("mnist")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(MODELS + ["logreg"])  # logreg: 2 seeds
    names = {frozenset(r.data.metrics) for r in runs}
    assert len(names) == 1
    assert {"test_accuracy", "test_loss", "val_accuracy", "train_loss"} <= set(next(iter(names)))
    assert len({r.data.tags["pipeline_group"] for r in runs}) == 1  # grouped as one repro


def test_every_run_names_its_data_by_the_dvc_hash_and_lasts_its_training(built):
    root, env, _ = built
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    (prepared,) = [o for o in lock["stages"]["prepare@mnist"]["outs"] if o["path"].endswith("prepared.pt")]
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert sorted(r.info.run_name for r in runs) == sorted(
        ["logreg-seed12", "logreg-seed13", "keras_cnn2-seed12", "keras_cnn3-seed12"])
    for run in runs:
        inputs = {({t.key: t.value for t in i.tags}["mlflow.data.context"]): i.dataset
                  for i in run.inputs.dataset_inputs}
        assert sorted(inputs) == ["evaluation", "training"]
        assert {d.digest for d in inputs.values()} == {prepared["md5"]}  # what dvc.lock names
        assert json.loads(inputs["evaluation"].profile)["test"] == 10000
        # The run's time is its training's: evaluation adds to it without reopening it.
        duration_s = (run.info.end_time - run.info.start_time) / 1000
        assert duration_s < run.data.metrics["train_seconds"] + 15, (run.info.run_name, duration_s)
        assert run.data.tags["mlflow.source.name"].startswith("pipeline train --dataset mnist")


def test_metrics_show_prints_one_table_per_dataset_with_models_as_rows(built):
    root, env, _ = built
    shown = json.loads(_sh(["dvc", "metrics", "show", "--json"], root, env).stdout)
    data = next(iter(shown.values()))["data"]
    # The models' files only: the prepare report is an output, not a model's metrics.
    assert sorted(data) == sorted([f"metrics/mnist/{m}.json" for m in MODELS]
                                  + [f"metrics/crack/{m}.json" for m in CRACK_MODELS])
    for model in MODELS:
        path = f"metrics/mnist/{model}.json"
        assert data[path]["data"]["test_accuracy"] == _metric(root, "mnist", model)["test_accuracy"]
    for dataset, models in (("mnist", MODELS), ("crack", CRACK_MODELS)):
        # The README's `dvc metrics show metrics/<dataset>/*.json`: the shell's glob, the models' files
        # (a folder as target would make every file under it, curves too, a metric).
        files = sorted(str(f.relative_to(root)) for f in (root / "metrics" / dataset).glob("*.json"))
        table = _sh(["dvc", "metrics", "show", *files], root, env).stdout.splitlines()
        header, rows = table[0].split(), table[1:]
        assert header[0] == "Path" and "test_accuracy" in header
        assert sorted(row.split()[0] for row in rows if row.strip()) == sorted(
            f"metrics/{dataset}/{m}.json" for m in models)
        assert "image_size" not in header and "skipped" not in table[0]
        # Crack's binary metrics stay in crack's table: mnist's has no empty columns for them.
        assert ("test_roc_auc" in header) == (dataset == "crack")


def test_second_repro_is_a_no_op(repo):
    root, env = repo
    again = _sh(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert len(client.search_runs([client.get_experiment_by_name("mnist").experiment_id])) == len(MODELS) + 1


def _tree(root: Path, paths: list[str]) -> dict[str, bytes]:
    """Every file under `paths` (relative name -> bytes)."""
    files = {}
    for path in paths:
        top = root / path
        for file in ([top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())):
            files[str(file.relative_to(root))] = file.read_bytes()
    return files


def test_a_fresh_clone_pulls_every_output_and_reruns_nothing(repo, tmp_path):
    """What a second machine does: the first pushes to a shared remote (a local folder here, S3
    or SSH the same) and commits; the second clones, pulls, and has everything without a run."""
    root, env = repo
    remote = tmp_path / "dvc-remote"
    _sh(["dvc", "remote", "add", "-d", "shared", str(remote)], root, env)
    _commit(root, env, "the team's remote")
    _sh(["dvc", "push"], root, env)
    assert any(p.is_file() for p in remote.rglob("*"))

    clone = tmp_path / "clone"
    _sh(["git", "clone", "-q", str(root), str(clone)], tmp_path, env)
    clone_env = _env(clone)  # a machine of its own: another MLflow store, no DVC cache
    assert not (clone / "models").exists() and (clone / "metrics" / "mnist" / "logreg.json").exists()
    assert json.loads(_sh(["dvc", "status", "--json"], clone, clone_env).stdout)  # the outputs are missing

    _sh(["dvc", "pull"], clone, clone_env)
    everything = ["metrics", *CACHED_OUTS]
    pulled, original = _tree(clone, everything), _tree(root, everything)
    assert sorted(pulled) == sorted(original) and pulled == original
    assert "models/mnist/logreg/seed13.pt" in pulled and "reports/index.html" in pulled
    assert "metrics/crack/pr/crack_cnn.csv" in pulled and "metrics/mnist/curves/keras_cnn3/seed12.csv" in pulled
    assert json.loads(_sh(["dvc", "status", "--json"], clone, clone_env).stdout) == {}
    again = _sh(["dvc", "repro"], clone, clone_env)
    assert "Running stage" not in again.stdout and "up to date" in again.stdout


@pytest.fixture
def shared_server(built, tmp_path):
    """A team's `mlflow server` that already holds the built repo's runs (a copy of its sqlite store,
    artifact paths moved to the copy's mlruns/), on 127.0.0.1; yields its URL."""
    from pipeline.tracking.store import relocate_copied_store
    from tests.servers import mlflow_server

    root = tmp_path / "server"
    root.mkdir()
    shutil.copy(built[0] / "mlflow.db", root / "mlflow.db")
    shutil.copytree(built[0] / "mlruns", root / "mlruns")
    relocate_copied_store(root / "mlflow.db")
    with mlflow_server(f"sqlite:///{root / 'mlflow.db'}", root / "artifacts", root / "server.log") as url:
        yield url


def _logreg_runs(client, lrs: tuple[str, ...]) -> list:
    experiment = client.get_experiment_by_name("mnist").experiment_id
    return [r for r in client.search_runs([experiment], "tags.model = 'logreg'") if r.data.params["lr"] in lrs]


def _check_runs_complete(client, runs: list, expected: list[tuple[str, str]]) -> None:
    """Each (lr, seed) has one FINISHED run with every epoch's validation metrics and its test accuracy."""
    assert sorted((r.data.params["lr"], r.data.params["seed"]) for r in runs) == expected
    for run in runs:
        assert run.info.status == "FINISHED" and "test_accuracy" in run.data.metrics
        epochs = [m.step for m in client.get_metric_history(run.info.run_id, "val_accuracy")]
        assert epochs == list(range(1, int(run.data.params["epochs"]) + 1))


def test_a_queued_grid_on_one_tracking_server_reruns_only_the_changed_model(repo, shared_server):
    """README "Experiments at scale" against a team's `mlflow server` ("Team tracking server"): two
    logreg learning rates, queued and run two at a time (`--jobs 2`), so two `dvc repro`s write to one
    server at once, as two clones of a team do. Each re-runs only logreg and the stages that read it
    up to register@mnist;
    `dvc exp show` and `dvc metrics diff` give each one's accuracy; the server lost no run and no metric."""
    root, env = repo
    env = {**env, "MLFLOW_TRACKING_URI": shared_server}
    before = {m: _metric(root, "mnist", m)["test_accuracy"] for m in MODELS}
    committed = (root / "params.yaml").read_text()
    changed = yaml.safe_load(committed)
    changed["train"]["mnist"]["logreg"]["lr"] = 0.02
    (root / "params.yaml").write_text(yaml.safe_dump(changed, sort_keys=False))
    status = json.loads(_sh(["dvc", "status", "--json"], root, env).stdout)
    # Neither the download, the split nor the other models' stages are touched; register@mnist
    # reads train.mnist (its candidates).
    assert sorted(status) == ["evaluate_mnist@logreg", "register@mnist", "report", "train_mnist@logreg"]
    (root / "params.yaml").write_text(committed)

    # Up to register@mnist (README: stage names appended to `dvc exp run`): both experiments still
    # train, evaluate and register on the server at once. The report (10 s a run here) is left to
    # the experiment a user applies: its server writes, figures added to finished runs, are
    # test_tracking_server.py's.
    _sh(["dvc", "exp", "run", "--queue", "-S", "train.mnist.logreg.lr=0.02,0.05", "register@mnist"], root, env)
    _sh(["dvc", "exp", "run", "--run-all", "--jobs", "2"], root, env)
    shown = json.loads(_sh(["dvc", "exp", "show", "--json"], root, env).stdout)
    experiments = [rev for baseline in shown for exp in baseline.get("experiments") or []
                   for rev in exp["revs"]]
    assert len(experiments) == 2, shown
    accuracies = {}
    for exp in experiments:
        lr = exp["data"]["params"]["params.yaml"]["data"]["train"]["mnist"]["logreg"]["lr"]
        metrics = exp["data"]["metrics"]
        # A metric file the experiment's commit lacks would be an error here (`!` in the table).
        accuracies[lr] = metrics["metrics/mnist/logreg.json"]["data"]["test_accuracy"]
        assert metrics["metrics/mnist/keras_cnn2.json"]["data"]["test_accuracy"] == before["keras_cnn2"]
        diff = json.loads(_sh(["dvc", "metrics", "diff", "HEAD", exp["rev"], "--json"], root, env).stdout)
        assert diff["metrics/mnist/logreg.json"]["test_accuracy"]["old"] == before["logreg"]
        assert diff["metrics/mnist/logreg.json"]["test_accuracy"]["new"] == accuracies[lr] != before["logreg"]
        assert not {f"metrics/mnist/{m}.json" for m in ("keras_cnn2", "keras_cnn3")} & set(diff)
    assert sorted(accuracies) == [0.02, 0.05]
    assert all(ACCURACY_FLOORS["logreg"] - 0.1 < a <= 1.0 for a in accuracies.values()), accuracies
    table = _sh(["dvc", "metrics", "diff", "HEAD", experiments[0]["rev"]], root, env).stdout
    assert "metrics/mnist/logreg.json" in table and "test_accuracy" in table
    # The server lost nothing to the two experiments' concurrent stages: each seed of each learning
    # rate has its finished run, every epoch's metrics and its test accuracy; no other model trained
    # again (the built repo's one run each); the champion is one of the server's runs.
    client = mlflow.MlflowClient(shared_server)
    _check_runs_complete(client, _logreg_runs(client, ("0.02", "0.05")),
                         [("0.02", "12"), ("0.02", "13"), ("0.05", "12"), ("0.05", "13")])
    mnist_runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id])
    assert sorted(r.data.tags["model"] for r in mnist_runs if r.data.tags["model"] != "logreg") == \
        ["keras_cnn2", "keras_cnn3"]
    champion = client.get_model_version_by_alias("mnist-classifier", "champion")
    assert champion.run_id in {r.info.run_id for r in mnist_runs}
