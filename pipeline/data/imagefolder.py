"""The `imagefolder` kind: any folder of one sub-folder per class is a dataset (crack's photos, a
user's own). Its files come through pipeline.data.folder_source (a folder, .zip, http(s) URL or
Kaggle dataset); the prepare stage decodes each image once into `image_size` x `image_size` at
`channels` (1 gray, 3 RGB; any mode and size accepted and converted), skips and counts what does
not decode and what repeats the bytes of an earlier file (so that no image is in two splits), and
splits stratified train/val/test (lab-C: `test_fraction` held out first, then `val_fraction` of
the whole), or keeps the user's own train/, val/ and test/ folders when the source has them.

A folder is declared in params.yaml (`download.<name>: {kind: imagefolder, source: <folder>}`,
registered through `declared` each time params are parsed); a module registers one with fixed
facts and a Kaggle source (pipeline.data.crack).
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np

from pipeline.data import folder_source
from pipeline.data.datasets import Dataset, register_kind
from pipeline.data.split import check_classes, stratified_split, stratified_subset
from pipeline.errors import MAX_SIDE, DataError, check, check_seed

if TYPE_CHECKING:
    import torch

    from pipeline.config import Params

log = logging.getLogger(__name__)
# Found by the dataset registry through this line, as a dataset module is through its record.
KIND = register_kind("imagefolder", sys.modules[__name__])


@dataclass(frozen=True)
class ImageFolderDownloadConfig:
    # What declares a folder in params.yaml as a dataset of this kind.
    kind: Literal["imagefolder"] = KIND
    # A folder holding one sub-folder per class (or train/, val/, test/ holding one each), a .zip
    # of one, or an http(s):// URL of such a .zip. null: the Kaggle dataset below, through the
    # kaggle client (credentials from KAGGLE_USERNAME and KAGGLE_KEY or ~/.kaggle/kaggle.json).
    # The environment variable PIPELINE_<NAME>_SOURCE (e.g. PIPELINE_CRACK_SOURCE) wins.
    source: str | None = None
    # null: the dataset module's own Kaggle id (crack's: pipeline/data/crack.py), if it has one.
    kaggle_dataset: str | None = None


@dataclass(frozen=True)
class ImageFolderPrepareConfig:
    image_size: int = 64  # side of the cached images (decoded and resized once, Lanczos)
    channels: int = 1  # 1: grayscale; 3: RGB
    # Stratified fractions of the whole (when the source has no train/, val/, test/ of its own).
    val_fraction: float = 0.2
    test_fraction: float = 0.2
    seed: int = 12
    # Keep a stratified subset of this many images (tests); null keeps all.
    limit: int | None = None

    def __post_init__(self) -> None:
        check(16 <= self.image_size <= MAX_SIDE, "image_size", self.image_size, f"an integer in [16, {MAX_SIDE}]")
        check_seed(self.seed, "seed")
        check(self.channels in (1, 3), "channels", self.channels, "1 (grayscale) or 3 (RGB)")
        check(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "a number in (0, 1)")
        check(0.0 < self.test_fraction < 1.0 and self.val_fraction + self.test_fraction < 1.0,
              "test_fraction", self.test_fraction, "a number in (0, 1) with val_fraction + test_fraction < 1")
        check(self.limit is None or self.limit >= 20, "limit", self.limit, "null or an integer >= 20")


SECTIONS = {"download": ImageFolderDownloadConfig, "prepare": ImageFolderPrepareConfig}


def declared(name: str, raw_prepare: Any) -> Dataset:
    """The record of a folder declared in params.yaml: class names (its folders' names) and
    normalisation (its training split's) come from its prepare stage's report."""
    channels = raw_prepare.get("channels", 1) if isinstance(raw_prepare, dict) else 1
    return Dataset(name, sys.modules[__name__], SECTIONS, in_channels=channels if channels in (1, 3) else 1,
                   declared=True)


def source_env_of(name: str) -> str:
    """The environment variable that wins over download.<name>.source."""
    return f"PIPELINE_{name.upper()}_SOURCE"


def source_env(record: Dataset) -> str:
    return source_env_of(record.name)


def kaggle_dataset(record: Dataset, params: Params) -> str | None:
    """download.<name>.kaggle_dataset, else the dataset module's own Kaggle id."""
    return params.download.get(record.name).kaggle_dataset or record.options.get("kaggle_dataset")


def source(record: Dataset, params: Params) -> str | None:
    return os.environ.get(source_env(record)) or params.download.get(record.name).source


def kaggle_source(record: Dataset, params: Params) -> str:
    return f"Kaggle dataset {kaggle_dataset(record, params)}"


def _folders(record: Dataset) -> tuple[str, ...] | None:
    return record.options.get("folders")


def class_count(record: Dataset, params: Params) -> int:
    """Its number of classes before a run: from its prepared data's report, else its local source
    folder's class folders; 0 where neither can tell (a .zip, a URL)."""
    from pipeline import artifacts

    report = artifacts.prepare_report_file(record.name)
    if report.is_file():
        return len(json.loads(report.read_text()).get("classes", []))
    where = source(record, params)
    if where and Path(where).expanduser().is_dir():
        try:
            base = folder_source.locate(Path(where).expanduser(), where, _folders(record), "")
            return len({f.rsplit("/", 1)[-1] for f in folder_source.class_folders(base, _folders(record))})
        except DataError:
            return 0
    return 0


def image_side(record: Dataset, params: Params) -> int:
    return params.prepare.get(record.name).image_size


def decode(record: Dataset, data: bytes, params: Params) -> np.ndarray:
    from pipeline.data.images import decode_image

    cfg = params.prepare.get(record.name)
    return decode_image(data, cfg.image_size, record.in_channels)


def download(record: Dataset, params: Params, target: Path) -> str:
    where = source(record, params)
    kaggle_id = kaggle_dataset(record, params)
    log.info("fetching %s images from %s", record.name, where or f"Kaggle dataset {kaggle_id}")
    try:
        counts = folder_source.fetch(target, where, kaggle_id, _folders(record),
                                     f"download.{record.name}.source", source_env(record))
    except DataError as e:
        hint = record.options.get("without")
        raise DataError(f"{e}\n{hint}" if hint else str(e)) from None
    return ", ".join(f"{n} {cls}" for cls, n in counts.items())


def prepare(record: Dataset, params: Params, raw: Path) -> tuple[dict, dict]:
    import torch

    cfg = params.prepare.get(record.name)
    if record.in_channels != cfg.channels:
        raise DataError(f"prepare.{record.name}.channels: {cfg.channels}, but dataset {record.name} reads "
                        f"{record.in_channels} channel(s); set it to {record.in_channels}")
    folders = folder_source.class_folders(raw, _folders(record)) if Path(raw).is_dir() else []
    if not folders:
        raise DataError(f"{raw} not found or empty: run `pipeline download --dataset {record.name}` first")
    classes = sorted({f.rsplit("/", 1)[-1] for f in folders}, key=[f.rsplit("/", 1)[-1] for f in folders].index)
    start = time.perf_counter()
    images, labels, names, skipped = load_images(raw, folders, classes, cfg.image_size, cfg.channels,
                                                 record.name)
    decode_seconds = time.perf_counter() - start
    decoded = len(names)
    split_of = np.array([_split_of(n) for n in names])

    if cfg.limit is not None:
        keep = stratified_subset(labels.numpy(), cfg.limit, cfg.seed)
        images, labels, names, split_of = images[keep], labels[keep], [names[i] for i in keep], split_of[keep]
    if (split_of == "").all():
        parts = split_three_ways(labels.numpy(), cfg, classes, record.name)
    else:  # the user's own train/, val/ (or a stratified share of train/ when missing) and test/
        parts = {part: np.flatnonzero(split_of == part) for part in folder_source.SPLITS}
        if not len(parts["val"]):
            fit, val = stratified_split(labels[parts["train"]].numpy(), cfg.val_fraction, cfg.seed)
            parts["train"], parts["val"] = parts["train"][fit], parts["train"][val]
    display = record.fixed_class_names or tuple(classes)
    unreadable = {cls: sum(s["file"].split("/")[-2] == cls for s in skipped) for cls in classes}
    # Named by folder: what the user sees in the source (crack's "Negative", not "no crack").
    check_classes({part: labels[index].numpy() for part, index in parts.items()}, list(classes),
                  f"the {record.name} images in {raw} (from {source(record, params) or kaggle_source(record, params)})",
                  f"files skipped as unreadable or duplicates: {unreadable}. Add readable images of that "
                  f"class to the source (download.{record.name}.source or {source_env(record)}) and run "
                  f"`pipeline download --dataset {record.name}`, or raise prepare.{record.name}.limit")

    # Identifies the exact files, decoding and split a model was trained on (an MLflow tag).
    # Gray, the one decoding before `channels` existed, hashes without it: the versions of the
    # data already trained on stay the same.
    settings = {k: v for k, v in vars(cfg).items() if not (k == "channels" and v == 1)}
    version = hashlib.sha256(json.dumps(
        {"files": content_digest(raw, names), "split": settings}, sort_keys=True
    ).encode()).hexdigest()[:12]
    # Only tensors, str, int and lists/dicts of them: loadable with torch.load(weights_only=True).
    data: dict = {}
    for part, index in parts.items():
        index = torch.as_tensor(index, dtype=torch.int64)
        data[f"{part}_x"] = images[index].contiguous()
        data[f"{part}_y"] = labels[index].contiguous()
        data[f"{part}_names"] = [names[i] for i in index.tolist()]
    data.update(data_version=version, image_size=cfg.image_size, classes=list(classes), skipped=skipped)
    counts = {part: {cls: int((labels[index] == k).sum()) for k, cls in enumerate(classes)}
              for part, index in parts.items()}
    train = data["train_x"].float().div_(255.0)
    report = {
        "data_version": version,
        "image_size": cfg.image_size,
        "channels": cfg.channels,
        # The class names (the folders', unless the record names them) and the training split's
        # pixel mean and std: the record of a declared folder reads them from here.
        "classes": list(display),
        "normalisation": [round(train.mean().item(), 4), round(train.std().item(), 4)],
        "decode_seconds": round(decode_seconds, 2),
        "files": decoded + len(skipped),
        "decoded": decoded,
        "limit": cfg.limit,
        "splits": counts,
        "skipped": skipped,
    }
    log.info("%s: %d images of %dx%d, %d skipped, decoded in %.1f s", record.name, decoded, cfg.image_size,
             cfg.image_size, len(skipped), decode_seconds)
    return data, report


def _split_of(name: str) -> str:
    """"train" for train/cats/x.png; "" for cats/x.png (no split of the user's own)."""
    parts = name.split("/")
    return parts[0] if len(parts) == 3 else ""


def split_three_ways(labels: np.ndarray, cfg: ImageFolderPrepareConfig, classes: list[str],
                     name: str) -> dict[str, np.ndarray]:
    """Stratified train/val/test indices: test_fraction held out first, then val_fraction of the whole."""
    present = np.bincount(labels, minlength=len(classes))
    try:
        rest, test = stratified_split(labels, cfg.test_fraction, cfg.seed)
        fit, val = stratified_split(labels[rest], cfg.val_fraction / (1 - cfg.test_fraction), cfg.seed)
    except ValueError as e:  # sklearn: a class too small to be in every split
        raise DataError(
            f"cannot split {dict(zip(classes, present.tolist()))} images of {name} into train/val/test "
            f"with each class in each part ({e}); add images or raise prepare.{name}.limit"
        ) from None
    return {"train": rest[fit], "val": rest[val], "test": test}


def load_images(raw: Path, folders: list[str], classes: list[str], size: int, channels: int = 1,
                name: str = "") -> tuple[torch.Tensor, torch.Tensor, list[str], list[dict]]:
    """Decodes raw/<folder> for each class folder (label: its class's index), files sorted by name:
    (images uint8 [N,size,size] or [N,3,size,size], labels int64 [N], names, skipped).

    A file that does not decode, or repeats the bytes of an earlier one, is skipped and reported as
    {"file": "Positive/x.jpg", "reason": ...}; the crack dataset holds exact duplicates
    (PROVENANCE.md), which would otherwise leak between train and test.
    """
    import torch
    from PIL import ImageFile

    files = []
    for folder in folders:
        label = classes.index(folder.rsplit("/", 1)[-1])
        path = Path(raw) / folder
        if not path.is_dir():
            raise DataError(f"{path} not found: run `pipeline download --dataset {name}` first")
        files += [(f"{folder}/{p.name}", p, label) for p in folder_source.class_files(path)]

    # Pillow pads a truncated JPEG with grey instead of failing when this global is True (some
    # libraries set it): a truncated download must be reported, never trained on.
    previous = ImageFile.LOAD_TRUNCATED_IMAGES
    ImageFile.LOAD_TRUNCATED_IMAGES = False
    try:
        # Threads: libjpeg, the resize and sha256 release the GIL; map() keeps the sorted order.
        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
            decoded = list(pool.map(lambda f: _read_and_decode(f[1], size, channels), files))
    finally:
        ImageFile.LOAD_TRUNCATED_IMAGES = previous

    images, labels, names, skipped, first_of = [], [], [], [], {}
    duplicates = 0
    for (file, _, label), (digest, pixels, reason) in zip(files, decoded):
        if reason is not None:
            log.warning("skipped %s: %s", file, reason)
            skipped.append({"file": file, "reason": reason})
        elif digest in first_of:
            duplicates += 1
            skipped.append({"file": file, "reason": f"duplicate of {first_of[digest]} (identical bytes)"})
        else:
            first_of[digest] = file
            images.append(pixels)
            labels.append(label)
            names.append(file)
    if duplicates:  # one line: the full Kaggle crack set has 1,598 of them
        log.info("skipped %d exact duplicates of other files (listed in `skipped`)", duplicates)
    if not images:
        raise DataError(f"{raw}: no readable image among {len(files)} files; run "
                        f"`pipeline download --dataset {name}` again")
    return (torch.from_numpy(np.stack(images)), torch.tensor(labels, dtype=torch.int64), names, skipped)


def content_digest(raw: Path, names: list[str]) -> str:
    """sha256 over the names and contents of these files, in this order (the data version)."""
    h = hashlib.sha256()
    for name in names:
        h.update(f"{name}\0{hashlib.sha256((Path(raw) / name).read_bytes()).hexdigest()}\n".encode())
    return h.hexdigest()


def _read_and_decode(path: Path, size: int, channels: int) -> tuple[str | None, np.ndarray | None, str | None]:
    """(sha256 of the bytes, pixels, None) or (digest or None, None, why it was skipped)."""
    from PIL import UnidentifiedImageError

    from pipeline.data.images import decode_image

    try:
        data = path.read_bytes()
    except OSError as e:
        return None, None, f"cannot read: {e.strerror or e}"
    digest = hashlib.sha256(data).hexdigest()
    if not data:
        return digest, None, "empty file"
    try:
        return digest, decode_image(data, size, channels), None
    except UnidentifiedImageError:
        return digest, None, "not an image Pillow can read (unknown format)"
    except Exception as e:  # noqa: BLE001 - any decoder failure on untrusted bytes means "skip this file"
        return digest, None, f"cannot decode: {e}"
