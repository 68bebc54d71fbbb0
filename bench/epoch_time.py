"""Epoch time of our training loop against the course's loop and against a bare compute loop.

    python bench/epoch_time.py                              # logreg mlp cnn1, 3 repeats
    python bench/epoch_time.py --models mlp simple_cnn --repeats 5

Three loops train the same registry model on the same 60,000 real MNIST training images
(../shared/data/mnist by default) with the model's params.yaml batch size, optimiser and lr, and
the same torch thread count:

- reference: the course's loop, torchvision's `MNIST` dataset with per-sample `ToTensor` and
  `Normalize` through a shuffling `DataLoader` (num_workers 0);
- ours: `pipeline.engine.learners.TorchLearner.train_epoch`, what `pipeline train` runs (the set
  normalised once per run, timed apart as it is paid once, not per epoch; progress bar; per-batch
  loss and predictions kept on the device);
- bare: forward, backward and step on batches gathered from the whole training set already
  normalised in memory (no dataset, no progress bar, no bookkeeping): the limit of this model
  on this machine.

Each repeat runs the three back to back (interleaved) and the table reports min / median / max
over repeats of the epoch times and of the per-repeat ratios.
"""
from __future__ import annotations

import argparse
import dataclasses
import gzip
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader
from torchvision import datasets, transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import add_mnist_argument, loader_epoch, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.data import mnist  # noqa: E402
from pipeline.data.presets import InputPreset  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.learners import build_learner, build_optimizer  # noqa: E402
from pipeline.models import get_model_spec  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def torchvision_root(raw: Path, root: Path) -> Path:
    """torchvision's MNIST reads decompressed IDX files from <root>/MNIST/raw."""
    target = root / "MNIST" / "raw"
    target.mkdir(parents=True)
    for name in mnist.FILES:
        with gzip.open(raw / name) as src, open(target / name.removesuffix(".gz"), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return root


def reference_epoch(model_name, cfg, root, seed) -> float:
    torch.manual_seed(seed)
    spec = get_model_spec(model_name)
    steps = [transforms.ToTensor(), transforms.Normalize((mnist.MEAN,), (mnist.STD,))]
    if spec.input_size != mnist.IMAGE_SIZE:
        steps.insert(0, transforms.Pad((spec.input_size - mnist.IMAGE_SIZE) // 2))
    data = datasets.MNIST(root, train=True, download=False, transform=transforms.Compose(steps))
    loader = DataLoader(data, batch_size=cfg.batch_size, shuffle=True, num_workers=0)
    model = spec.build()
    optimizer = build_optimizer(model.parameters(), cfg, cfg.lr)
    return loader_epoch(model, optimizer, nn.CrossEntropyLoss(), loader)


def our_epoch(model_name, cfg, images, labels, seed) -> tuple[float, float]:
    """(seconds to normalise the set, once per run; seconds of one epoch)."""
    learner = build_learner(model_name, "mnist", cfg, torch.device("cpu"), seed)
    generator = torch.Generator().manual_seed(seed)
    t0 = time.perf_counter()
    learner.prepared_inputs(images)
    t1 = time.perf_counter()
    learner.train_epoch(images, labels, generator, desc=f"{model_name} (ours)")
    return t1 - t0, time.perf_counter() - t1


def bare_epoch(model_name, cfg, inputs, labels, seed) -> float:
    torch.manual_seed(seed)
    model = get_model_spec(model_name).build()
    optimizer = build_optimizer(model.parameters(), cfg, cfg.lr)
    loss_fn = nn.CrossEntropyLoss()
    model.train()
    t0 = time.perf_counter()
    order = torch.randperm(len(inputs))
    for i in range(0, len(order), cfg.batch_size):
        idx = order[i:i + cfg.batch_size]
        x, y = inputs[idx], labels[idx]
        optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), y)
        loss.backward()
        optimizer.step()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_mnist_argument(parser)
    parser.add_argument("--models", nargs="+", default=["logreg", "mlp", "cnn1"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    params = load_params(REPO / "params.yaml")
    seed = params.seeds[0]
    runtime.setup(dataclasses.replace(params.runtime, device="cpu"), seed)
    images, labels = mnist.load_split(args.mnist, "train")
    print(f"machine: {machine_info()}")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        root = torchvision_root(args.mnist, Path(tmp))
        for name in args.models:
            cfg = params.train_config("mnist", name)
            inputs = InputPreset("mnist", get_model_spec(name).input_size)(images)
            times = {"reference": [], "ours": [], "bare": [], "prep": []}
            for r in range(args.repeats):
                times["reference"].append(reference_epoch(name, cfg, root, seed))
                prep, epoch = our_epoch(name, cfg, images, labels, seed)
                times["ours"].append(epoch)
                times["prep"].append(prep)
                times["bare"].append(bare_epoch(name, cfg, inputs, labels, seed))
                print(f"{name} repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()))
            speedup = [a / b for a, b in zip(times["reference"], times["ours"])]
            overhead = [100 * (a / b - 1) for a, b in zip(times["ours"], times["bare"])]
            rows.append((name, cfg.batch_size, times, speedup, overhead))

    print(f"\n60,000 images per epoch, {torch.get_num_threads()} torch threads; min / median / max over "
          f"{args.repeats} repeats\n")
    print("| model | batch | reference epoch (s) | ours (s) | bare (s) | ours vs reference | "
          "ours over bare | ours: normalising the set, once per run (s) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, batch, times, speedup, overhead in rows:
        print(f"| {name} | {batch} | {spread(times['reference'], '.2f')} | {spread(times['ours'], '.2f')} | "
              f"{spread(times['bare'], '.2f')} | {spread(speedup, '.1f')}x | {spread(overhead, '+.1f')}% | "
              f"{spread(times['prep'], '.2f')} |")


if __name__ == "__main__":
    main()
