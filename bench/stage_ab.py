"""One stage's wall time under two commits of pipeline/, alternating, on the outputs
of a whole `dvc repro`: what a change to a stage's start-up or bookkeeping saves, read on the
same machine in the same minutes (this machine's speed drifts by more than such a change within
an hour: BENCHMARKS.md, "The report stage").

    python bench/stage_ab.py --workspace ../ci-check --old a8d899d --new HEAD \\
        --stage "evaluate --dataset mnist --model logreg" --rounds 4

The workspace is a clone whose `.venv` has it installed editable (`.ci/run` makes one) and where
`dvc repro` has run; its pipeline/ is swapped for each commit's (git archive of this repository)
and put back at the end. Each round, for each commit: one run to fill the page cache, then two
timed runs of `pipeline STAGE`, each a new process as DVC starts it. Prints every time and the
median per commit, and the ratio new / old.
"""
from __future__ import annotations

import argparse
import os
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402


def export(commit: str, dest: Path) -> Path:
    """pipeline/ as `commit` has it, under dest."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "-C", str(REPO), "archive", commit, "pipeline"], check=True, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive.stdout, check=True)
    return dest / "pipeline"


def timed_runs(workspace: Path, code: Path, stage: list[str], runs: int) -> list[float]:
    """`runs` timed runs of the stage with `code` as the workspace's pipeline/."""
    shutil.rmtree(workspace / "pipeline")
    shutil.copytree(code, workspace / "pipeline")
    env = {**os.environ, "PATH": f"{workspace / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}",
           "MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}", "PIPELINE_GROUP": "bench-stage-ab"}
    times = []
    for k in range(runs + 1):
        start = time.perf_counter()
        proc = subprocess.run(["pipeline", *stage], cwd=workspace, env=env, capture_output=True, text=True)
        if proc.returncode != 0:
            sys.exit(f"`pipeline {' '.join(stage)}` failed:\n{proc.stderr[-3000:]}")
        if k:  # the first fills the page cache
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workspace", type=Path, required=True, help="a clone with its .venv, after `dvc repro`")
    parser.add_argument("--old", required=True, help="the baseline commit")
    parser.add_argument("--new", default="HEAD", help="the changed commit")
    parser.add_argument("--stage", required=True,
                        help='the stage\'s arguments, e.g. "evaluate --dataset mnist --model logreg"')
    parser.add_argument("--rounds", type=int, default=4)
    args = parser.parse_args()
    workspace = args.workspace.resolve()
    stage = shlex.split(args.stage)
    print(machine_info())
    with tempfile.TemporaryDirectory(prefix="stage-ab-") as tmp:
        codes = {name: export(commit, Path(tmp) / name) for name, commit in (("old", args.old), ("new", args.new))}
        times: dict[str, list[float]] = {"old": [], "new": []}
        try:
            for _ in range(args.rounds):
                for name, code in codes.items():
                    times[name] += timed_runs(workspace, code, stage, 2)
                    print(name, " ".join(f"{t:.2f}" for t in times[name][-2:]), flush=True)
        finally:
            subprocess.run(["git", "checkout", "-q", "--", "pipeline"], cwd=workspace, check=True)
    for name, commit in (("old", args.old), ("new", args.new)):
        print(f"{name} ({commit}): {spread(times[name], '.2f')} s (min / median / max of {len(times[name])})")
    print(f"new / old (medians): {statistics.median(times['new']) / statistics.median(times['old']):.2f}")


if __name__ == "__main__":
    main()
