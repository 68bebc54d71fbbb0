"""Where each stage reads and writes, relative to the repository root (DVC runs stages there)."""
from __future__ import annotations

from pathlib import Path


def raw_dir(dataset: str) -> Path:
    return Path("data") / dataset / "raw"


def prepared_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepared.pt"


def prepare_report_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepare_report.json"


def checkpoint_dir(dataset: str, model: str) -> Path:
    """One best checkpoint per seed of the model (the train stage's output)."""
    return Path("models") / dataset / model


def checkpoint_file(dataset: str, model: str, seed: int) -> Path:
    return checkpoint_dir(dataset, model) / f"seed{seed}.pt"


def curves_dir(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "curves" / model


def curves_file(dataset: str, model: str, seed: int) -> Path:
    return curves_dir(dataset, model) / f"seed{seed}.csv"


def metrics_file(dataset: str, model: str) -> Path:
    """Test metrics of the model: the mean over its seeds (and their spread)."""
    return Path("metrics") / dataset / f"{model}.json"


def seed_metrics_file(dataset: str, model: str) -> Path:
    """Test metrics of each seed's run, with its MLflow run id."""
    return Path("metrics") / dataset / "seeds" / f"{model}.json"


def predictions_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "predictions" / f"{model}.csv"


def reports_dir() -> Path:
    return Path("reports")


def per_class_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "per_class" / f"{model}.json"


def curve_points_file(dataset: str, kind: str, model: str) -> Path:
    """Points of a test-set curve (kind: roc or pr) for DVC plots."""
    return Path("metrics") / dataset / kind / f"{model}.csv"
