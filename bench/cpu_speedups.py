"""CPU training and evaluation speed per memory layout, with and without torch.compile; profiler.

    python bench/cpu_speedups.py                                   # layouts, the MNIST CNNs
    python bench/cpu_speedups.py --models cnn1 keras_cnn2 --compile
    python bench/cpu_speedups.py --profile keras_cnn2              # top ops of one epoch's steps

Each model trains through the pipeline's own learner (`TorchLearner.train_epoch`, its params.yaml
batch size, optimiser and lr) on real MNIST training images, then scores images in evaluation
batches (runtime.eval_batch_size). Variants, interleaved per repeat, fresh weights each time:

- nchw: runtime.channels_last false, PyTorch's default layout;
- channels_last: NHWC model and inputs (the default, runtime.channels_last true);
- compile: channels_last plus `torch.compile` of the training module (--compile). Its first
  steps compile the model: that time is reported apart, the step times exclude it.

Times are per training step (one batch: forward, backward, optimiser step) and per 1,000
evaluated images, min / median / max over the repeats; speed-ups are per repeat against nchw.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
MNIST_CNNS = ["cnn1", "cnn2", "keras_cnn2", "keras_cnn3", "simple_cnn", "classic_cnn", "lenet5"]


def learner_for(params, model: str, variant: str, seed: int):
    cfg = params.train_config("mnist", model)
    rt = dataclasses.replace(params.runtime, device="cpu", channels_last=variant != "nchw")
    torch.manual_seed(seed)
    learner = build_learner(model, "mnist", cfg, torch.device("cpu"), seed, rt)
    if variant == "compile":
        learner.train_model = torch.compile(learner.model)
    return learner


def measure(params, model: str, variant: str, images, labels, steps: int, seed: int) -> tuple[float, float, float]:
    """(seconds of the warm-up steps, incl. compiling; ms per step after them; ms per 1,000 scored)."""
    learner = learner_for(params, model, variant, seed)
    batch = learner.cfg.batch_size
    warm, timed = images[:2 * batch], images[2 * batch:(2 + steps) * batch]
    warm_y, timed_y = labels[:2 * batch], labels[2 * batch:(2 + steps) * batch]
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    learner.train_epoch(warm, warm_y, generator, "warm-up")
    t1 = time.perf_counter()
    learner.train_epoch(timed, timed_y, generator, "timed")
    t2 = time.perf_counter()
    scored = images[-2000:]
    learner.logits(scored[:params.runtime.eval_batch_size], params.runtime.eval_batch_size)  # warm-up
    t3 = time.perf_counter()
    learner.logits(scored, params.runtime.eval_batch_size)
    t4 = time.perf_counter()
    return t1 - t0, 1000 * (t2 - t1) / steps, 1000 * (t4 - t3) / len(scored) * 1000


def profile(params, model: str, images, labels, steps: int, seed: int) -> None:
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    learner = learner_for(params, model, "channels_last", seed)
    batch = learner.cfg.batch_size
    generator = torch.Generator().manual_seed(seed)
    learner.train_epoch(images[:2 * batch], labels[:2 * batch], generator, "warm-up")
    with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
        learner.train_epoch(images[:steps * batch], labels[:steps * batch], generator, "profiled")
    print(f"\n{model}, {steps} training steps of batch {batch}, channels_last:\n")
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--models", nargs="+", default=MNIST_CNNS)
    parser.add_argument("--steps", type=int, default=30, help="timed training steps per variant")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--compile", action="store_true", help="also time torch.compile")
    parser.add_argument("--profile", metavar="MODEL", help="print torch.profiler's top ops instead")
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    seed = params.seeds[0]
    runtime.setup(dataclasses.replace(params.runtime, device="cpu"), seed)
    images, labels = mnist.load_split(args.mnist, "train")
    print(f"machine: {machine_info()}")
    if args.profile:
        profile(params, args.profile, images, labels, args.steps, seed)
        return
    variants = ["nchw", "channels_last"] + (["compile"] if args.compile else [])
    rows = []
    for model in args.models:
        results = {v: [] for v in variants}
        for r in range(args.repeats):
            for variant in variants:
                results[variant].append(measure(params, model, variant, images, labels, args.steps, seed))
            print(f"{model} repeat {r + 1}: " + ", ".join(
                f"{v} {res[-1][1]:.1f} ms/step, {res[-1][2]:.0f} ms/1k scored" for v, res in results.items()),
                flush=True)
        rows.append((model, params.train_config("mnist", model).batch_size, results))

    print(f"\n{args.steps} timed training steps per variant; min / median / max over {args.repeats} repeats\n")
    print("| model | batch | variant | train step (ms) | speed-up | evaluation, per 1,000 images (ms) | speed-up "
          "| warm-up: 2 steps incl. compiling (s) |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for model, batch, results in rows:
        base = results["nchw"]
        for variant, res in results.items():
            train_up = [b[1] / x[1] for b, x in zip(base, res)]
            eval_up = [b[2] / x[2] for b, x in zip(base, res)]
            print(f"| {model} | {batch} | {variant} | {spread([x[1] for x in res], '.1f')} | "
                  f"{spread(train_up, '.2f')}x | {spread([x[2] for x in res], '.0f')} | {spread(eval_up, '.2f')}x | "
                  f"{spread([x[0] for x in res], '.1f')} |")


if __name__ == "__main__":
    main()
