"""Crack images: an epoch over our decoded cache against a dataset that decodes each JPEG per item.

    python bench/crack_cache.py                  # crack_cnn, 3 repeats
    python bench/crack_cache.py --repeats 5 --workers 0 2

A temporary workspace gets the repo's params.yaml with the offline crack images as its source
(../shared/data/crack by default), then `pipeline download` and `pipeline prepare` (not timed):
the cache, data/crack/prepared.pt, holds each image decoded once to 64x64 grayscale uint8. Per
repeat, interleaved, one epoch of crack_cnn (params.yaml: Adam 1e-3, batch 100) over the same
training split, same model and thread count:

- reference: lab-C's approach, a Dataset that opens the image's JPEG with PIL on every item,
  converts it to grayscale, resizes it to the cached side, `ToTensor` + `Normalize(0.5, 0.5)`,
  through a shuffling DataLoader (for each --workers value: 0 is lab-C's main-process loading);
- ours: `TorchLearner.train_epoch` over the cached tensors, what `pipeline train --dataset crack`
  runs.

Then the data cost alone, without the model: the reference's batches from its DataLoader, and
ours gathered from the normalised cache as train_epoch does.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
import yaml
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from bench.common import REPO, loader_epoch, spread  # noqa: E402
from bench.machine import machine_info  # noqa: E402
from pipeline.config import load_params  # noqa: E402
from pipeline.engine import runtime  # noqa: E402
from pipeline.engine.inference import loss_fn  # noqa: E402
from pipeline.engine.learners import build_learner  # noqa: E402

MODEL = "crack_cnn"


class JpegPerItem(Dataset):
    """lab-C's dataset: one JPEG decoded, converted and resized per item, every epoch."""

    def __init__(self, raw: Path, names: list[str], labels: torch.Tensor, side: int) -> None:
        self.paths, self.labels = [raw / name for name in names], labels
        self.transform = transforms.Compose([transforms.Grayscale(), transforms.Resize((side, side)),
                                             transforms.ToTensor(), transforms.Normalize((0.5,), (0.5,))])

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int):
        with Image.open(self.paths[i]) as image:
            return self.transform(image), self.labels[i]


def make_workspace(root: Path, source: Path) -> None:
    raw = yaml.safe_load((REPO / "params.yaml").read_text())
    raw["download"]["crack"]["source"] = str(source.resolve())
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    for stage in ("download", "prepare"):
        subprocess.run(["pipeline", stage, "--dataset", "crack"], cwd=root, check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def reference_epoch(learner, dataset: Dataset, batch_size: int, workers: int, seed: int) -> float:
    torch.manual_seed(seed)
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=workers)
    return loader_epoch(learner.model, learner.optimizer, loss_fn, loader)


def reference_data_only(dataset: Dataset, batch_size: int, seed: int) -> float:
    """The reference's batches alone (decode, convert, resize, normalise, collate): its data cost."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    for _ in DataLoader(dataset, batch_size=batch_size, shuffle=True, num_workers=0):
        pass
    return time.perf_counter() - t0


def our_data_only(learner, images: torch.Tensor, labels: torch.Tensor, seed: int) -> float:
    """Our batches alone, as train_epoch draws them from the normalised cache: our data cost."""
    inputs = learner.prepared_inputs(images)
    order = torch.randperm(len(images), generator=torch.Generator().manual_seed(seed))
    t0 = time.perf_counter()
    for start in range(0, len(order), learner.cfg.batch_size):
        idx = order[start:start + learner.cfg.batch_size]
        learner.accel.model_input(inputs[idx]), labels[idx]
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--crack", type=Path, default=REPO.parent / "shared" / "data" / "crack",
                        help="folder with Positive/ and Negative/ JPEGs")
    parser.add_argument("--workers", type=int, nargs="+", default=[0], help="DataLoader workers of the reference")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_workspace(root, args.crack)
        params = load_params(root / "params.yaml")
        cfg, seed = params.train_config("crack", MODEL), params.seeds[0]
        device = runtime.setup(dataclasses.replace(params.runtime, device="cpu"), seed)
        data = torch.load(root / "data" / "crack" / "prepared.pt", weights_only=True)
        images, labels, side = data["train_x"], data["train_y"], data["image_size"]
        dataset = JpegPerItem(root / "data" / "crack" / "raw", data["train_names"], labels, side)
        print(f"machine: {machine_info()}")
        times = {**{f"reference, {w} workers": [] for w in args.workers}, "ours": []}
        data_times = {"reference": [], "ours": []}  # batches only, no model
        for r in range(args.repeats):
            for w in args.workers:
                learner = build_learner(MODEL, "crack", cfg, device, seed, params.runtime)
                times[f"reference, {w} workers"].append(reference_epoch(learner, dataset, cfg.batch_size, w, seed))
            learner = build_learner(MODEL, "crack", cfg, device, seed, params.runtime)
            learner.prepared_inputs(images)  # once per run, not per epoch
            t0 = time.perf_counter()
            learner.train_epoch(images, labels, torch.Generator().manual_seed(seed), desc=MODEL)
            times["ours"].append(time.perf_counter() - t0)
            data_times["reference"].append(reference_data_only(dataset, cfg.batch_size, seed))
            data_times["ours"].append(our_data_only(learner, images, labels, seed))
            print(f"repeat {r + 1}: " + ", ".join(f"{k} {v[-1]:.2f}s" for k, v in times.items()), flush=True)

    print(f"\n{MODEL}, {len(labels):,} training images at {side}x{side}, batch {cfg.batch_size}, "
          f"{torch.get_num_threads()} torch threads; min / median / max over {args.repeats} repeats\n")
    print("| loop | epoch (s) | ours faster by |")
    print("|---|---:|---:|")
    for name, values in times.items():
        ratio = [a / b for a, b in zip(values, times["ours"])]
        print(f"| {name} | {spread(values, '.2f')} | {spread(ratio, '.1f')}x |")
    print("\nThe batches alone, no model (one pass over the training split, 0 workers):\n")
    print("| data | seconds per epoch | ours faster by |")
    print("|---|---:|---:|")
    for name, values in data_times.items():
        ratio = [a / b for a, b in zip(values, data_times["ours"])]
        print(f"| {name} | {spread(values, '.3f')} | {spread(ratio, '.0f')}x |")


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
