"""Handwritten digits from another source than MNIST, in MNIST's format: the test set of the UCI
"Optical Recognition of Handwritten Digits" (Alpaydin & Kaynak 1998, CC BY 4.0), 1,797 digits by
13 writers, none of whom wrote MNIST's, as scikit-learn ships it (sklearn.datasets.load_digits).

UCI's digits are NIST-normalised 32x32 bitmaps whose 4x4 blocks were counted: 8x8 images of
17 grey levels (0..16 pixels of ink), ink high. MNIST was made from NIST's binary digits by
scaling each into a 20x20 box keeping its aspect ratio, the anti-aliasing of that resampling
giving its grey levels, then placing it in 28x28 with its centre of mass at the centre (LeCun et
al. 1998). The same recipe here, on the ink counts: what still differs (writers, pen, scanner,
a 4x coarser grid and so thicker, blurrier strokes) is the shift a robust model should survive.
"""
from __future__ import annotations

import gzip
import hashlib
import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from pipeline.errors import DataError

SIDE = 28  # MNIST's field
BOX = 20  # MNIST's digits fit a 20x20 box, aspect ratio kept
# Where MNIST's digits have their centre of mass, in (row, column) pixel indices: the mean over
# the official 10k test images is (13.99, 14.01), spread 0.29 px (whole-pixel placement).
CENTRE = 14.0
LEVELS = 16  # UCI's counts: 0..16 pixels of ink in a 4x4 block
# sha256 of load_digits()'s 1,797 8x8 counts (uint8, row-major) followed by its labels (uint8),
# measured with scikit-learn 1.9.1: a scikit-learn that ships other digits fails the stage
# instead of silently changing what "other source" means.
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def load(params, side: int) -> tuple[np.ndarray, np.ndarray]:
    """The 1,797 digits as MNIST uint8 [N, 28, 28] (white on black) and their labels (int64)."""
    if side != SIDE:
        raise ValueError(f"UCI digits are made in MNIST's 28x28 format, not {side}x{side}")
    counts, labels = uci_test_set()
    return np.stack([to_mnist_format(c) for c in counts]), labels.astype(np.int64)


def uci_test_set() -> tuple[np.ndarray, np.ndarray]:
    """(uint8 [1797, 8, 8] ink counts 0..16, uint8 labels), checked against DIGITS_SHA256."""
    table = np.loadtxt(gzip.open(digits_file(), "rt"), delimiter=",", dtype=np.float64)
    counts, labels = table[:, :-1].reshape(-1, 8, 8).astype(np.uint8), table[:, -1].astype(np.uint8)
    found = hashlib.sha256(counts.tobytes() + labels.tobytes()).hexdigest()
    if found != DIGITS_SHA256:
        raise DataError(f"{digits_file()} holds digits with sha256 {found}, not the UCI test set this "
                        f"pipeline scores ({DIGITS_SHA256}): reinstall scikit-learn (`pip install -e .`) "
                        "or check what changed in its digits.csv.gz")
    return counts, labels


def digits_file() -> Path:
    """scikit-learn's copy of the digits, the file `sklearn.datasets.load_digits()` reads.

    Found, not imported: importing scikit-learn's loader costs the evaluate stage 0.7 s (BENCHMARKS.md,
    "Stage overheads") for a 70 KB table; DIGITS_SHA256 proves these are its digits."""
    spec = importlib.util.find_spec("sklearn")
    if spec is None or spec.origin is None:
        raise DataError("scikit-learn is not installed, and its copy of UCI's digits with it: "
                        "`pip install -e .` installs it")
    path = Path(spec.origin).parent / "datasets" / "data" / "digits.csv.gz"
    if not path.is_file():
        raise DataError(f"{path} is missing: scikit-learn {path.parents[2].name}'s install is incomplete; "
                        "reinstall it (`pip install --force-reinstall scikit-learn`)")
    return path


def to_mnist_format(counts: np.ndarray) -> np.ndarray:
    """One 8x8 UCI digit (ink counts 0..16) -> MNIST's 28x28 uint8: cropped to its ink, scaled
    into a 20x20 box keeping its aspect ratio, centred by centre of mass."""
    ink = counts.astype(np.float32) * (255.0 / LEVELS)
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    if not len(rows):
        raise DataError("a UCI digit without ink cannot be centred")
    crop = ink[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
    scale = BOX / max(crop.shape)
    height, width = (max(1, round(n * scale)) for n in crop.shape)
    # Bilinear on the grey levels: the anti-aliasing of MNIST's resampling. Lanczos or bicubic
    # would ring (dark halos clipped to 0, bright overshoot) on blocks this coarse.
    box = np.asarray(Image.fromarray(crop, mode="F").resize((width, height), Image.Resampling.BILINEAR))
    box = np.clip(np.rint(box), 0, 255).astype(np.uint8)
    total = box.sum(dtype=np.float64)
    centre_row = (box.sum(1) * np.arange(height)).sum() / total
    centre_col = (box.sum(0) * np.arange(width)).sum() / total
    # Whole-pixel placement, as MNIST's spread shows; a digit never leaves the field.
    top = int(np.clip(round(CENTRE - centre_row), 0, SIDE - height))
    left = int(np.clip(round(CENTRE - centre_col), 0, SIDE - width))
    field = np.zeros((SIDE, SIDE), dtype=np.uint8)
    field[top:top + height, left:left + width] = box
    return field
