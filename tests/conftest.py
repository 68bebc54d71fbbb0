"""Fixtures: the real params.yaml shrunk, the real MNIST and crack files from ../shared, a real MLflow store."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, merge_overrides, parse_params

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"
SHARED_CRACK = REPO.parent / "shared" / "data" / "crack"


def real_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def shrunk_params_dict(models: list[str] | None = None, epochs: int = 1, train_limit: int = 2000,
                       crack_models: list[str] | None = None, **overrides) -> dict:
    """The real params.yaml with small stratified slices, few epochs and (optionally) fewer models.

    Crack: 400 images of the shared subset cached at 32x32, read by every model at 32, and
    no ImageNet weights (none can be fetched here). One seed per model (the top-level `seeds`)
    unless a test asks for more.
    """
    raw = copy.deepcopy(real_params_dict())
    if models is not None:
        raw["train"]["mnist"] = {m: raw["train"]["mnist"][m] for m in models}
    if crack_models is not None:
        raw["train"]["crack"] = {m: raw["train"]["crack"][m] for m in crack_models}
    if crack_models == []:  # a dataset without models is left out (params.yaml `datasets`)
        raw["datasets"] = ["mnist"]
    merge_overrides(raw, {
        "download": {"mnist": {"mirror": str(SHARED_MNIST)}, "crack": {"source": str(SHARED_CRACK)}},
        "prepare": {"mnist": {"train_limit": train_limit}, "crack": {"limit": 400, "image_size": 32}},
        "train": {
            "mnist": {m: {"epochs": epochs, "seeds": None} for m in raw["train"]["mnist"]},
            "crack": {m: {"epochs": epochs, "seeds": None, "pretrained": False, "input_size": 32,
                          # progressive needs an epoch on the head and one on everything
                          **({"epochs": max(2, epochs), "head_epochs": 1} if "head_epochs" in cfg else {})}
                      for m, cfg in raw["train"]["crack"].items()},
        },
    })
    merge_overrides(raw, overrides)
    return raw


def shrunk_params(**kwargs) -> Params:
    return parse_params(shrunk_params_dict(**kwargs), source="test params")


@pytest.fixture(scope="session")
def shared_mnist() -> Path:
    if not (SHARED_MNIST / "train-images-idx3-ubyte.gz").exists():
        pytest.fail(f"the real MNIST files are expected in {SHARED_MNIST} (../shared beside the repo)")
    return SHARED_MNIST


@pytest.fixture(scope="session")
def shared_crack() -> Path:
    if not all((SHARED_CRACK / cls).is_dir() for cls in ("Positive", "Negative")):
        pytest.fail(f"the real crack images are expected in {SHARED_CRACK}/Positive and /Negative "
                    "(../shared beside the repo)")
    return SHARED_CRACK


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A real MLflow store (sqlite) in a temp dir, used by every stage through the env var."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_GROUP", "pytest")
    return uri


@pytest.fixture(scope="session")
def prepared_workspace(tmp_path_factory, shared_mnist, shared_crack) -> Path:
    """A workspace where download + prepare ran once: MNIST on a 2,000-image stratified slice,
    crack on 400 images at 32x32."""
    from pipeline import download, prepare

    ws = tmp_path_factory.mktemp("workspace")
    old = os.getcwd()
    os.chdir(ws)
    try:
        params = shrunk_params()
        for dataset in ("mnist", "crack"):
            download.main(params, dataset)
            prepare.main(params, dataset)
    finally:
        os.chdir(old)
    return ws


@pytest.fixture
def workspace(prepared_workspace, monkeypatch) -> Path:
    monkeypatch.chdir(prepared_workspace)
    return prepared_workspace
