"""Wall time from `pipeline train` start to 99.0% MNIST test accuracy, against the bare compute.

    python bench/time_to_accuracy.py                         # every recipe of RECIPES, 3 repeats
    python bench/time_to_accuracy.py --recipes cnn2_3ep --repeats 5

A temporary workspace gets the repo's params.yaml with the offline MNIST mirror (../shared/data/
mnist by default), then `pipeline download` and `pipeline prepare` (not timed). Each recipe is
a registry model with its own batch size, one-cycle lr and number of epochs (RECIPES below:
params.yaml's own settings for these models train for minutes, not seconds). Per repeat, both
sides in turn:

- pipeline: `pipeline train --dataset mnist --model M` in a child process, timed from its start
  to its exit: Python start-up, imports, the MLflow run (sqlite store in the workspace), loading
  the prepared data, every epoch with its validation pass, the checkpoint and the curves. The
  checkpoint's test accuracy is then computed (not timed) on the 10,000 official test images.
- bare: the same model, optimiser, schedule, seed and batches as a plain loop over the
  normalised training split already in memory, timed from the first step to the last: the
  compute alone, no start-up, no validation, no logging.

The pipeline's run is deterministic on a CPU, so its test accuracy is the same in every repeat.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.config import Params, load_params  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.inference import loss_fn, predict_logits, predicted_classes  # noqa: E402
from pipeline.engine.learners import build_learner, build_optimizer, build_scheduler  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 0.99
# name: (model, train settings replacing params.yaml's). Chosen on the validation split by a rule
# fixed beforehand (BENCHMARKS.md, "Time to 99.0%"): the cheapest candidate of bench/recipes.py
# whose mean validation accuracy over seeds 12 and 13 is at least 99.1%. The test accuracy this
# script prints then chose nothing.
ONECYCLE = {"optimizer": "adam", "schedule": "onecycle", "patience": 0}
RECIPES = {
    "cnn2_3ep": ("cnn2", {**ONECYCLE, "augment": False, "batch_size": 256, "lr": 0.005, "epochs": 3}),
}


def make_workspace(root: Path, mirror: Path, recipes: list[str]) -> Path:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["download"]["mnist"]["mirror"] = str(mirror.resolve())
    for name in recipes:
        model, settings = RECIPES[name]
        raw["train"]["mnist"][model] = {**raw["train"]["mnist"][model], **settings}
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for stage in ("download", "prepare"):
        subprocess.run(["pipeline", stage, "--dataset", "mnist"], cwd=root, check=True, env=child_env(),
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return root


def child_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "PIPELINE_"))}
    return {**env, "PIPELINE_GROUP": "bench-time-to-accuracy"}


def pipeline_run(root: Path, params: Params, model: str) -> tuple[float, float]:
    """(wall seconds of `pipeline train`, test accuracy of its checkpoint)."""
    t0 = time.perf_counter()
    subprocess.run(["pipeline", "train", "--dataset", "mnist", "--model", model], cwd=root, check=True,
                   env=child_env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    seconds = time.perf_counter() - t0
    seed = params.seeds_for("mnist", model)[0]
    checkpoint = torch.load(root / "models" / "mnist" / model / f"seed{seed}.pt", weights_only=True)
    learner = build_learner(model, "mnist", params.train_config("mnist", model), torch.device("cpu"), seed,
                            params.runtime)
    learner.load_state_dict(checkpoint["state_dict"])
    data = torch.load(root / "data" / "mnist" / "prepared.pt", weights_only=True)
    logits = predict_logits(learner.model, data["test_x"], learner.preset, params.runtime.eval_batch_size,
                            learner.accel)
    return seconds, (predicted_classes(logits) == data["test_y"]).float().mean().item()


def bare_run(params: Params, model: str, images: torch.Tensor, labels: torch.Tensor) -> float:
    """Seconds of the recipe's optimisation steps alone, over inputs normalised in memory."""
    cfg = params.train_config("mnist", model)
    seed = params.seeds_for("mnist", model)[0]
    device = runtime.setup(dataclasses.replace(params.runtime, device="cpu"), seed)
    learner = build_learner(model, "mnist", cfg, device, seed, params.runtime)  # same weights, layout
    inputs = learner.prepared_inputs(images)
    net, generator = learner.model.train(), torch.Generator().manual_seed(seed)
    optimizer = build_optimizer(net.parameters(), cfg, cfg.lr)
    steps = range(0, len(images), cfg.batch_size)
    scheduler = build_scheduler(optimizer, cfg, len(steps))
    t0 = time.perf_counter()
    for _ in range(cfg.epochs):
        order = torch.randperm(len(images), generator=generator)
        for start in steps:
            idx = order[start:start + cfg.batch_size]
            loss = loss_fn(net(learner.accel.model_input(inputs[idx])), labels[idx])
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if shutil.which("pipeline") is None:
        sys.exit("`pipeline` is not on PATH: activate the project's .venv first")

    with tempfile.TemporaryDirectory() as tmp:
        root = make_workspace(Path(tmp), args.mnist, args.recipes)
        params = load_params(root / "params.yaml")
        runtime.setup(dataclasses.replace(params.runtime, device="cpu"), params.seeds[0])
        print(f"machine: {machine_info()}")
        data = torch.load(root / "data" / "mnist" / "prepared.pt", weights_only=True)
        rows = []
        for name in args.recipes:
            model = RECIPES[name][0]
            walls, bares, accuracy = [], [], None
            for r in range(args.repeats):
                wall, accuracy = pipeline_run(root, params, model)
                walls.append(wall)
                bares.append(bare_run(params, model, data["train_x"], data["train_y"]))
                print(f"{name} repeat {r + 1}: pipeline train {wall:.1f}s (test accuracy {accuracy:.4f}), "
                      f"bare {bares[-1]:.1f}s", flush=True)
            rows.append((name, params.train_config("mnist", model), walls, bares, accuracy))

    print(f"\n{len(data['train_y']):,} training images per epoch, {torch.get_num_threads()} torch threads; "
          f"min / median / max over {args.repeats} repeats\n")
    print("| recipe | model | batch, peak lr, epochs | `pipeline train` wall (s) | bare steps (s) | "
          "pipeline / bare | test accuracy | reaches 99.0% |")
    print("|---|---|---|---:|---:|---:|---:|---|")
    for name, cfg, walls, bares, accuracy in rows:
        ratio = [w / b for w, b in zip(walls, bares)]
        print(f"| {name} | {RECIPES[name][0]} | {cfg.batch_size}, {cfg.lr:g} one-cycle, {cfg.epochs} | "
              f"{spread(walls, '.1f')} | {spread(bares, '.1f')} | {spread(ratio, '.2f')}x | {accuracy:.2%} | "
              f"{'yes' if accuracy >= TARGET else 'no'} |")


if __name__ == "__main__":
    main()
