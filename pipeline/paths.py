"""Where each stage reads and writes, relative to the repository root (DVC runs stages there)."""
from __future__ import annotations

from pathlib import Path


def raw_dir(dataset: str) -> Path:
    return Path("data") / dataset / "raw"


def prepared_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepared.pt"


def prepare_report_file(dataset: str) -> Path:
    return Path("data") / dataset / "prepare_report.json"


def checkpoint_file(dataset: str, model: str) -> Path:
    return Path("models") / dataset / f"{model}.pt"


def curves_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "curves" / f"{model}.csv"


def metrics_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / f"{model}.json"


def predictions_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "predictions" / f"{model}.csv"


def reports_dir() -> Path:
    return Path("reports")


def per_class_file(dataset: str, model: str) -> Path:
    return Path("metrics") / dataset / "per_class" / f"{model}.json"


def curve_points_file(dataset: str, kind: str, model: str) -> Path:
    """Points of a test-set curve (kind: roc or pr) for DVC plots."""
    return Path("metrics") / dataset / kind / f"{model}.csv"
