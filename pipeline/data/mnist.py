"""MNIST (LeCun et al., CC BY-SA 3.0): fetch the four official IDX files, verify them, decode them
into uint8 tensors, and split the official training set into train and a stratified validation
fraction; the official 10k test set is kept whole and never selects anything."""
from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import shutil
import sys
import urllib.parse
import urllib.request
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from pipeline.data.datasets import Dataset, OtherSource, register_dataset
from pipeline.data.split import check_classes, stratified_split, stratified_subset
from pipeline.errors import DataError, check, check_seed

if TYPE_CHECKING:
    import torch

    from pipeline.config import Params

log = logging.getLogger(__name__)
CLASS_NAMES = [str(digit) for digit in range(10)]
MIRROR_ENV = "PIPELINE_MNIST_MIRROR"


@dataclass(frozen=True)
class MnistDownloadConfig:
    # null: torchvision's official mirrors. Otherwise a folder or http(s)/file URL holding the
    # four official *-idx?-ubyte.gz files. The PIPELINE_MNIST_MIRROR environment variable wins.
    mirror: str | None = None


@dataclass(frozen=True)
class MnistPrepareConfig:
    val_fraction: float
    seed: int
    # Keep a stratified subset of this many training images (tests); null keeps all 60,000.
    train_limit: int | None = None

    def __post_init__(self) -> None:
        check(0.0 < self.val_fraction < 1.0, "val_fraction", self.val_fraction, "a number in (0, 1)")
        check_seed(self.seed, "seed")
        check(self.train_limit is None or self.train_limit >= 100, "train_limit",
              self.train_limit, "null or an integer >= 100")


def mirror(params: Params) -> str | None:
    return os.environ.get(MIRROR_ENV) or params.download.mnist.mirror

# md5 of each file's *decompressed* content, as published for the official files. Checking the
# content rather than the .gz lets one check serve torchvision's mirrors and a local mirror whose
# gzip headers differ (shared/data/mnist/PROVENANCE.md: train-images was re-gzipped, mtime 0).
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
# Decompressed size of each official file (IDX header + one byte per value): nothing larger is
# read, so a small gzip that inflates to gigabytes (a "gzip bomb") fails after that many bytes.
OFFICIAL_SIZE = {
    "train-images-idx3-ubyte": 16 + 60000 * 28 * 28,
    "train-labels-idx1-ubyte": 8 + 60000,
    "t10k-images-idx3-ubyte": 16 + 10000 * 28 * 28,
    "t10k-labels-idx1-ubyte": 8 + 10000,
}
FILES = [f"{name}.gz" for name in OFFICIAL_MD5]
IMAGE_SIZE = 28


def fetch(dest: Path, mirror: str | None) -> None:
    """Puts the four .gz files in `dest` from `mirror` (folder or URL) or torchvision's mirrors."""
    scheme = urllib.parse.urlparse(mirror).scheme if mirror else None
    if scheme == "file":
        mirror = urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)
    for filename in FILES:
        if mirror is None:
            # Here, not at the top: torchvision costs every stage that reads MNIST 1.7 s of imports.
            from torchvision.datasets import MNIST

            shown = _download_from_any(MNIST.mirrors, filename, dest)
        elif scheme in ("http", "https"):
            shown = _download_from_any([mirror], filename, dest)
        else:
            source = Path(mirror) / filename
            if not source.is_file():
                raise DataError(
                    f"MNIST mirror folder {mirror}: {filename} not found. The folder must hold the "
                    f"four official files ({', '.join(FILES)}); fix download.mnist.mirror in "
                    "params.yaml or PIPELINE_MNIST_MIRROR, or set it to null to download."
                )
            shutil.copyfile(source, dest / filename)
            shown = str(source)
        # Named by where it came from: the copy in dest is a temp file, gone once this fails.
        verify(dest / filename, shown)


