"""Fixtures: the real params.yaml shrunk, the real MNIST files from ../shared, a real MLflow store."""
from __future__ import annotations

import copy
import os
from pathlib import Path

import pytest
import yaml

from pipeline.config import Params, merge_overrides, parse_params

REPO = Path(__file__).resolve().parents[1]
SHARED_MNIST = REPO.parent / "shared" / "data" / "mnist"


def real_params_dict() -> dict:
    return yaml.safe_load((REPO / "params.yaml").read_text())


def shrunk_params_dict(models: list[str] | None = None, epochs: int = 1, train_limit: int = 2000,
                       **overrides) -> dict:
    """The real params.yaml with a small stratified slice, few epochs and (optionally) fewer models."""
    raw = copy.deepcopy(real_params_dict())
    if models is not None:
        raw["train"]["mnist"] = {m: raw["train"]["mnist"][m] for m in models}
    merge_overrides(raw, {
        "download": {"mnist": {"mirror": str(SHARED_MNIST)}},
        "prepare": {"mnist": {"train_limit": train_limit}},
        "train": {"mnist": {m: {"epochs": epochs} for m in raw["train"]["mnist"]}},
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


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch) -> str:
    """A real MLflow store (sqlite) in a temp dir, used by every stage through the env var."""
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("PIPELINE_GROUP", "pytest")
    return uri


@pytest.fixture(scope="session")
def prepared_workspace(tmp_path_factory, shared_mnist) -> Path:
    """A workspace where download + prepare ran once on a 2,000-image stratified slice."""
    from pipeline import download, prepare

    ws = tmp_path_factory.mktemp("workspace")
    old = os.getcwd()
    os.chdir(ws)
    try:
        params = shrunk_params()
        download.main(params)
        prepare.main(params)
    finally:
        os.chdir(old)
    return ws


@pytest.fixture
def workspace(prepared_workspace, monkeypatch) -> Path:
    monkeypatch.chdir(prepared_workspace)
    return prepared_workspace
