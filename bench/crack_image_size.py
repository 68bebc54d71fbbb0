"""Which side to cache the crack images at: crack_cnn's accuracy against its epoch time.

    python bench/crack_image_size.py                       # sizes 32 48 64 96, 5 epochs each
    python bench/crack_image_size.py --sizes 64 128 --epochs 3

For each size the real images (../shared/data/crack by default) are decoded exactly as the
prepare stage does, split 60/20/20 with params.yaml's seed, and crack_cnn is trained with
params.yaml's settings through the pipeline's own learner. Prints machine info and a Markdown
table: decode time, median epoch time, best validation accuracy and its epoch. The test split is
not read.
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
from pipeline.config import load_params  # noqa: E402
from pipeline.data import imagefolder  # noqa: E402
from pipeline.data.datasets import get_dataset  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.inference import loss_and_accuracy  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=Path, default=REPO.parent / "shared" / "data" / "crack",
                        help="folder with Positive/ and Negative/")
    parser.add_argument("--sizes", type=int, nargs="+", default=[32, 48, 64, 96])
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    cfg = dataclasses.replace(params.train_config("crack", "crack_cnn"), epochs=args.epochs)
    print(f"machine: {machine_info()}")
    print(f"crack_cnn: {cfg.optimizer} lr {cfg.lr}, batch {cfg.batch_size}, {args.epochs} epochs")
    rows = []
    for size in args.sizes:
        t0 = time.perf_counter()
        folders = list(get_dataset("crack").options["folders"])
        images, labels, _, skipped = imagefolder.load_images(args.images, folders, folders, size)
        decode = time.perf_counter() - t0
        parts = imagefolder.split_three_ways(labels.numpy(), dataclasses.replace(params.prepare.crack, image_size=size),
                                             folders, "crack")
        train_idx, val_idx = (torch.as_tensor(parts[k]) for k in ("train", "val"))
        device = runtime.setup(params.runtime, params.seeds[0])
        learner = build_learner("crack_cnn", "crack", dataclasses.replace(cfg, input_size=size), device,
                                params.seeds[0])
        generator = torch.Generator().manual_seed(params.seeds[0])
        seconds, accuracies = [], []
        for epoch in range(1, args.epochs + 1):
            t0 = time.perf_counter()
            learner.train_epoch(images[train_idx], labels[train_idx], generator, desc=f"{size}px epoch {epoch}")
            seconds.append(time.perf_counter() - t0)
            _, accuracy = loss_and_accuracy(learner.logits(images[val_idx], 1000), labels[val_idx])
            accuracies.append(accuracy)
        best = max(range(len(accuracies)), key=accuracies.__getitem__)
        rows.append((size, decode, statistics.median(seconds), accuracies[best], best + 1))
        print(f"{size}px: decode {decode:.1f}s ({len(labels)} images, {len(skipped)} skipped), "
              f"epochs {', '.join(f'{s:.1f}s' for s in seconds)}, val acc {', '.join(f'{a:.4f}' for a in accuracies)}")

    print("\n| cached side | decode (s) | epoch, median (s) | best val accuracy | at epoch |")
    print("|---:|---:|---:|---:|---:|")
    for size, decode, epoch_s, accuracy, at in rows:
        print(f"| {size} | {decode:.1f} | {epoch_s:.1f} | {100 * accuracy:.2f}% | {at} |")


if __name__ == "__main__":
    main()
