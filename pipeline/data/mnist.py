"""MNIST: fetch the four official IDX files, verify them, decode them into uint8 tensors."""
from __future__ import annotations

import gzip
import hashlib
import shutil
import urllib.parse
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import torch

from pipeline.data.errors import DataError

# md5 of each file's *decompressed* content, as published for the official files. Checking the
# content rather than the .gz lets one check serve torchvision's mirrors and a local mirror whose
# gzip headers differ (shared/data/mnist/PROVENANCE.md: train-images was re-gzipped, mtime 0).
OFFICIAL_MD5 = {
    "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
    "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
    "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
    "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
}
FILES = [f"{name}.gz" for name in OFFICIAL_MD5]
IMAGE_SIZE = 28
NUM_CLASSES = 10
# Normalisation of lab-C and the course (the training set's mean and std).
MEAN, STD = 0.1307, 0.3081


def fetch(dest: Path, mirror: str | None) -> None:
    """Puts the four .gz files in `dest` from `mirror` (folder or URL) or torchvision's mirrors."""
    scheme = urllib.parse.urlparse(mirror).scheme if mirror else None
    if scheme == "file":
        mirror = urllib.request.url2pathname(urllib.parse.urlparse(mirror).path)
    for filename in FILES:
        if mirror is None:
            # Here, not at the top: torchvision costs every stage that reads MNIST 1.7 s of imports.
            from torchvision.datasets import MNIST

            _download_from_any(MNIST.mirrors, filename, dest)
        elif scheme in ("http", "https"):
            _download_from_any([mirror], filename, dest)
        else:
            source = Path(mirror) / filename
            if not source.is_file():
                raise DataError(
                    f"MNIST mirror folder {mirror}: {filename} not found. The folder must hold the "
                    f"four official files ({', '.join(FILES)}); fix download.mnist.mirror in "
                    "params.yaml or PIPELINE_MNIST_MIRROR, or set it to null to download."
                )
            shutil.copyfile(source, dest / filename)
        verify(dest / filename)


def _download_from_any(mirrors: list[str], filename: str, dest: Path) -> None:
    from torchvision.datasets.utils import download_url

    errors = []
    for base in mirrors:
        url = urllib.parse.urljoin(base.rstrip("/") + "/", filename)
        try:
            download_url(url, root=str(dest), filename=filename)  # torchvision's downloader
            return
        except Exception as e:  # a mirror down is normal: try the next one
            errors.append(f"{url}: {e}")
    raise DataError(
        f"could not download {filename}:\n  " + "\n  ".join(errors)
        + "\nSet download.mnist.mirror in params.yaml (or PIPELINE_MNIST_MIRROR) to a folder "
        "holding the official files to work offline."
    )


def verify(path: Path) -> None:
    """Raises DataError unless the decompressed content has the official md5."""
    name = path.name.removesuffix(".gz")
    expected = OFFICIAL_MD5[name]
    actual = hashlib.md5(_decompress(path)).hexdigest()
    if actual != expected:
        raise DataError(
            f"{path}: decompressed md5 {actual} is not the official {expected}: the file is "
            "corrupt or not the official MNIST file. Replace it with an official copy."
        )


def _decompress(path: Path) -> bytes:
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise DataError(f"{path}: not a readable gzip file ({e}); it is truncated or corrupt.") from None


def read_idx(path: Path) -> np.ndarray:
    """Decodes one gzipped IDX file (uint8 data only, as MNIST uses) with its header checked."""
    data = _decompress(path)
    if len(data) < 4 or data[0] != 0 or data[1] != 0 or data[2] != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (bad magic number)")
    ndim = data[3]
    header = 4 + 4 * ndim
    if len(data) < header:
        raise DataError(f"{path}: truncated IDX header")
    shape = tuple(int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = int(np.prod(shape))
    if len(data) - header != expected:
        raise DataError(
            f"{path}: truncated or corrupt IDX file: header says {expected} values of shape "
            f"{shape}, file holds {len(data) - header}. Run `pipeline download` again."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(shape)


def load_split(raw: Path, part: str) -> tuple[torch.Tensor, torch.Tensor]:
    """(images uint8 [N,28,28], labels int64 [N]) of the official `train` or `t10k` part."""
    images = read_idx(raw / f"{part}-images-idx3-ubyte.gz")
    labels = read_idx(raw / f"{part}-labels-idx1-ubyte.gz")
    if images.shape[0] != labels.shape[0] or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE):
        raise DataError(f"{raw}: {part} images {images.shape} do not match labels {labels.shape}")
    if labels.max() >= NUM_CLASSES:
        raise DataError(f"{raw / f'{part}-labels-idx1-ubyte.gz'}: label {labels.max()} out of range")
    return torch.from_numpy(images.copy()), torch.from_numpy(labels.astype(np.int64))
