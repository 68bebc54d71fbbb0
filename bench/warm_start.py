"""Stages started cold (a new interpreter, as DVC starts them) against warm (forked from a
pipeline/warm.py template), timed from the command's start to its exit.

    python bench/warm_start.py                  # 3 repeats
    python bench/warm_start.py --repeats 5

A temporary workspace gets the repo's params.yaml with the offline MNIST mirror (../shared/data/
mnist by default) and only MNIST's logreg and cnn1, as they are (params.yaml's recipes), and an
MLflow sqlite store of its own. Each repeat runs every stage below cold, then warm (the same
command with PIPELINE_WARM set): download, prepare, train and evaluate for both models, register.
The templates are started once, before the first repeat (their own start is printed, not
counted: a `dvc repro` or the test suite pays it once). After each run, the outputs it wrote
are compared with the cold run's: the warm fork must write the same bytes (checkpoints, metrics
without their timings).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, add_mnist_argument, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402

MODELS = ("logreg", "cnn1")
STAGES = [("download", ["download", "--dataset", "mnist"]), ("prepare", ["prepare", "--dataset", "mnist"])] + [
    (f"{stage} {model}", [stage, "--dataset", "mnist", "--model", model])
    for model in MODELS for stage in ("train", "evaluate")] + [("register", ["register", "--dataset", "mnist"])]
# What differs between any two runs: timings and the MLflow run each opened.
VARYING = ("train_seconds", "train_seconds_per_epoch", "latency_ms_batch1", "latency_ms_batch256",
           "mlflow_run_id", "run_id", "seconds")


def _digest(value) -> str:
    """A checkpoint's tensors and plain values, without VARYING."""
    if isinstance(value, torch.Tensor):
        return hashlib.sha256(value.contiguous().numpy().tobytes()).hexdigest()
    if isinstance(value, dict):
        return _digest(json.dumps({str(k): _digest(v) for k, v in value.items() if k not in VARYING}, sort_keys=True))
    if isinstance(value, (list, tuple)):
        return _digest(json.dumps([_digest(v) for v in value]))
    return hashlib.sha256(repr(value).encode()).hexdigest()


def outputs(root: Path) -> dict[str, str]:
    """Digest of every output file; checkpoints and metrics without VARYING."""
    digests = {}
    for top in ("data", "models", "metrics"):
        for path in sorted((root / top).rglob("*")):
            if not path.is_file():
                continue
            data = path.read_bytes()
            if path.suffix == ".pt" and "models" in path.parts:
                data = _digest(torch.load(path, weights_only=True)).encode()
            elif path.suffix == ".json":
                data = _digest(json.loads(data)).encode()
            elif path.suffix == ".csv" and "curves" in path.parts:  # each epoch's row has its seconds
                data = b"\n".join(b",".join(row.split(b",")[:-1]) for row in data.splitlines())
            digests[str(path.relative_to(root))] = hashlib.sha256(data).hexdigest()
    return digests


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    add_mnist_argument(parser)
    args = parser.parse_args()
    print(machine_info())
    with tempfile.TemporaryDirectory() as tmp:
        root, warm_dir = Path(tmp) / "ws", Path(tmp) / "warm"
        root.mkdir()
        raw = yaml.safe_load((REPO / "params.yaml").read_text())
        raw["datasets"] = ["mnist"]
        raw["download"]["mnist"]["mirror"] = str(args.mnist.resolve())
        raw["train"]["mnist"] = {m: raw["train"]["mnist"][m] for m in MODELS}
        (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
        env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PIPELINE_"))}
        env |= {"MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}", "PIPELINE_GROUP": "bench-warm-start"}
        t0 = time.perf_counter()
        subprocess.run(["pipeline", "warm", "start", str(warm_dir), "--parent", str(os.getpid())], check=True,
                       env=env, stdout=subprocess.DEVNULL)
        print(f"templates ready in {time.perf_counter() - t0:.1f} s (once per `dvc repro` or test session)")
        modes = {"cold": env, "warm": {**env, "PIPELINE_WARM": str(warm_dir)}}
        times = {(name, mode): [] for name, _ in STAGES for mode in modes}
        for r in range(args.repeats):
            for name, cmd in STAGES:
                written = {}
                for mode, mode_env in modes.items():
                    t0 = time.perf_counter()
                    subprocess.run(["pipeline", *cmd], cwd=root, env=mode_env, check=True,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
                    times[name, mode].append(time.perf_counter() - t0)
                    written[mode] = outputs(root)
                if written["cold"] != written["warm"]:
                    differ = sorted(k for k in written["cold"].keys() | written["warm"].keys()
                                    if written["cold"].get(k) != written["warm"].get(k))
                    sys.exit(f"{name}: the warm run wrote other outputs than the cold one: {differ}")
            print(f"repeat {r + 1}: " + ", ".join(f"{n} {times[n, 'cold'][-1]:.2f}/{times[n, 'warm'][-1]:.2f}s"
                                                  for n, _ in STAGES), flush=True)
        subprocess.run(["pipeline", "warm", "stop", str(warm_dir)], check=True, env=env, stdout=subprocess.DEVNULL)
    print(f"\nmin / median / max over {args.repeats} repeats; every warm run wrote the cold run's outputs\n")
    print("| stage | cold (s) | warm (s) | saved, median (s) |")
    print("|---|---:|---:|---:|")
    total = {mode: 0.0 for mode in modes}
    for name, _ in STAGES:
        cold, warm = sorted(times[name, "cold"]), sorted(times[name, "warm"])
        med = {m: sorted(times[name, m])[len(cold) // 2] for m in modes}
        total = {m: total[m] + med[m] for m in modes}
        print(f"| {name} | {spread(cold, '.2f')} | {spread(warm, '.2f')} | {med['cold'] - med['warm']:.2f} |")
    print(f"| all, medians | {total['cold']:.1f} | {total['warm']:.1f} | {total['cold'] - total['warm']:.1f} "
          f"({1 - total['warm'] / total['cold']:.0%}) |")


if __name__ == "__main__":
    main()
