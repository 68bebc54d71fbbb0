"""`pipeline train --dataset mnist --model MODEL` with MLflow on or off, as bench/pipeline_overhead.py
times it:

    python bench/train_child.py MODEL on|off      # in a workspace with prepared MNIST

A script of its own so that the measured process imports what the `pipeline` command imports and
nothing more: torch comes after the MLflow child is started, as in the real command.
"""
from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class NoRunLog:
    """pipeline.tracking.run_log.RunLog's calls, doing nothing: no child process, no mlflow."""

    def __init__(self, dataset: str) -> None:
        pass

    def __enter__(self) -> "NoRunLog":
        return self

    def __exit__(self, *exc) -> None:
        pass

    def start(self, *args) -> str:
        return "off"

    def log(self, *args) -> None:
        pass

    flush = end = log


def child_train(model: str, tracking_on: bool) -> None:
    """`pipeline train --dataset mnist --model M` in this process, MLflow on or off."""
    from pipeline import cli, speedups
    from pipeline.tracking import run_log

    if not tracking_on:
        from pipeline import train  # torch; on, it comes after the child is started, as in the command

        def refuse(self, *args) -> None:
            raise AssertionError("MLflow off, yet a pipeline.tracking.run_log child was started")

        run_log.RunLog.__init__ = refuse  # for any reference to the class taken before this
        run_log.RunLog = train.RunLog = NoRunLog
    code = cli.main(["train", "--dataset", "mnist", "--model", model])
    # On, mlflow lives in the run_log child: the training process must not import it either way.
    assert "mlflow" not in sys.modules, "the training process imported mlflow"
    speedups.exit_now(code)  # as the `pipeline` command exits


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[2] not in ("on", "off"):
        sys.exit(__doc__)
    child_train(sys.argv[1], sys.argv[2] == "on")
