"""What the pipeline costs around the training itself: `dvc repro` with nothing to do, MLflow,
a stage's start-up and exit.

    python bench/pipeline_overhead.py dvc --workspace ../ci-check   # a repo where `dvc repro` ran
    python bench/pipeline_overhead.py mlflow --models mlp keras_cnn2 --repeats 5
    python bench/pipeline_overhead.py startup --repeats 5

dvc: in a workspace whose pipeline is up to date, `dvc repro` (nothing to run: DVC hashes the
deps and outs, finds them unchanged and stops), interleaved with `dvc --version` (DVC's own
start-up, the floor of any dvc command) and `dvc status`.

mlflow: the same `pipeline train` in a fresh process, each time timed from the process start to
its exit, with MLflow on (the default sqlite store, in a temporary workspace prepared from the
offline MNIST mirror, kept by the `pipeline.tracking.run_log` child process) and off (the same command
with that child replaced by no-ops: no child process, no store check, no mlflow; see
bench/train_child.py). Models keep their params.yaml settings except those named by --recipe,
which take bench/time_to_accuracy.py's recipe for that model.

startup: fresh `python -c` processes timed from start to exit, in pairs: torch's
use_deterministic_algorithms (which imports torch._inductor) against
pipeline.speedups.deterministic_algorithms, and the interpreter's exit with a stage's modules
imported against pipeline.speedups.exit_now's os._exit.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.time_to_accuracy import RECIPES, child_env, make_workspace  # noqa: E402


def timed(cmd: list[str], cwd: Path, env: dict | None = None) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0


def bench_dvc(workspace: Path, repeats: int) -> None:
    status = subprocess.run(["dvc", "status", "--quiet"], cwd=workspace)
    if status.returncode != 0:
        sys.exit(f"{workspace}: `dvc status` reports changes; run `dvc repro` there first")
    commands = {"dvc --version": ["dvc", "--version"], "dvc status": ["dvc", "status"],
                "dvc repro (nothing changed)": ["dvc", "repro"]}
    times = {name: [] for name in commands}
    for r in range(repeats):
        for name, cmd in commands.items():
            times[name].append(timed(cmd, workspace))
        print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)
    stages = subprocess.run(["dvc", "stage", "list", "--name-only"], cwd=workspace, capture_output=True,
                            text=True, check=True).stdout.split()
    print(f"\n{workspace.resolve()}: {len(stages)} stages; min / median / max over {repeats} repeats\n")
    print("| command | wall (s) | over `dvc --version` (s) |")
    print("|---|---:|---:|")
    for name, values in times.items():
        extra = [v - f for v, f in zip(values, times["dvc --version"])]
        print(f"| `{name}` | {spread(values, '.2f')} | {spread(extra, '+.2f')} |")


def bench_mlflow(mirror: Path, models: list[str], recipes: list[str], repeats: int) -> None:
    print(f"machine: {machine_info()}")
    chosen = {RECIPES[name][0]: name for name in recipes}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp), mirror, recipes)
        env = child_env()
        run = lambda model, on: timed(  # noqa: E731
            [sys.executable, str(Path(__file__).resolve().parent / "train_child.py"), model, "on" if on else "off"],
            root, env)
        for model in models:
            run(model, True)  # untimed: the first run creates the sqlite store's tables
            on, off = [], []
            for r in range(repeats):
                on.append(run(model, True))
                off.append(run(model, False))
                print(f"{model} repeat {r + 1}: MLflow on {on[-1]:.2f}s, off {off[-1]:.2f}s", flush=True)
            rows.append((model, chosen.get(model, "params.yaml"), on, off))
    print(f"\nwall time of `pipeline train` from process start to exit; min / median / max over "
          f"{repeats} repeats\n")
    print("| model | settings | MLflow on (s) | MLflow off (s) | on over off |")
    print("|---|---|---:|---:|---:|")
    for model, settings, on, off in rows:
        overhead = [100 * (a / b - 1) for a, b in zip(on, off)]
        print(f"| {model} | {settings} | {spread(on, '.2f')} | {spread(off, '.2f')} | {spread(overhead, '+.1f')}% |")


# Fresh processes, in pairs: a stage's start-up and exit as torch and Python would do them, and
# as pipeline.speedups does them.
STARTUP = {
    "deterministic algorithms": (
        "import torch; torch.use_deterministic_algorithms(True)",
        "import torch; from pipeline import speedups; speedups.deterministic_algorithms()"),
    "exit, train stage imported": ("import pipeline.train", "import os, pipeline.train; os._exit(0)"),
    "exit, evaluate stage imported": ("import pipeline.evaluate", "import os, pipeline.evaluate; os._exit(0)"),
}


def bench_startup(repeats: int) -> None:
    print(f"machine: {machine_info()}")
    repo = Path(__file__).resolve().parents[1]
    times = {(name, side): [] for name in STARTUP for side in (0, 1)}
    for r in range(repeats):
        for name, pair in STARTUP.items():
            for side, code in enumerate(pair):
                times[name, side].append(timed([sys.executable, "-c", code], repo))
    print(f"\nwall time of a fresh `python -c ...`; min / median / max over {repeats} repeats\n")
    print("| what | torch / Python (s) | pipeline (s) | saved (s) |")
    print("|---|---:|---:|---:|")
    for name in STARTUP:
        plain, ours = times[name, 0], times[name, 1]
        print(f"| {name} | {spread(plain, '.2f')} | {spread(ours, '.2f')} | "
              f"{spread([a - b for a, b in zip(plain, ours)], '.2f')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    p = sub.add_parser("dvc", help="`dvc repro` with nothing changed")
    p.add_argument("--workspace", type=Path, default=Path.cwd(), help="a repo where `dvc repro` has run")
    p.add_argument("--repeats", type=int, default=5)
    p = sub.add_parser("mlflow", help="`pipeline train` with MLflow on and off")
    add_mnist_argument(p)
    p.add_argument("--models", nargs="+", default=["mlp", "keras_cnn2"])
    p.add_argument("--recipes", nargs="*", default=["cnn2_3ep"], choices=list(RECIPES),
                   help="bench/time_to_accuracy.py recipes replacing their model's settings")
    p.add_argument("--repeats", type=int, default=3)
    p = sub.add_parser("startup", help="a stage's start-up and exit, as torch and Python do them and as we do")
    p.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    if args.what == "dvc":
        bench_dvc(args.workspace, args.repeats)
    elif args.what == "startup":
        bench_startup(args.repeats)
    else:
        bench_mlflow(args.mnist, args.models, args.recipes, args.repeats)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
