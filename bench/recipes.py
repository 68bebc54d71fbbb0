"""Recipe search on the validation split: candidate training settings for one model, ranked by
validation accuracy only (the test set is never read).

    python bench/recipes.py --model keras_cnn2 \
        --recipe base: \
        --recipe aug:augment=true,schedule=onecycle,lr=0.003,epochs=12

Each recipe is `name:key=value,...` over the model's entry in params.yaml (values parsed as YAML),
so a chosen recipe is exactly a params.yaml entry. The official training images are split as the
prepare stage splits them (prepare.mnist's val_fraction and seed); `--train-subset` trains on a
stratified subset, as `train_subset` does. Each epoch is validated through the pipeline's own
learner; prints machine info and, per recipe, the validation accuracy of the last epoch (what a
run with patience 0 keeps), the best epoch's, the time per epoch, and appends a JSON line per recipe to
`--log` for BENCHMARKS.md.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from pipeline.config import TrainConfig, load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.data.split import stratified_split, stratified_subset  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.inference import loss_and_accuracy  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def parse_recipe(text: str) -> tuple[str, dict]:
    name, _, body = text.partition(":")
    changes = {}
    for item in filter(None, body.split(",")):
        key, _, value = item.partition("=")
        changes[key.strip()] = yaml.safe_load(value)
    return name, changes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the official *-idx?-ubyte.gz files")
    parser.add_argument("--dataset", default="mnist", choices=["mnist", "crack"])
    parser.add_argument("--prepared", type=Path, default=None,
                        help="a prepare stage's prepared.pt to take train/val from (crack: required)")
    parser.add_argument("--model")
    parser.add_argument("--recipe", action="append", help="name:key=value,...")
    parser.add_argument("--table", action="store_true", help="print --log's rows as a Markdown table and stop")
    parser.add_argument("--seeds", type=int, nargs="+", default=None, help="default: params.yaml's")
    parser.add_argument("--log", type=Path, default=REPO / "bench" / "recipes.jsonl")
    parser.add_argument("--params", type=Path, default=REPO / "params.yaml",
                        help="the params file whose entries and runtime (threads) the recipes change")
    args = parser.parse_args()
    if args.table:
        print_table(args.log)
        return
    if not args.model or not args.recipe:
        parser.error("--model and at least one --recipe are needed (or --table)")

    params = load_params(args.params)
    base = params.train_config(args.dataset, args.model)
    if args.prepared:  # the prepare stage's own splits; its test split is not read
        data = torch.load(args.prepared, weights_only=True)
        images, labels = torch.cat([data["train_x"], data["val_x"]]), torch.cat([data["train_y"], data["val_y"]])
        fit, val = np.arange(len(data["train_y"])), np.arange(len(data["train_y"]), len(labels))
    else:
        images, labels = mnist.load_split(args.mnist, "train")
        fit, val = stratified_split(labels.numpy(), params.prepare.mnist.val_fraction, params.prepare.mnist.seed)
    print(f"machine: {machine_info()}")
    print("| model | recipe | seed | val acc (last) | val acc (best, epoch) | s/epoch |")
    print("|---|---|---:|---:|---:|---:|", flush=True)
    for text in args.recipe:
        name, changes = parse_recipe(text)
        cfg = TrainConfig(**{**dataclasses.asdict(base), "seeds": None, **changes})
        seeds = args.seeds or params.seeds_for(args.dataset, args.model)
        for seed in seeds:
            device = runtime.setup(params.runtime, seed)  # same seed, same initial weights for every recipe
            train = fit
            if cfg.train_subset:
                train = fit[stratified_subset(labels[fit].numpy(), cfg.train_subset, seed)]
            held = val[stratified_subset(labels[val].numpy(), cfg.val_subset, seed)] if cfg.val_subset else val
            learner = build_learner(args.model, args.dataset, cfg, device, seed, params.runtime)
            generator = torch.Generator().manual_seed(seed)
            accuracies, seconds = [], []
            for epoch in range(1, cfg.epochs + 1):
                t0 = time.perf_counter()
                learner.begin_epoch(epoch)
                learner.train_epoch(images[train], labels[train], generator, desc=f"{name} {epoch}")
                seconds.append(time.perf_counter() - t0)
                accuracies.append(loss_and_accuracy(learner.logits(images[held], 1000), labels[held])[1])
                print(f"  {name} seed {seed} epoch {epoch}: val {accuracies[-1]:.4f} ({seconds[-1]:.1f}s)",
                      flush=True)
            best = max(range(len(accuracies)), key=accuracies.__getitem__)
            row = {"dataset": args.dataset, "model": args.model, "recipe": name, "changes": changes, "seed": seed,
                   "config": {k: v for k, v in dataclasses.asdict(cfg).items() if k != "seeds"},
                   "val_last": accuracies[-1], "val_best": accuracies[best], "best_epoch": best + 1,
                   "val_curve": accuracies, "s_per_epoch": statistics.median(seconds),
                   "train_images": len(train), "machine": machine_info()}
            with args.log.open("a") as f:
                f.write(json.dumps(row) + "\n")
            print(f"| {args.model} | {name} | {seed} | {100 * accuracies[-1]:.2f}% | "
                  f"{100 * accuracies[best]:.2f}% ({best + 1}) | {statistics.median(seconds):.1f} |", flush=True)


def print_table(log: Path) -> None:
    """Every recipe tried, per model, best validation accuracy first."""
    rows = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    print("| dataset | model | recipe (changes to the model's params.yaml entry) | train images | epochs | "
          "val acc, last epoch | s/epoch |")
    print("|---|---|---|---:|---:|---:|---:|")
    for r in sorted(rows, key=lambda r: (r.get("dataset", "mnist"), r["model"], -r["val_last"])):
        changes = ", ".join(f"{k}={v}" for k, v in r["changes"].items())
        print(f"| {r.get('dataset', 'mnist')} | {r['model']} | {r['recipe']}: {changes} | {r['train_images']} | "
              f"{len(r['val_curve'])} | {100 * r['val_last']:.2f}% | {r['s_per_epoch']:.1f} |")


if __name__ == "__main__":
    main()
