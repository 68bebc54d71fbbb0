"""What every script in bench/ shares: the offline MNIST argument and the min / median / max cell."""
from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def add_mnist_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the four official MNIST .gz files")


def spread(values: list[float], fmt: str) -> str:
    """'min / median / max' of the repeats, each formatted with `fmt`."""
    return " / ".join(format(v, fmt) for v in (min(values), statistics.median(values), max(values)))


def loader_epoch(model, optimizer, loss_fn, loader) -> float:
    """Seconds of one epoch of the reference loops: batches from a DataLoader, then the step."""
    model.train()
    t0 = time.perf_counter()
    for x, y in loader:
        optimizer.zero_grad()
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0