def _download_from_any(mirrors: list[str], filename: str, dest: Path) -> str:
    """Downloads `filename` from the first mirror that has it; returns its URL."""
    from torchvision.datasets.utils import download_url

    errors = []
    for base in mirrors:
        url = urllib.parse.urljoin(base.rstrip("/") + "/", filename)
        try:
            download_url(url, root=str(dest), filename=filename)  # torchvision's downloader
            return url
        except Exception as e:  # a mirror down is normal: try the next one
            errors.append(f"{url}: {e}")
    raise DataError(
        f"could not download {filename}:\n  " + "\n  ".join(errors)
        + "\nSet download.mnist.mirror in params.yaml (or PIPELINE_MNIST_MIRROR) to a folder "
        "holding the official files to work offline."
    )


def verify(path: Path, shown: str | None = None) -> None:
    """Raises DataError unless the decompressed content has the official md5; messages name
    `shown` (the mirror's file or URL) rather than `path`."""
    shown = shown or str(path)
    name = path.name.removesuffix(".gz")
    expected = OFFICIAL_MD5[name]
    actual = hashlib.md5(_decompress(path, shown)).hexdigest()
    if actual != expected:
        raise DataError(
            f"{shown}: decompressed md5 {actual} is not the official {expected}: the file is "
            "corrupt or not the official MNIST file. Replace it with an official copy."
        )


def _decompress(path: Path, shown: str | None = None) -> bytes:
    """The file's content, never more than the official file's size (OFFICIAL_SIZE)."""
    shown = shown or str(path)
    limit = OFFICIAL_SIZE[Path(path).name.removesuffix(".gz")]
    try:
        with gzip.open(path, "rb") as f:
            data = f.read(limit + 1)
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{shown}: not a readable gzip file ({e}); it is truncated or corrupt. "
                        "Replace it with an official copy.") from None
    if len(data) > limit:
        raise DataError(f"{shown}: decompresses to more than {limit} bytes, the official file's size: "
                        "not the official MNIST file (or a gzip bomb). Replace it with an official copy.")
    return data


def read_idx(path: Path) -> np.ndarray:
    """Decodes one gzipped IDX file (uint8 data only, as MNIST uses) with its header checked."""
    data = _decompress(path)
    # 0x0000080N: unsigned bytes in N dimensions; the file name says N (idx1: labels, idx3: images).
    ndim = int(Path(path).name.partition("-idx")[2][:1])
    magic = bytes([0, 0, 0x08, ndim])
    if data[:4] != magic:
        raise DataError(f"{path}: bad magic number 0x{data[:4].hex() or 'none'}, expected 0x{magic.hex()} "
                        f"(an unsigned-byte IDX file of {ndim} dimensions): not the official file. "
                        "Run `pipeline download --dataset mnist` again.")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: header says {expected} values of shape "
            f"{shape}, file holds {len(data) - header}. Run `pipeline download --dataset mnist` again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(raw: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N,28,28], labels int64 [N]) of the official `train` or `t10k` part."""
    import torch

    images = read_idx(raw / f"{part}-images-idx3-ubyte.gz")
    labels = read_idx(raw / f"{part}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{raw}: {part} images {images.shape} do not match labels {labels.shape}")
    if labels.max() >= len(CLASS_NAMES):
        raise DataError(f"{raw / f'{part}-labels-idx1-ubyte.gz'}: label {labels.max()} out of range")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))


def image_side(record: Dataset, params: Params) -> int:
    return IMAGE_SIZE


def decode(record: Dataset, data: bytes, params: Params) -> np.ndarray:
    """A user's digit file, decoded as a crack photo is (grayscale, Lanczos to 28); pipeline.predict
    says how a photo of a digit is made to look like MNIST's."""
    from pipeline.data.images import decode_image

    return decode_image(data, IMAGE_SIZE)


def download(record: Dataset, params: Params, target: Path) -> str:
    source = mirror(params)
    log.info("downloading mnist from %s", source or "torchvision's mirrors")
    fetch(target, source)
    return f"{len(FILES)} verified files"


