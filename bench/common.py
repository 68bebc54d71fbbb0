"""What every script in bench/ shares: the offline MNIST argument and the min / median / max cell."""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_mnist_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the four official MNIST .gz files")


def spread(values: list[float], fmt: str) -> str:
    """'min / median / max' of the repeats, each formatted with `fmt`."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))
