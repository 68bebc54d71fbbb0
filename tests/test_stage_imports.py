"""Each stage imports only what it uses: `pipeline download` neither torch, the model zoo nor mlflow,
`pipeline prepare` (which saves tensors with torch) neither the zoo nor mlflow.

A process's imports are the point, so each stage runs in a new interpreter, on a real MNIST slice.
"""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import yaml

from tests.conftest import shrunk_params_dict

# Runs the CLI as `pipeline` does, then names the heavy modules the stage left imported.
PROBE = """
import json, sys
from pipeline import cli
code = cli.main(sys.argv[1:])
heavy = sorted(m for m in sys.modules if m in ("torch", "mlflow") or m.startswith("pipeline.models"))
print(json.dumps({"code": code, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def mnist_folder(tmp_path_factory, shared_mnist):
    folder = tmp_path_factory.mktemp("imports")
    raw = shrunk_params_dict(models=["logreg"], crack_models=[])
    (folder / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    return folder


def _heavy_imports(folder, *argv: str) -> list[str]:
    proc = subprocess.run([sys.executable, "-c", PROBE, *argv], cwd=folder, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads(proc.stdout.splitlines()[-1])
    assert result["code"] == 0, proc.stderr[-3000:]
    return result["heavy"]


def test_download_imports_no_torch_no_model_and_no_mlflow(mnist_folder):
    assert _heavy_imports(mnist_folder, "download", "--dataset", "mnist") == []
    assert (mnist_folder / "data" / "mnist" / "raw").is_dir()  # it did download


def test_prepare_imports_no_model_and_no_mlflow(mnist_folder):
    if not (mnist_folder / "data" / "mnist" / "raw").is_dir():
        _heavy_imports(mnist_folder, "download", "--dataset", "mnist")
    assert [m for m in _heavy_imports(mnist_folder, "prepare", "--dataset", "mnist") if m != "torch"] == []
    assert (mnist_folder / "data" / "mnist" / "prepared.pt").is_file()
