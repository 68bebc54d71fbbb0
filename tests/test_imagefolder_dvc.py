"""The whole DAG on a user's image folder: a temp git repo whose params.yaml declares `decks` (no
prepare section), the 200 real SDNET2018 deck photos sorted into cracked/ and sound/; `pipeline stages` writes dvc.yaml
from params.yaml (no hand edit), `dvc repro` trains two registered models (lab-C's crack CNN and
cnn1, an MNIST CNN read at its own 28 px), and the report, the registry's champion and
`pipeline predict` all work on it."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from pipeline.data.imagefolder import ImageFolderPrepareConfig
from tests.conftest import REPO, new_store
from tests.test_dvc_pipeline import _commit, _env, _sh
from tests.test_imagefolder import deck_photos, folder_params_dict

pytestmark = pytest.mark.slow
MODELS = ["crack_cnn", "cnn1"]


@pytest.fixture(scope="module")
def built(tmp_path_factory, empty_store):
    source = tmp_path_factory.mktemp("photos") / "decks"
    for cls, folder in (("cracked", "CD"), ("sound", "UD")):
        (source / cls).mkdir(parents=True)
        for src in deck_photos(folder):
            shutil.copyfile(src, source / cls / src.name)
    root = tmp_path_factory.mktemp("built") / "repo"
    new_store(empty_store, root)
    for name in (".gitignore", "pyproject.toml"):
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "pipeline", root / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    raw = folder_params_dict(source)
    # As README's own-images example: no prepare section, its settings all defaults.
    del raw["prepare"]["decks"]
    raw["train"]["decks"] = {m: {**cfg, "epochs": 3} for m, cfg in raw["train"]["decks"].items()}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = _env(root)
    _sh([sys.executable, "-m", "pipeline", "stages"], root, env)
    _sh(["git", "init", "-q"], root, env)
    _sh(["dvc", "init", "-q"], root, env)
    _commit(root, env, "init")
    first = _sh(["dvc", "repro"], root, env)
    return root, env, first, source


def test_a_declared_folder_gets_its_stages_from_params_alone(built):
    root, _, first, _ = built
    stages = yaml.safe_load((root / "dvc.yaml").read_text())["stages"]
    assert {"train_decks", "evaluate_decks"} <= set(stages) and not [s for s in stages if "mnist" in s or "crack" in s]
    for stage in ("download@decks", "prepare@decks", "train_decks@crack_cnn", "evaluate_decks@cnn1",
                  "register@decks", "report"):
        assert f"Running stage '{stage}'" in first.stdout
    assert (root / "dvc.lock").is_file()
    assert "decks" not in yaml.safe_load((root / "params.yaml").read_text())["prepare"]


def test_report_and_champion_cover_both_models(built):
    root, _, _, _ = built
    prepared = json.loads((root / "data" / "decks" / "prepare_report.json").read_text())
    assert prepared["classes"] == ["cracked", "sound"] and prepared["decoded"] == 200
    assert prepared["image_size"] == ImageFolderPrepareConfig().image_size  # the default side
    for model in MODELS:
        metrics = json.loads((root / "metrics" / "decks" / f"{model}.json").read_text())
        assert 0.5 <= metrics["test_accuracy"] <= 1.0 and 0.0 < metrics["threshold"] < 1.0  # binary: 2 classes
        assert (root / "metrics" / "decks" / "roc" / f"{model}.csv").is_file()
    report = (root / "reports" / "comparison.md").read_text()
    section = report[report.index("## DECKS"):]
    rows = {line.split("|")[1].strip() for line in section.splitlines() if line.startswith("| ") and "%" in line}
    assert set(MODELS) <= rows
    champion = json.loads((root / "metrics" / "registry" / "decks.json").read_text())
    assert champion["uri"] == "models:/decks-classifier@champion" and champion["model"] in MODELS
    assert champion["selected_on"] == "validation"


def test_predict_classifies_the_folders_files_with_its_class_names(built):
    root, env, _, source = built
    files = [str(p) for p in sorted((source / "cracked").iterdir())[:3] + sorted((source / "sound").iterdir())[:3]]
    proc = _sh([sys.executable, "-m", "pipeline", "predict", "--dataset", "decks", "--json", *files], root, env)
    answer = json.loads(proc.stdout)
    assert answer["model_uri"] == "models:/decks-classifier@champion"
    assert [p["file"] for p in answer["predictions"]] == files
    assert {p["class"] for p in answer["predictions"]} <= {"cracked", "sound"}
    assert all(0.0 <= p["probability"] <= 1.0 for p in answer["predictions"])


def test_a_dataset_added_without_pipeline_stages_is_named_by_the_report(built, tmp_path):
    root, env, _, _ = built
    raw = yaml.safe_load((root / "params.yaml").read_text())
    raw["datasets"] = ["decks", "mnist"]
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw, sort_keys=False))
    proc = subprocess.run([sys.executable, "-m", "pipeline", "--params", str(params), "report"], cwd=root, env=env,
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "no stages for mnist" in proc.stderr and "pipeline stages" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert Path(root / "reports").is_dir()
