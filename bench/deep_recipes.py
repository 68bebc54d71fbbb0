"""Which training recipe each deep model gets: candidate recipes on the same MNIST subset.

    python bench/deep_recipes.py                                  # every model, every recipe
    python bench/deep_recipes.py --models vgg16 --recipes lab_a sgd_onecycle --train 5000

The official training images (../shared/data/mnist by default) are split as the prepare stage
splits them (params.yaml's val_fraction and seed); each model trains on a stratified subset of
`--train` images and is scored on a stratified subset of `--val` validation images after every
epoch, through the pipeline's own learner, so a recipe here is exactly a params.yaml entry.
Prints machine info and a Markdown table: best validation accuracy, its epoch, and the median
epoch time. The test set is not read. params.yaml's recipes cite this script's results.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.machine import machine_info  # noqa: E402
from pipeline import runtime  # noqa: E402
from pipeline.config import TrainConfig, load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.data.split import stratified_split, stratified_subset  # noqa: E402
from pipeline.inference import loss_and_accuracy  # noqa: E402
from pipeline.learners import build_learner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
BASE = dict(momentum=0.0, weight_decay=0.0, batch_size=128, patience=0)
# lab-A trained VGG-16 and ResNet-50 with Adam 1e-3 at a constant lr; the others are the
# course's "good practice" list: SGD 0.9 momentum or Adam, a schedule, weight decay, augmentation.
RECIPES = {
    "lab_a": dict(optimizer="adam", lr=1e-3),
    "adam_onecycle": dict(optimizer="adam", lr=1e-3, schedule="onecycle"),
    "adam_1e-4": dict(optimizer="adam", lr=1e-4),
    "adam_1e-4_onecycle": dict(optimizer="adam", lr=1e-4, schedule="onecycle"),
    "sgd_0.01_onecycle": dict(optimizer="sgd", lr=0.01, momentum=0.9, nesterov=True, weight_decay=5e-4,
                              schedule="onecycle"),
    "sgd_onecycle": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                         schedule="onecycle"),
    "sgd_onecycle_aug": dict(optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True, weight_decay=5e-4,
                             schedule="onecycle", augment=True),
    "adam_onecycle_aug": dict(optimizer="adam", lr=1e-3, schedule="onecycle", augment=True),
    "adamw_onecycle": dict(optimizer="adamw", lr=1e-3, weight_decay=0.05, schedule="onecycle"),
}
MODELS = ["tiny_vgg", "tiny_resnet", "vgg16", "resnet50"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mnist", type=Path, default=REPO.parent / "shared" / "data" / "mnist",
                        help="folder with the official *-idx?-ubyte.gz files")
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--recipes", nargs="+", default=list(RECIPES), choices=list(RECIPES))
    parser.add_argument("--train", type=int, default=3000, help="training images (stratified)")
    parser.add_argument("--val", type=int, default=1000, help="validation images (stratified)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--input-size", type=int, default=32)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    seed = params.seeds[0]
    device = runtime.setup(params.runtime, seed)
    images, labels = mnist.load_split(args.mnist, "train")
    fit, val = stratified_split(labels.numpy(), params.prepare.mnist.val_fraction, params.prepare.mnist.seed)
    fit = fit[stratified_subset(labels[fit].numpy(), args.train, seed)]
    val = val[stratified_subset(labels[val].numpy(), args.val, seed)]
    train_x, train_y, val_x, val_y = images[fit], labels[fit], images[val], labels[val]

    print(f"machine: {machine_info()}")
    print(f"MNIST: {len(fit)} training / {len(val)} validation images at {args.input_size}x"
          f"{args.input_size}, batch {BASE['batch_size']}, {args.epochs} epochs, device {device}\n")
    print("| model | recipe | best val accuracy | epoch | s/epoch |")
    print("|---|---|---:|---:|---:|")
    for model in args.models:
        for recipe in args.recipes:
            cfg = TrainConfig(**{**BASE, **RECIPES[recipe]}, epochs=args.epochs, input_size=args.input_size)
            runtime.setup(params.runtime, seed)  # same seed, same initial weights for every recipe
            learner = build_learner(model, "mnist", cfg, device, seed, params.runtime)
            generator = torch.Generator().manual_seed(seed)
            accuracies, seconds = [], []
            for epoch in range(1, args.epochs + 1):
                t0 = time.perf_counter()
                learner.train_epoch(train_x, train_y, generator, desc=f"{model} {recipe} {epoch}")
                seconds.append(time.perf_counter() - t0)
                accuracies.append(loss_and_accuracy(learner.logits(val_x, 500), val_y)[1])
            best = max(range(len(accuracies)), key=accuracies.__getitem__)
            print(f"| {model} | {recipe} | {100 * accuracies[best]:.2f}% | {best + 1} | "
                  f"{statistics.median(seconds):.1f} |", flush=True)


if __name__ == "__main__":
    main()
