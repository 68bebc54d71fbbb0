"""params.yaml `datasets`: which datasets run. Validated with the key named; with [mnist] the real
`dvc repro` (in a temp git repo, on a small slice of the real MNIST) runs no crack stage and needs
no Kaggle credentials, and the crack download's failure says how to run without it."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml

from pipeline import download
from pipeline.config import ConfigError, parse_params
from pipeline.errors import DataError
from tests.conftest import REPO, new_store, real_params_dict, shrunk_params, shrunk_params_dict


def _error(raw) -> str:
    with pytest.raises(ConfigError) as e:
        parse_params(raw)
    return str(e.value)


def test_real_params_run_both_datasets_in_report_order():
    assert parse_params(real_params_dict()).datasets == ("mnist", "crack")


@pytest.mark.parametrize("bad, expected", [
    ([], "a non-empty list"),
    (["mnist", "mnist"], "distinct"),
    (["mnist", "cifar"], "out of mnist, crack"),
    ("mnist", "expected a list"),
])
def test_bad_datasets_are_named_with_the_valid_names(bad, expected):
    raw = real_params_dict()
    raw["datasets"] = bad
    msg = _error(raw)
    assert msg.startswith("params.yaml: datasets") and expected in msg and repr(bad) in msg


def test_datasets_alone_decides_what_runs():
    """`datasets: [mnist]` needs no placeholder: crack's models stay in params.yaml, unused, and
    dvc.yaml as `pipeline stages` writes it has no crack stage at all."""
    from pipeline import stages

    raw = real_params_dict()
    raw["datasets"] = ["mnist"]
    params = parse_params(raw)
    assert params.datasets == ("mnist",) and params.models("crack")
    names = stages.pipeline_yaml(params)["stages"]
    assert "train_mnist" in names and "evaluate_mnist" in names
    assert not [n for n in names if "crack" in n] and "crack" not in stages.render(params)


def test_a_listed_dataset_needs_models():
    raw = real_params_dict()
    raw["train"]["crack"] = {}
    msg = _error(raw)
    assert "datasets lists crack but train.crack has no models" in msg


def test_an_unknown_dataset_under_train_is_named():
    raw = real_params_dict()
    raw["train"]["cifar"] = {}
    assert "train.cifar: unknown dataset; known: mnist, crack" in _error(raw)


def test_a_left_out_dataset_stage_is_refused_without_traceback(tmp_path):
    raw = shrunk_params_dict(models=["logreg"], crack_models=[])
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(raw))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "download", "--dataset", "crack"], cwd=tmp_path,
                          capture_output=True, text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "datasets is ['mnist'], without crack" in proc.stderr
    assert not (tmp_path / "data").exists()


def test_crack_download_failure_says_how_to_run_mnist_alone(tmp_path, monkeypatch):
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "PIPELINE_CRACK_SOURCE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))  # no ~/.kaggle
    monkeypatch.chdir(tmp_path)
    params = shrunk_params(download={"crack": {"source": None}})
    with pytest.raises(DataError) as e:
        download.main(params, "crack")
    assert "no Kaggle credentials" in str(e.value) and "`datasets: [mnist]`" in str(e.value)
    assert not (tmp_path / "data" / "crack" / "raw").exists()


def _sh(cmd: list[str], cwd: Path, env: dict) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed:\n{proc.stdout}\n{proc.stderr}"
    return proc


@pytest.mark.slow
def test_mnist_alone_runs_its_stages_only_without_kaggle_credentials(tmp_path, shared_mnist, empty_store):
    root = tmp_path / "repo"
    new_store(empty_store, root)
    for name in ("dvc.yaml", ".gitignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    raw = shrunk_params_dict(models=["logreg"], crack_models=[], epochs=1, train_limit=500)
    raw["download"]["crack"]["source"] = None  # the Kaggle default: reached, it would fail here
    assert raw["datasets"] == ["mnist"] and raw["train"]["crack"] == {}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
           "HOME": str(tmp_path / "home"),  # no ~/.kaggle
           "PYTHONPATH": str(root),  # the stages run the copy of pipeline/ that DVC hashes
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    for var in ("KAGGLE_USERNAME", "KAGGLE_KEY", "KAGGLE_API_TOKEN", "KAGGLE_CONFIG_DIR", "PIPELINE_GROUP",
                "PIPELINE_MNIST_MIRROR", "PIPELINE_CRACK_SOURCE"):
        env.pop(var, None)
    _sh(["git", "init", "-q"], root, env)
    _sh(["dvc", "init", "-q"], root, env)
    _sh(["git", "add", "-A"], root, env)
    _sh(["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"], root, env)

    listed = _sh(["dvc", "stage", "list", "--name-only"], root, env).stdout.split()
    assert sorted(listed) == ["download@mnist", "evaluate_mnist@logreg", "prepare@mnist", "register@mnist",
                              "report", "train_mnist@logreg"]
    ran = _sh(["dvc", "repro"], root, env).stdout
    assert sorted(line.split("'")[1] for line in ran.splitlines() if line.startswith("Running stage")) == sorted(listed)
    assert not (root / "data" / "crack").exists() and not (root / "metrics" / "crack").exists()

    entry = json.loads((root / "metrics" / "registry" / "mnist.json").read_text())
    assert (entry["name"], entry["model"], entry["uri"]) == ("mnist-classifier", "logreg",
                                                              "models:/mnist-classifier@champion")
    assert not (root / "metrics" / "registry" / "crack.json").exists()
    report = (root / "reports" / "comparison.md").read_text()
    assert "## MNIST" in report and "logreg" in report and "CRACK" not in report
    assert (root / "reports" / "index.html").stat().st_size > 0
    assert json.loads((root / "data" / "mnist" / "prepare_report.json").read_text())["limit"] == 500


def test_the_committed_dvc_yaml_is_what_pipeline_stages_writes():
    """dvc.yaml is generated from params.yaml: a hand edit, or a params change without
    `pipeline stages`, fails here (and CI) rather than run a DAG the params do not describe."""
    from pipeline import stages

    params = parse_params(real_params_dict())
    assert (REPO / "dvc.yaml").read_text() == stages.render(params)


# A dataset kind of a user's own, as its one file: digits stored as one .npz (x: uint8 [N, 28, 28],
# y: labels), copied by download and split by prepare. Nothing of it is in pipeline/.
NPZ_PLUGIN = '''"""Digits from one .npz file: a dataset kind outside the pipeline package."""
from __future__ import annotations

import hashlib
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.data.datasets import Dataset, register_dataset
from pipeline.data.split import stratified_split
from pipeline.errors import DataError, check_seed


@dataclass(frozen=True)
class DownloadConfig:
    source: str  # the .npz file


@dataclass(frozen=True)
class PrepareConfig:
    seed: int = 0

    def __post_init__(self) -> None:
        check_seed(self.seed, "seed")


def download(record, params, target):
    source = Path(params.download.get(record.name).source)
    if not source.is_file():
        raise DataError(f"{source}: not found; set download.{record.name}.source")
    shutil.copyfile(source, Path(target) / "digits.npz")
    return "1 file"


def prepare(record, params, raw):
    import torch

    seed = params.prepare.get(record.name).seed
    with np.load(Path(raw) / "digits.npz") as f:
        x, y = f["x"], f["y"].astype(np.int64)
    rest, test = stratified_split(y, 0.2, seed)
    fit, val = stratified_split(y[rest], 0.25, seed)
    version = hashlib.sha256(x.tobytes() + y.tobytes()).hexdigest()[:12]
    parts = {"train": rest[fit], "val": rest[val], "test": test}
    splits = {f"{part}_{k}": torch.from_numpy(np.ascontiguousarray(a[index]))
              for part, index in parts.items() for k, a in (("x", x), ("y", y))}
    return {**splits, "data_version": version}, {"data_version": version,
                                                 "splits": {p: len(i) for p, i in parts.items()}}


def image_side(record, params):
    return 28


def decode(record, data, params):
    from pipeline.data.images import decode_image

    return decode_image(data, 28)


DATASET = register_dataset(Dataset(
    "npzdigits", sys.modules[__name__], {"download": DownloadConfig, "prepare": PrepareConfig},
    fixed_class_names=tuple(str(d) for d in range(10)), fixed_binary=False,
    fixed_normalisation=(0.1307, 0.3081)))
'''


def test_a_dataset_kind_is_one_file_plus_its_params_lines(tmp_path, shared_mnist, empty_store):
    """A user's package holds one module registering a new kind (digits in a .npz, 600 real MNIST
    test digits); params.yaml lists it under `plugins` and gives its sections: the real
    download, prepare and train stages, each its own process, run on it."""
    from pipeline.data.mnist import read_idx

    package = tmp_path / "site" / "my_datasets"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text("")
    (package / "npz_digits.py").write_text(NPZ_PLUGIN)
    x = read_idx(shared_mnist / "t10k-images-idx3-ubyte.gz")[:600]
    y = read_idx(shared_mnist / "t10k-labels-idx1-ubyte.gz")[:600]
    np.savez(tmp_path / "digits.npz", x=x, y=y)

    root = tmp_path / "repo"
    new_store(empty_store, root)
    raw = shrunk_params_dict(models=["logreg"], crack_models=[])
    raw["plugins"] = ["my_datasets.npz_digits"]
    raw["datasets"] = ["npzdigits"]
    raw["download"]["npzdigits"] = {"source": str(tmp_path / "digits.npz")}
    raw["prepare"]["npzdigits"] = {"seed": 3}
    raw["train"]["npzdigits"] = {"logreg": raw["train"]["mnist"]["logreg"]}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(tmp_path / "site")]),
           "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    env.pop("PIPELINE_GROUP", None)  # a stage of its own, started here
    for stage in (["download", "--dataset", "npzdigits"], ["prepare", "--dataset", "npzdigits"],
                  ["train", "--dataset", "npzdigits", "--model", "logreg"]):
        _sh([sys.executable, "-m", "pipeline", *stage], root, env)

    assert (root / "data" / "npzdigits" / "raw" / "digits.npz").read_bytes() == (tmp_path / "digits.npz").read_bytes()
    report = json.loads((root / "data" / "npzdigits" / "prepare_report.json").read_text())
    assert report["splits"] == {"train": 360, "val": 120, "test": 120}
    assert list((root / "models" / "npzdigits" / "logreg").glob("seed*.pt"))
    assert not (root / "data" / "mnist").exists()


def test_a_plugin_that_cannot_be_imported_is_named():
    raw = real_params_dict()
    raw["plugins"] = ["no_such_package.digits"]
    msg = _error(raw)
    assert msg.startswith("params.yaml: plugins: cannot import 'no_such_package.digits'") and "PYTHONPATH" in msg
    raw["plugins"] = "my_datasets.digits"
    assert "expected a list of module names" in _error(raw)
