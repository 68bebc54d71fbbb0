"""Stage `prepare`: decode the raw files once and split them.

    pipeline prepare --dataset mnist       # writes data/mnist/prepared.pt and prepare_report.json
    pipeline prepare --dataset crack       # writes data/crack/prepared.pt and prepare_report.json

Output: uint8 image tensors and int64 labels for train / val / test, so that training never
decodes an image. MNIST: validation is a stratified fraction of the official training set; the
official test set is kept whole and never used to select anything. Crack: grayscale images of
`prepare.crack.image_size`, split stratified 60/20/20 (lab-C: 20% test, then 25% of the rest for
validation), with the file names of each split so that reports can show images by name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import time

import numpy as np
import torch

from pipeline import paths
from pipeline.artifacts import load_torch
from pipeline.atomic import atomic_path, write_text
from pipeline.config import CrackPrepareConfig, Params
from pipeline.data import crack, mnist
from pipeline.data.errors import DataError
from pipeline.data.split import check_classes, stratified_split, stratified_subset

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


def main(params: Params, dataset: str = "mnist") -> None:
    if dataset == "crack":
        _prepare_crack(params)
    else:
        _prepare_mnist(params, dataset)


def _prepare_mnist(params: Params, dataset: str) -> None:
    cfg = params.prepare.mnist
    raw = paths.raw_dir(dataset)
    train_x, train_y = mnist.load_split(raw, "train")
    test_x, test_y = mnist.load_split(raw, "t10k")

    if cfg.train_limit is not None:
        keep = stratified_subset(train_y.numpy(), cfg.train_limit, cfg.seed)
        train_x, train_y = train_x[keep], train_y[keep]
    fit, val = stratified_split(train_y.numpy(), cfg.val_fraction, cfg.seed)
    check_classes({"train": train_y[fit].numpy(), "val": train_y[val].numpy(), "test": test_y.numpy()},
                  [str(d) for d in range(mnist.NUM_CLASSES)], f"the MNIST files in {raw}",
                  "they are not the official files: run `pipeline download --dataset mnist` again")

    # Identifies the exact images and split a model was trained on (an MLflow tag).
    version = hashlib.sha256(
        json.dumps({"md5": mnist.OFFICIAL_MD5, "split": vars(cfg)}, sort_keys=True).encode()
    ).hexdigest()[:12]
    splits = {
        "train_x": train_x[fit].contiguous(), "train_y": train_y[fit].contiguous(),
        "val_x": train_x[val].contiguous(), "val_y": train_y[val].contiguous(),
        "test_x": test_x, "test_y": test_y,
        "data_version": version,
    }
    target = paths.prepared_file(dataset)
    with atomic_path(target) as tmp:
        torch.save(splits, tmp)
    # The same record as crack's (every dataset's prepare stage declares one as its metrics).
    counts = {part: {str(k): int(n) for k, n in enumerate(torch.bincount(splits[f"{part}_y"], minlength=10))}
              for part in SPLITS}
    report = {"data_version": version, "limit": cfg.train_limit, "splits": counts}
    write_text(paths.prepare_report_file(dataset), json.dumps(report, indent=2) + "\n")
    log.info(
        "%s: train %d, val %d, test %d images (data version %s) -> %s",
        dataset, len(fit), len(val), len(test_y), version, target,
    )


def _prepare_crack(params: Params) -> None:
    cfg = params.prepare.crack
    raw = paths.raw_dir("crack")
    start = time.perf_counter()
    images, labels, names, skipped = crack.load_images(raw, cfg.image_size)
    decode_seconds = time.perf_counter() - start
    decoded = len(names)

    if cfg.limit is not None:
        keep = stratified_subset(labels.numpy(), cfg.limit, cfg.seed)
        images, labels, names = images[keep], labels[keep], [names[i] for i in keep]
    parts = split_three_ways(labels.numpy(), cfg)
    unreadable = {cls: sum(s["file"].startswith(f"{cls}/") for s in skipped) for cls in crack.CLASSES}
    check_classes({part: labels[index].numpy() for part, index in parts.items()}, list(crack.CLASSES),
                  f"the crack images in {raw} (from {params.crack_source() or params.download.crack.kaggle_dataset})",
                  f"files skipped as unreadable or duplicates: {unreadable}. Add readable images of that "
                  "class to the source (download.crack.source or PIPELINE_CRACK_SOURCE) and run `pipeline "
                  "download --dataset crack`, or raise prepare.crack.limit")

    # Identifies the exact files, decoding and split a model was trained on (an MLflow tag).
    version = hashlib.sha256(json.dumps(
        {"files": crack.content_digest(raw, names), "split": vars(cfg)}, sort_keys=True
    ).encode()).hexdigest()[:12]
    # Only tensors, str, int and lists/dicts of them: loadable with torch.load(weights_only=True).
    data: dict = {}
    for part, index in parts.items():
        data[f"{part}_x"] = images[index].contiguous()
        data[f"{part}_y"] = labels[index].contiguous()
        data[f"{part}_names"] = [names[i] for i in index]
    data.update(data_version=version, image_size=cfg.image_size, classes=list(crack.CLASSES),
                skipped=skipped)
    target = paths.prepared_file("crack")
    with atomic_path(target) as tmp:
        torch.save(data, tmp)

    counts = {part: {cls: int((labels[index] == k).sum()) for k, cls in enumerate(crack.CLASSES)}
              for part, index in parts.items()}
    report = {
        "data_version": version,
        "image_size": cfg.image_size,
        "decode_seconds": round(decode_seconds, 2),
        "files": decoded + len(skipped),
        "decoded": decoded,
        "limit": cfg.limit,
        "splits": counts,
        "skipped": skipped,
    }
    write_text(paths.prepare_report_file("crack"), json.dumps(report, indent=2) + "\n")
    log.info(
        "crack: train %d, val %d, test %d images of %dx%d, %d skipped, decoded in %.1f s "
        "(data version %s) -> %s",
        *(len(parts[p]) for p in SPLITS), cfg.image_size, cfg.image_size, len(skipped),
        decode_seconds, version, target,
    )


def split_three_ways(labels: np.ndarray, cfg: CrackPrepareConfig) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices: test_fraction held out first, then val_fraction of the whole."""
    present = np.bincount(labels, minlength=len(crack.CLASSES))
    try:
        rest, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
        fit, val = stratified_split(labels[rest], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    except ValueError as e:  # sklearn: a class too small to be in every split
        raise DataError(
            f"cannot split {dict(zip(crack.CLASSES, present.tolist()))} images into train/val/test "
            f"with each class in each part ({e}); add images or raise prepare.crack.limit"
        ) from None
    return {"train": rest[fit], "val": rest[val], "test": test}


def load_prepared(dataset: str) -> dict:
    return load_torch(paths.prepared_file(dataset), f"pipeline prepare --dataset {dataset}")