def prepare(record: Dataset, params: Params, raw: Path) -> tuple[dict, dict]:
    import torch

    cfg = params.prepare.mnist
    train_x, train_y = load_split(raw, "train")
    test_x, test_y = load_split(raw, "t10k")

    if cfg.train_limit is not None:
        keep = stratified_subset(train_y.numpy(), cfg.train_limit, cfg.seed)
        train_x, train_y = train_x[keep], train_y[keep]
    fit, val = stratified_split(train_y.numpy(), cfg.val_fraction, cfg.seed)
    check_classes({"train": train_y[fit].numpy(), "val": train_y[val].numpy(), "test": test_y.numpy()},
                  CLASS_NAMES, f"the MNIST files in {raw}",
                  "they are not the official files: run `pipeline download --dataset mnist` again")

    # Identifies the exact images and split a model was trained on (an MLflow tag).
    version = hashlib.sha256(
        json.dumps({"md5": OFFICIAL_MD5, "split": vars(cfg)}, sort_keys=True).encode()
    ).hexdigest()[:12]
    splits = {
        "train_x": train_x[fit].contiguous(), "train_y": train_y[fit].contiguous(),
        "val_x": train_x[val].contiguous(), "val_y": train_y[val].contiguous(),
        "test_x": test_x, "test_y": test_y,
        "data_version": version,
    }
    counts = {part: {str(k): int(n) for k, n in enumerate(torch.bincount(splits[f"{part}_y"],
                                                                         minlength=len(CLASS_NAMES)))}
              for part in ("train", "val", "test")}
    return splits, {"data_version": version, "limit": cfg.train_limit, "splits": counts}


def _uci_digits(params: Params, side: int):
    from pipeline.data import uci_digits

    return uci_digits.load(params, side)


# lab-C and the course normalise with the training set's mean and std.
DATASET = register_dataset(Dataset(
    "mnist", sys.modules[__name__], {"download": MnistDownloadConfig, "prepare": MnistPrepareConfig},
    in_channels=1, fixed_class_names=tuple(CLASS_NAMES), fixed_binary=False,
    fixed_normalisation=(0.1307, 0.3081), pads=True, affine_augment=True,
    order=0,  # first: the labs' own dataset
    environment={"download.mnist.mirror": MIRROR_ENV},
    offline={"download.mnist.mirror": "mnist"},
    # A stratified 2,000 of the 60,000 training images: an MNIST stage of the tests trains in seconds.
    shrink={"prepare.mnist.train_limit": 2000},
    other_source=OtherSource(
        "UCI optical digits", "E. Alpaydin, C. Kaynak (1998), \"Optical Recognition of Handwritten "
        "Digits\", UCI Machine Learning Repository (dataset 80): its test set "
        "(1,797 digits of 13 writers), as scikit-learn ships it (sklearn.datasets.load_digits)", "CC BY 4.0",
        "8x8 counts of ink (17 grey levels) brought into MNIST's format as MNIST itself was made: "
        "scaled into a 20x20 box keeping the aspect ratio, anti-aliased, centred by centre of mass "
        "in 28x28", _uci_digits),
    # The sources' comparisons, one chart each (`dvc plots show`): title -> {model: column}, drawn
    # for the first seed when every model of it is configured (pipeline.stages).
    options={"plots": {
        "lab-B 2 against 3 convolutions, validation accuracy": {"keras_cnn2": "val_accuracy",
                                                                "keras_cnn3": "val_accuracy"},
        "lab-B 2 against 3 convolutions, validation loss": {"keras_cnn2": "val_loss", "keras_cnn3": "val_loss"},
        "lab-C logistic regression against CNNs, validation accuracy": {
            "logreg": "val_accuracy", "cnn1": "val_accuracy", "cnn2": "val_accuracy"},
        "lab-A deep against small models, validation accuracy": {
            "classic_cnn": "val_accuracy", "lenet5": "val_accuracy", "vgg16": "val_accuracy",
            "resnet50": "val_accuracy"},
    }}))
