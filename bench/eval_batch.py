"""The evaluation's batch size: milliseconds per image of `learner.logits` (the path the evaluate
stage scores the test set on) at several batch sizes, each model built with its params.yaml
settings (input size included), on real MNIST test images.

    python bench/eval_batch.py --models tiny_resnet vgg16 resnet50 tiny_vgg keras_cnn2 --images 2048

Per model and batch size: the median over `--repeats` passes over the same `--images` images,
after one warm-up pass, as a ratio to the first batch size given (the baseline, lab-A's 1000).
Weights are as built (untrained): the time of a forward pass does not depend on them.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def ms_per_image(learner, images: torch.Tensor, batch_size: int, repeats: int) -> float:
    learner.logits(images, batch_size)  # warm-up: this shape's first-call set-up
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        learner.logits(images, batch_size)
        times.append(time.perf_counter() - t0)
    return 1000 * statistics.median(times) / len(images)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--models", nargs="+", default=["tiny_resnet", "vgg16", "resnet50", "tiny_vgg", "keras_cnn2"])
    parser.add_argument("--batches", nargs="+", type=int, default=[1000, 512, 256, 128])
    parser.add_argument("--images", type=int, default=2048)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    params = load_params(REPO / "params.yaml")
    device = runtime.setup(params.runtime, 12)
    print(machine_info(), "| kernels:", torch.backends.cpu.get_cpu_capability())
    images = torch.from_numpy(mnist.read_idx(args.mnist / "t10k-images-idx3-ubyte.gz")[:args.images].copy())
    print("| model | " + " | ".join(f"batch {b} (ms/img)" for b in args.batches) + " | "
          + " | ".join(f"{b} / {args.batches[0]}" for b in args.batches[1:]) + " |")
    print("|---|" + "---:|" * (2 * len(args.batches) - 1))
    for name in args.models:
        learner = build_learner(name, "mnist", params.train_config("mnist", name), device, 12, params.runtime)
        ms = [ms_per_image(learner, images, b, args.repeats) for b in args.batches]
        print(f"| {name} | " + " | ".join(f"{m:.3f}" for m in ms) + " | "
              + " | ".join(f"{m / ms[0]:.2f}" for m in ms[1:]) + " |", flush=True)


if __name__ == "__main__":
    main()
