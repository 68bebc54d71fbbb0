"""Stage `prepare`: decode the raw files once and split them.

    pipeline prepare --dataset mnist       # writes data/mnist/prepared.pt

Output: uint8 image tensors and int64 labels for train / val / test, so that training never
decodes an image. Validation is a stratified fraction of the official training set; the official
test set is kept whole and never used to select anything.
"""
from __future__ import annotations

import hashlib
import json
import logging

import torch

from pipeline import paths
from pipeline.atomic import atomic_path
from pipeline.config import Params
from pipeline.data import mnist
from pipeline.data.split import stratified_split, stratified_subset

log = logging.getLogger(__name__)


def main(params: Params, dataset: str = "mnist") -> None:
    cfg = params.prepare[dataset]
    raw = paths.raw_dir(dataset)
    train_x, train_y = mnist.load_split(raw, "train")
    test_x, test_y = mnist.load_split(raw, "t10k")

    if cfg.train_limit is not None:
        keep = stratified_subset(train_y.numpy(), cfg.train_limit, cfg.seed)
        train_x, train_y = train_x[keep], train_y[keep]
    fit, val = stratified_split(train_y.numpy(), cfg.val_fraction, cfg.seed)

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
    log.info(
        "%s: train %d, val %d, test %d images (data version %s) -> %s",
        dataset, len(fit), len(val), len(test_y), version, target,
    )


def load_prepared(dataset: str) -> dict:
    path = paths.prepared_file(dataset)
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: run `pipeline prepare --dataset {dataset}` first")
    return torch.load(path, weights_only=True)
