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


def _uci_digits() -> ModuleType:
    from pipeline.data import uci_digits

    return uci_digits


def _sdnet() -> ModuleType:
    from pipeline.data import sdnet

    return sdnet


@dataclass(frozen=True)
class OtherSource:
    """Real images of the dataset's classes from a source its training never sees (other writers,
    other walls, other cameras): scored after the test set, selecting nothing, to show which
    model's accuracy survives a shift of the kind a user's own images bring."""

    name: str
    citation: str
    licence: str
    # How the images were made to look like the dataset's (one sentence, shown in the report).
    made_like: str
    module: Callable[[], ModuleType]  # its load(params, side)
    # The setting that points at the images, for a source the repository does not hold.
    setting: str | None = None

    def load(self, params: Params, side: int) -> tuple[np.ndarray, np.ndarray] | None:
        """(uint8 [N, side, side], int64 labels [N]) with the dataset's label values; None when
        params point at no copy of the images (the stage says so and scores nothing)."""
        return self.module().load(params, side)


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
    other_source: OtherSource | None = None

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
            normalisation=(0.1307, 0.3081), pads=True, affine_augment=True, module=_mnist,
            other_source=OtherSource(
                "UCI optical digits", "E. Alpaydin, C. Kaynak (1998), \"Optical Recognition of Handwritten "
                "Digits\", UCI Machine Learning Repository (dataset 80): its test set "
                "(1,797 digits of 13 writers), as scikit-learn ships it (sklearn.datasets.load_digits)", "CC BY 4.0",
                "8x8 counts of ink (17 grey levels) brought into MNIST's format as MNIST itself was made: "
                "scaled into a 20x20 box keeping the aspect ratio, anti-aliased, centred by centre of mass "
                "in 28x28", _uci_digits)),
    # Grayscale, as lab-C; (mean, std) measured on 1,000 random images of ../shared/data/crack
    # at 64x64 (0.6748, 0.1228).
    Dataset("crack", ("no crack", "crack"), binary=True, in_channels=1, normalisation=(0.675, 0.123),
            pads=False, affine_augment=False, module=_crack,
            other_source=OtherSource(
                "SDNET2018 bridge decks", "M. Maguire, S. Dorafshan, R. J. Thomas (2018), \"SDNET2018: A "
                "concrete crack image dataset for machine learning applications\", Utah State University, "
                "doi:10.15142/T3TD19: 100 cracked and 100 uncracked 256x256 deck photos "
                "(pipeline/data/sdnet2018/PROVENANCE.md)", "CC BY 4.0",
                "decoded as the crack photos are (grayscale, Lanczos to the cached side)", _sdnet,
                setting="evaluate.crack.other_source")),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
