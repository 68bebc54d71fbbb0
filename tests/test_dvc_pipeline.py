"""The real `dvc repro` in a temp git repo on small slices of the real MNIST and crack images."""
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

from tests.conftest import REPO, shrunk_params_dict

pytestmark = pytest.mark.slow
MODELS = ["logreg", "keras_cnn2", "keras_cnn3"]
CRACK_MODELS = ["crack_cnn"]
CACHED_OUTS = ["data/mnist/raw", "data/mnist/prepared.pt", "data/crack/raw", "data/crack/prepared.pt",
               "models", "reports"]


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


@pytest.fixture(scope="module")
def repo(tmp_path_factory, shared_mnist, shared_crack):
    root = tmp_path_factory.mktemp("repo")
    crack = _crack_slice(shared_crack, tmp_path_factory.mktemp("crack") / "images")
    for name in ("dvc.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    raw = shrunk_params_dict(models=MODELS, epochs=2, train_limit=3000, crack_models=CRACK_MODELS)
    raw["train"]["mnist"]["logreg"]["seeds"] = [12, 13]  # a model with two seeds through the DAG
    raw["download"]["crack"]["source"] = str(crack)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("PIPELINE_GROUP", None)
    env.pop("PIPELINE_MNIST_MIRROR", None)
    env.pop("PIPELINE_CRACK_SOURCE", None)
    _sh(["git", "init", "-q"], root, env)
    _sh(["dvc", "init", "-q"], root, env)
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root, env)
    first = _sh(["dvc", "repro"], root, env)
    return root, env, first


def test_repro_produces_every_declared_output(repo):
    root, env, first = repo
    assert "Running stage 'download@mnist'" in first.stdout
    for model in MODELS:
        metrics = json.loads((root / "metrics" / "mnist" / f"{model}.json").read_text())
        assert 0.5 < metrics["test_accuracy"] <= 1.0
        seeds = [12, 13] if model == "logreg" else [12]
        assert sorted(p.name for p in (root / "models" / "mnist" / model).iterdir()) == [f"seed{s}.pt" for s in seeds]
        assert metrics["seeds"] == len(seeds)
    metrics = json.loads((root / "metrics" / "crack" / "crack_cnn.json").read_text())
    assert 0.5 < metrics["test_accuracy"] <= 1.0 and 0.0 < metrics["threshold"] < 1.0
    prepared = json.loads((root / "data" / "crack" / "prepare_report.json").read_text())
    assert prepared["image_size"] == 32
    report = (root / "reports" / "comparison.md").read_text()
    table_rows = [line for line in report.splitlines() if line.startswith("| ") and "%" in line]
    assert sorted(row.split("|")[1].strip() for row in table_rows) == sorted(MODELS + CRACK_MODELS)
    assert "## CRACK" in report and "crack_cnn: layers at 32x32" in report
    assert (root / "reports" / "figures" / "crack_crack_cnn_roc_pr.png").stat().st_size > 1000
    for png in ("mnist_logreg_curves.png", "mnist_logreg_confusion.png",
                "mnist_keras_cnn2_vs_keras_cnn3_accuracy.png"):
        assert (root / "reports" / "figures" / png).stat().st_size > 1000
        assert f"figures/{png}" in report


def test_mlflow_holds_one_run_per_model_with_identical_metric_names(repo):
    root, env, _ = repo
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    experiment = client.get_experiment_by_name("mnist")
    runs = client.search_runs([experiment.experiment_id])
    assert sorted(r.data.tags["model"] for r in runs) == sorted(MODELS + ["logreg"])  # logreg: 2 seeds
    names = {frozenset(r.data.metrics) for r in runs}
    assert len(names) == 1
    assert {"test_accuracy", "test_loss", "val_accuracy", "train_loss"} <= set(next(iter(names)))
    assert len({r.data.tags["pipeline_group"] for r in runs}) == 1  # grouped as one repro


def test_metrics_show_reports_the_same_figures(repo):
    root, env, _ = repo
    shown = json.loads(_sh(["dvc", "metrics", "show", "--json"], root, env).stdout)
    data = next(iter(shown.values()))["data"]
    for model in MODELS:
        path = f"metrics/mnist/{model}.json"
        on_disk = json.loads((root / path).read_text())
        assert data[path]["data"]["test_accuracy"] == on_disk["test_accuracy"]


def test_second_repro_is_a_no_op(repo):
    root, env, _ = repo
    again = _sh(["dvc", "repro"], root, env)
    assert "Running stage" not in again.stdout
    assert "up to date" in again.stdout
    client = mlflow.MlflowClient(env["MLFLOW_TRACKING_URI"])
    assert len(client.search_runs([client.get_experiment_by_name("mnist").experiment_id])) == len(MODELS) + 1


def test_a_clone_pulls_every_output_from_the_remote_and_reruns_nothing(repo, tmp_path):
    """What a second machine does: push to a shared remote (a local folder here, S3 or SSH the
    same), then with no cache and no outputs, pull instead of recomputing."""
    root, env, _ = repo
    remote = tmp_path / "dvc-remote"
    _sh(["dvc", "remote", "add", "-d", "shared", str(remote)], root, env)
    try:
        _sh(["dvc", "push"], root, env)
        assert any(remote.rglob("*")) and any(p.is_file() for p in remote.rglob("*"))
        shutil.rmtree(root / ".dvc" / "cache")
        # The cached outputs only: metrics (cache: false) stay, as git would carry them.
        for cached_out in CACHED_OUTS:
            (shutil.rmtree if (root / cached_out).is_dir() else os.remove)(root / cached_out)
        assert json.loads(_sh(["dvc", "status", "--json"], root, env).stdout)  # the loss is seen

        _sh(["dvc", "pull"], root, env)
        assert json.loads(_sh(["dvc", "status", "--json"], root, env).stdout) == {}
        assert (root / "models" / "mnist" / "logreg" / "seed13.pt").stat().st_size > 0
        assert (root / "reports" / "index.html").stat().st_size > 0
        again = _sh(["dvc", "repro"], root, env)
        assert "Running stage" not in again.stdout and "up to date" in again.stdout
    finally:
        _sh(["dvc", "remote", "remove", "shared"], root, env)


def test_changing_one_model_reruns_only_that_model_and_the_report(repo):
    root, env, _ = repo
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["train"]["mnist"]["logreg"]["lr"] = 0.02
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    status = json.loads(_sh(["dvc", "status", "--json"], root, env).stdout)
    # Neither the download, the split nor the other models' stages are touched; register@mnist
    # reads train.mnist (its candidates).
    assert sorted(status) == ["evaluate_mnist@logreg", "register@mnist", "report", "train_mnist@logreg"]
