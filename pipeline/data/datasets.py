"""One record per dataset: every fact a stage, a model or the report needs to know about it.

The only list of dataset names. A dataset is a record here plus a module beside this one that
implements `download(params, target)`, `prepare(params, raw)` and `image_side(params)`; the
stages call those through the record, never by the dataset's name. The modules are imported on
first use: config imports this file, and must stay light (no torch) for the train stage's MLflow
child to start first.
"""
from __future__ import annotations

from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING, Any, Callable

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.config import Params


def _mnist() -> ModuleType:
    from pipeline.data import mnist

    return mnist


def _crack() -> ModuleType:
    from pipeline.data import crack

    return crack


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]  # per label value 0, 1, ..., as a person reads it
    binary: bool  # one logit (BCEWithLogitsLoss) and a decision threshold chosen on validation
    in_channels: int
    # (mean, std) of the stored pixels scaled to [0, 1], for single-channel models.
    normalisation: tuple[float, float]
    # A model reading a larger side gets the images zero-padded (LeNet-5 reads MNIST padded by 2,
    # as LeCun et al.) rather than resized; the deep models opt out (ModelSpec.resize).
    pads: bool
    # What `augment` does for a single-channel model: a random affine per image on the batch
    # (digits: rotation, shift, scale); otherwise the course's crop, flip, jitter and rotation.
    affine_augment: bool
    module: Callable[[], ModuleType]  # its download, prepare and image_side

    @property
    def num_classes(self) -> int:
        """Outputs of a model on it: one logit when binary."""
        return 1 if self.binary else len(self.class_names)

    def class_name(self, label) -> str:
        """"crack" for crack's label 1 (or "1"); a digit stays itself."""
        return self.class_names[int(label)]

    def image_side(self, params: Params) -> int:
        """The side of the prepared images (what a model reads unless its settings ask for another)."""
        return self.module().image_side(params)

    def download(self, params: Params, target: Path) -> str:
        """Fills the empty folder `target` with the verified raw files; returns what was fetched."""
        return self.module().download(params, target)

    def prepare(self, params: Params, raw: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """(splits, report): uint8 train/val/test tensors, labels and data_version from the raw
        files; the report holds the split sizes per class and what was skipped."""
        return self.module().prepare(params, raw)

    def decode(self, data: bytes, params: Params) -> np.ndarray:
        """A user's image file, decoded as the prepare stage decodes (grayscale, its side)."""
        from pipeline.data.images import decode_image

        return decode_image(data, self.image_side(params))


DATASETS = {d.name: d for d in (
    # lab-C and the course normalise with the training set's mean and std.
    Dataset("mnist", tuple(str(digit) for digit in range(10)), binary=False, in_channels=1,
            normalisation=(0.1307, 0.3081), pads=True, affine_augment=True, module=_mnist),
    # Grayscale, as lab-C; (mean, std) measured on 1,000 random images of ../shared/data/crack
    # at 64x64 (0.6748, 0.1228).
    Dataset("crack", ("no crack", "crack"), binary=True, in_channels=1, normalisation=(0.675, 0.123),
            pads=False, affine_augment=False, module=_crack),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
