"""Seconds per training epoch of crack_cnn recipes, interleaved in one process (issue #25's budget).

    python bench/crack_robust_cost.py --params WS/params.yaml --prepared 64=WS64/data/crack/prepared.pt \
        --prepared 96=WS96/data/crack/prepared.pt --recipe C0@64: \
        --recipe R2-C3@64:normalise=per_image,photometric=true,geometric=true --repeats 3

Each recipe is `name@side:key=value,...` over crack_cnn's params.yaml entry (as bench/recipes.py),
trained on the prepare stage's training split cached at `side`; one epoch of each recipe per
repeat, in turn, so that load from other work falls on all of them alike. Prints min / median /
max seconds per epoch and each median's ratio to the first recipe's. Reads no validation or test
image.
"""
from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from bench.recipes import parse_recipe  # noqa: E402
from pipeline.config import TrainConfig, load_params  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, required=True)
    parser.add_argument("--prepared", action="append", required=True, help="side=path of a prepared.pt")
    parser.add_argument("--recipe", action="append", required=True, help="name@side:key=value,...")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--seed", type=int, default=12)
    args = parser.parse_args()
    params = load_params(args.params)
    base = params.train_config("crack", "crack_cnn")
    prepared = {int(side): path for side, _, path in (p.partition("=") for p in args.prepared)}
    train = {side: torch.load(path, weights_only=True) for side, path in prepared.items()}
    runs = []
    for text in args.recipe:
        label, changes = parse_recipe(text)
        name, _, side = label.partition("@")
        cfg = TrainConfig(**{**dataclasses.asdict(base), "seeds": None, **changes})
        device = runtime.setup(params.runtime, args.seed)
        runs.append((name, int(side), build_learner("crack_cnn", "crack", cfg, device, args.seed, params.runtime)))
    print(f"machine: {machine_info()}")
    seconds = {name: [] for name, _, _ in runs}
    generator = torch.Generator().manual_seed(args.seed)
    for repeat in range(args.repeats):
        for name, side, learner in runs:
            data = train[side]
            t0 = time.perf_counter()
            learner.begin_epoch(repeat + 1)
            learner.train_epoch(data["train_x"], data["train_y"], generator, desc=name)
            seconds[name].append(time.perf_counter() - t0)
    first = statistics.median(seconds[runs[0][0]])
    print("| recipe | side | s/epoch (min / median / max) | ratio to the first |")
    print("|---|---:|---:|---:|")
    for name, side, _ in runs:
        s = seconds[name]
        print(f"| {name} | {side} | {min(s):.2f} / {statistics.median(s):.2f} / {max(s):.2f} | "
              f"{statistics.median(s) / first:.2f} |")


if __name__ == "__main__":
    main()
