"""What `runtime.system_metrics` costs a short training stage: the same `pipeline train` with the
machine sampled into its MLflow run (on) and not (off).

    python bench/system_metrics.py                                # logreg, 2 epochs, 8 repeats
    python bench/system_metrics.py --models logreg mlp --epochs 1 --repeats 12

In a temporary workspace prepared from the offline MNIST mirror (the whole 54,000-image training
split, the default sqlite store), each model's `pipeline --params <on|off>.yaml train` runs in a
fresh process, on and off alternately (the order flipped every repeat, so a drift of the
machine's load falls on both); the two params files differ in `runtime.system_metrics` only.
Each run is measured twice: wall time from its start to its exit, and the CPU time of the stage
and its MLflow child together (the sampler runs in the child, on the other core: on a busy
machine the CPU time shows its cost where the wall time drowns it in the neighbours' noise).
Prints the machine and its load, each repeat, then min / median / max of each side and of the
per-repeat ratio on / off, the ratio of the medians, and how many samples the `on` runs logged.

Then the sampler alone, which noise cannot hide: the MLflow child of a stage (RunLog) holding a
run open for `--sampler-seconds` while it is sent one metric a second, as an epoch loop would,
with system metrics on and off; its CPU time read from /proc.
"""
from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from bench.time_to_accuracy import child_env, make_workspace  # noqa: E402


def write_params(root: Path, models: list[str], epochs: int) -> dict[bool, Path]:
    """params files for on and off: the workspace's params.yaml, the models at `epochs` epochs."""
    raw = yaml.safe_load((root / "params.yaml").read_text())
    for model in models:
        raw["train"]["mnist"][model].update(epochs=epochs, patience=0, seeds=[12])
    files = {}
    for on in (True, False):
        raw["runtime"]["system_metrics"] = on
        files[on] = root / f"params-{'on' if on else 'off'}.yaml"
        files[on].write_text(yaml.safe_dump(raw, sort_keys=False))
    return files


def timed_train(root: Path, params: Path, model: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the stage and its MLflow child) of one `pipeline train`."""
    def cpu() -> float:  # the stage waits for its child, so the child's time is in the stage's
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        return usage.ru_utime + usage.ru_stime

    cpu0, t0 = cpu(), time.perf_counter()
    subprocess.run(["pipeline", "--params", str(params), "train", "--dataset", "mnist", "--model", model],
                   cwd=root, env=child_env(), check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - t0, cpu() - cpu0


def sampler_cpu(root: Path, seconds: int, on: bool) -> float:
    """CPU seconds the stage's MLflow child spends while a run of `seconds` is open."""
    from pipeline.tracking.run_log import RunLog

    def cpu(pid: int) -> float:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime

    old = os.getcwd()
    os.chdir(root)
    try:
        with RunLog("mnist") as run_log:
            run_log.start("logreg", {"lr": 0.1}, {"seed": "12"}, system_metrics=on)
            start = cpu(run_log.process.pid)
            for step in range(seconds):
                time.sleep(1)
                run_log.log({"val_accuracy": 0.5}, step)
            run_log.flush()
            spent = cpu(run_log.process.pid) - start
            run_log.end()
    finally:
        os.chdir(old)
    return spent


def samples_logged(root: Path) -> list[int]:
    """Samples of system/cpu_utilization_percentage per training run of the workspace's store that has any."""
    import mlflow

    client = mlflow.MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("mnist").experiment_id], max_results=1000)
    return [len(client.get_metric_history(r.info.run_id, "system/cpu_utilization_percentage"))
            for r in runs if "system/cpu_utilization_percentage" in r.data.metrics and "epochs" in r.data.params]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--models", nargs="+", default=["logreg"])
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=8, help="pairs of trainings; 0: the sampler alone")
    parser.add_argument("--sampler-seconds", type=int, default=20)
    parser.add_argument("--sampler-repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"machine: {machine_info()}")
    print(f"load average before: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        # The sampler alone needs no data: the run's dataset input is skipped without prepared.pt.
        root = make_workspace(Path(tmp), args.mnist, []) if args.repeats else Path(tmp)
        params = write_params(root, args.models, args.epochs) if args.repeats else {}
        os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{root / 'mlflow.db'}"  # the stages' default store
        sampler = {True: [], False: []}
        for _ in range(args.sampler_repeats):
            for on in (True, False):
                sampler[on].append(sampler_cpu(root, args.sampler_seconds, on))
        for model in args.models if args.repeats else []:
            timed_train(root, params[True], model)  # untimed: creates the store's tables, warms the caches
            runs = {True: [], False: []}
            for r in range(args.repeats):
                for on in ((True, False) if r % 2 == 0 else (False, True)):
                    runs[on].append(timed_train(root, params[on], model))
                print(f"{model} repeat {r + 1}: " + ", ".join(
                    f"{'on' if on else 'off'} {runs[on][-1][0]:.2f} s wall, {runs[on][-1][1]:.2f} s CPU"
                    for on in (True, False)), flush=True)
            rows.append((model, runs))
        samples = samples_logged(root)
    print(f"load average after: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")
    extra = [1000 * (a - b) / args.sampler_seconds for a, b in zip(sampler[True], sampler[False])]
    print(f"\nthe MLflow child over a {args.sampler_seconds} s run, CPU seconds, min / median / max over "
          f"{args.sampler_repeats} repeats: on {spread(sampler[True], '.2f')}, off {spread(sampler[False], '.2f')}; "
          f"the sampler: {spread(extra, '.1f')} ms of CPU per second of the run")
    if not args.repeats:
        return
    print(f"\n`pipeline train` ({args.epochs} epochs) in a fresh process; min / median / max over "
          f"{args.repeats} repeats; on: {min(samples)}-{max(samples)} samples per run\n")
    print("| model | measure | system metrics on (s) | off (s) | on over off, per repeat | ratio of the medians |")
    print("|---|---|---:|---:|---:|---:|")
    for model, runs in rows:
        for k, measure in enumerate(("wall, start to exit", "CPU, stage + child")):
            on, off = [r[k] for r in runs[True]], [r[k] for r in runs[False]]
            overhead = [100 * (a / b - 1) for a, b in zip(on, off)]
            ratio = statistics.median(on) / statistics.median(off)
            print(f"| {model} | {measure} | {spread(on, '.2f')} | {spread(off, '.2f')} | "
                  f"{spread(overhead, '+.1f')}% | {ratio:.3f} |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
