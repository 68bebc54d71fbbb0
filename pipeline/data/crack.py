"""Surface cracks (lab-C; Özgenel 2019, CC BY 4.0): the Positive/ and Negative/ JPEGs of the source
(pipeline.data.crack_source), decoded once into grayscale uint8 tensors of `prepare.crack.image_size`
and split stratified 60/20/20 (lab-C: 20% test, then 25% of the rest for validation), with the file
names of each split so that reports can show images by name.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from PIL import ImageFile, UnidentifiedImageError

from pipeline.config import CrackPrepareConfig, Params
from pipeline.data.crack_source import CLASSES, class_files, fetch
from pipeline.data.errors import DataError
from pipeline.data.images import decode_image
from pipeline.data.split import check_classes, stratified_split, stratified_subset

log = logging.getLogger(__name__)

WITHOUT_CRACK = (
    "To run without the crack dataset (no Kaggle credentials needed), set `datasets: [mnist]` "
    "and, under train, `crack: {}` in params.yaml, then `dvc repro` again."
)


def image_side(params: Params) -> int:
    return params.prepare.crack.image_size


def download(params: Params, target: Path) -> str:
    source = params.crack_source()
    kaggle_dataset = params.download.crack.kaggle_dataset
    log.info("fetching crack images from %s", source or f"Kaggle dataset {kaggle_dataset}")
    try:
        counts = fetch(target, source, kaggle_dataset)
    except DataError as e:
        raise DataError(f"{e}\n{WITHOUT_CRACK}") from None
    return ", ".join(f"{n} {cls}" for cls, n in counts.items())


def prepare(params: Params, raw: Path) -> tuple[dict, dict]:
    cfg = params.prepare.crack
    start = time.perf_counter()
    images, labels, names, skipped = load_images(raw, cfg.image_size)
    decode_seconds = time.perf_counter() - start
    decoded = len(names)

    if cfg.limit is not None:
        keep = stratified_subset(labels.numpy(), cfg.limit, cfg.seed)
        images, labels, names = images[keep], labels[keep], [names[i] for i in keep]
    parts = split_three_ways(labels.numpy(), cfg)
    unreadable = {cls: sum(s["file"].startswith(f"{cls}/") for s in skipped) for cls in CLASSES}
    check_classes({part: labels[index].numpy() for part, index in parts.items()}, list(CLASSES),
                  f"the crack images in {raw} (from {params.crack_source() or params.download.crack.kaggle_dataset})",
                  f"files skipped as unreadable or duplicates: {unreadable}. Add readable images of that "
                  "class to the source (download.crack.source or PIPELINE_CRACK_SOURCE) and run `pipeline "
                  "download --dataset crack`, or raise prepare.crack.limit")

    # Identifies the exact files, decoding and split a model was trained on (an MLflow tag).
    version = hashlib.sha256(json.dumps(
        {"files": content_digest(raw, names), "split": vars(cfg)}, sort_keys=True
    ).encode()).hexdigest()[:12]
    # Only tensors, str, int and lists/dicts of them: loadable with torch.load(weights_only=True).
    data: dict = {}
    for part, index in parts.items():
        data[f"{part}_x"] = images[index].contiguous()
        data[f"{part}_y"] = labels[index].contiguous()
        data[f"{part}_names"] = [names[i] for i in index]
    data.update(data_version=version, image_size=cfg.image_size, classes=list(CLASSES), skipped=skipped)
    counts = {part: {cls: int((labels[index] == k).sum()) for k, cls in enumerate(CLASSES)}
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
    log.info("crack: %d images of %dx%d, %d skipped, decoded in %.1f s", decoded, cfg.image_size,
             cfg.image_size, len(skipped), decode_seconds)
    return data, report


def split_three_ways(labels: np.ndarray, cfg: CrackPrepareConfig) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices: test_fraction held out first, then val_fraction of the whole."""
    present = np.bincount(labels, minlength=len(CLASSES))
    try:
        rest, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
        fit, val = stratified_split(labels[rest], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    except ValueError as e:  # sklearn: a class too small to be in every split
        raise DataError(
            f"cannot split {dict(zip(CLASSES, present.tolist()))} images into train/val/test "
            f"with each class in each part ({e}); add images or raise prepare.crack.limit"
        ) from None
    return {"train": rest[fit], "val": rest[val], "test": test}


def load_images(raw: Path, size: int) -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """Decodes raw/Negative (label 0) and raw/Positive (label 1), sorted by name, into grayscale
    size x size: (images uint8 [N,size,size], labels int64 [N], names, skipped).

    A file that does not decode, or repeats the bytes of an earlier one, is skipped and reported as
    {"file": "Positive/x.jpg", "reason": ...}; the dataset holds exact duplicates (PROVENANCE.md),
    which would otherwise leak between train and test.
    """
    files = []
    for label, cls in enumerate(CLASSES):
        folder = Path(raw) / cls
        if not folder.is_dir():
            raise DataError(f"{folder} not found: run `pipeline download --dataset crack` first")
        files += [(f"{cls}/{p.name}", p, label) for p in class_files(folder)]

    # Pillow pads a truncated JPEG with grey instead of failing when this global is True (some
    # libraries set it): a truncated download must be reported, never trained on.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        # Threads: libjpeg, the resize and sha256 release the GIL; map() keeps the sorted order.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(lambda f: _read_and_decode(f[1], size), files))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous

    images, labels, names, skipped, first_of = [], [], [], [], {}
    duplicates = 0
    for (name, _, label), (digest, pixels, reason) in zip(files, decoded):
        if reason is not None:
            log.warning("skipped %s: %s", name, reason)
            skipped.append({"file": name, "reason": reason})
        elif digest in first_of:
            duplicates += 1
            skipped.append({"file": name, "reason": f"duplicate of {first_of[digest]} (identical bytes)"})
        else:
            first_of[digest] = name
            images.append(pixels)
            labels.append(label)
            names.append(name)
    if duplicates:  # one line: the full Kaggle set has 1,598 of them
        log.info("skipped %d exact duplicates of other files (listed in `skipped`)", duplicates)
    if not images:
        raise DataError(f"{raw}: no readable image among {len(files)} files; run "
                        "`pipeline download --dataset crack` again")
    return (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64), names, skipped)


def content_digest(raw: Path, names: list[str]) -> str:
    """sha256 over the names and contents of these files, in this order (the data version)."""
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\0{hashlib.sha256((Path(raw) / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _read_and_decode(path: Path, size: int) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256 of the bytes, pixels, None) or (digest or None, None, why it was skipped)."""
    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, None, "empty file"
    try:
        return digest, decode_image(data, size), None
    except UnidentifiedImageError:
        return digest, None, "not an image Pillow can read (unknown format)"
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes means "skip this file"
        return digest, None, f"cannot decode: {e}"
