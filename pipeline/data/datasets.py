"""The dataset registry: one record per dataset, every fact a stage, a model or the report needs.

A dataset is one module that registers itself (`register_dataset`), as a model does: its record
(classes, binary or not, channels, normalisation), its params.yaml sections (typed dataclasses
that pipeline.config parses `download.<name>`, `prepare.<name>`, `evaluate.<name>` with), and
its kind, the code that downloads, prepares and decodes (pipeline.data.mnist's own IDX files;
pipeline.data.imagefolder for any folder of one sub-folder per class). A folder declared in
params.yaml (`download.<name>: {kind: imagefolder, source: ...}`) is registered by the config
loader, with its class names and normalisation read from its prepare stage's report.

The built-in modules are imported on first use of the registry, and import no torch at the top:
config reads this file, and must stay light for the train stage's MLflow child to start first.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

if TYPE_CHECKING:
    from pathlib import Path

    from pipeline.config import Params



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
    # (params, side) -> (uint8 [N, side, side], int64 labels [N]) with the dataset's label
    # values, or None when params point at no copy of the images (the stage scores nothing).
    loader: Callable[[Any, int], tuple[np.ndarray, np.ndarray] | None]
    # The setting that points at the images, for a source the repository does not hold.
    setting: str | None = None

    def load(self, params: Params, side: int) -> tuple[np.ndarray, np.ndarray] | None:
        return self.loader(params, side)


@dataclass(frozen=True)
class Dataset:
    name: str
    # The code of its kind of source: download(record, params, target) -> str,
    # prepare(record, params, raw) -> (splits, report), image_side(record, params) -> int,
    # decode(record, data, params) -> uint8 pixels (a module or any object with those).
    kind: Any
    # params.yaml section ("download", "prepare", "evaluate") -> the dataclass of this dataset's
    # entry in it; pipeline.config parses `<section>.<name>` with it.
    sections: Mapping[str, type] = field(default_factory=dict)
    in_channels: int = 1
    # Per label value 0, 1, ..., as a person reads it; None: the prepared data's (folder names).
    fixed_class_names: tuple[str, ...] | None = None
    # One logit (BCEWithLogitsLoss) and a decision threshold chosen on validation; None: binary
    # when it has two classes.
    fixed_binary: bool | None = None
    # (mean, std) of the stored pixels scaled to [0, 1], for single-channel models; None: the
    # prepare stage's, measured on the training split.
    fixed_normalisation: tuple[float, float] | None = None
    # A model reading a larger side gets the images zero-padded (LeNet-5 reads MNIST padded by 2,
    # as LeCun et al.) rather than resized; the deep models opt out (ModelSpec.resize).
    pads: bool = False
    # What `augment` does for a single-channel model: a random affine per image on the batch
    # (digits: rotation, shift, scale); otherwise the course's crop, flip, jitter and rotation.
    affine_augment: bool = False
    # Labels that flips and quarter turns leave unchanged (a crack is a crack upside down; a 6 is
    # not a 9): what `geometric` augmentation needs.
    orientation_free: bool = False
    other_source: OtherSource | None = None
    # The kind's own facts (an image folder's class folders, its Kaggle default, ...).
    options: Mapping[str, Any] = field(default_factory=dict)
    # Declared in params.yaml rather than by a module: replaced when params are parsed again.
    declared: bool = False

    @cached_property
    def _measured(self) -> dict:
        """What the prepare stage wrote about the data (class names, normalisation)."""
        from pipeline import artifacts

        path = artifacts.prepare_report_file(self.name)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
            from pipeline.errors import DataError

            raise DataError(f"{path}: missing or unreadable; the class names of dataset {self.name!r} come "
                            f"from its folders: run `pipeline prepare --dataset {self.name}` first") from None

    @property
    def class_names(self) -> tuple[str, ...]:
        if self.fixed_class_names is not None:
            return self.fixed_class_names
        return tuple(self._measured["classes"])

    @property
    def binary(self) -> bool:
        return self.fixed_binary if self.fixed_binary is not None else len(self.class_names) == 2

    @property
    def normalisation(self) -> tuple[float, float]:
        if self.fixed_normalisation is not None:
            return self.fixed_normalisation
        mean, std = self._measured["normalisation"]
        return float(mean), float(std)

    @property
    def num_classes(self) -> int:
        """Outputs of a model on it: one logit when binary."""
        return 1 if self.binary else len(self.class_names)

    def class_name(self, label) -> str:
        """"crack" for crack's label 1 (or "1"); a digit stays itself."""
        return self.class_names[int(label)]

    def image_side(self, params: Params) -> int:
        """The side of the prepared images (what a model reads unless its settings ask for another)."""
        return self.kind.image_side(self, params)

    def download(self, params: Params, target: Path) -> str:
        """Fills the empty folder `target` with the verified raw files; returns what was fetched."""
        return self.kind.download(self, params, target)

    def prepare(self, params: Params, raw: Path) -> tuple[dict[str, Any], dict[str, Any]]:
        """(splits, report): uint8 train/val/test tensors, labels and data_version from the raw
        files; the report holds the split sizes per class and what was skipped."""
        return self.kind.prepare(self, params, raw)

    def decode(self, data: bytes, params: Params) -> np.ndarray:
        """A user's image file, decoded as the prepare stage decodes its images."""
        return self.kind.decode(self, data, params)


_REGISTRY: dict[str, Dataset] = {}
_loaded = False
# The built-in datasets' order (the default report's, and each multi-dataset model's home first),
# whichever module a caller imported first.
BUILTIN_ORDER = ("mnist", "crack")


def register_dataset(record: Dataset) -> Dataset:
    """Adds a record (a module's at import; a params.yaml declaration each time params are parsed)."""
    previous = _REGISTRY.get(record.name)
    if previous is not None and not (previous.declared and record.declared):
        raise ValueError(f"dataset {record.name!r} is registered twice")
    _REGISTRY[record.name] = record
    return record


def forget_declared() -> None:
    """Drops the folders a params.yaml declared: the next params parsed declare their own."""
    for name in [n for n, record in _REGISTRY.items() if record.declared]:
        del _REGISTRY[name]


def _load_builtins() -> None:
    global _loaded
    if not _loaded:
        _loaded = True
        # A new kind of source is one module imported here (and named in BUILTIN_ORDER); a new
        # folder of images is one params.yaml entry (no module).
        from pipeline.data import crack, mnist  # noqa: F401


def registered() -> dict[str, Dataset]:
    """name -> record: the built-in datasets, then those declared by the params parsed last."""
    _load_builtins()
    rank = {name: k for k, name in enumerate(BUILTIN_ORDER)}
    return dict(sorted(_REGISTRY.items(), key=lambda item: rank.get(item[0], len(rank))))


def builtin_names() -> list[str]:
    return [name for name, record in registered().items() if not record.declared]


def get_dataset(name: str) -> Dataset:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(_REGISTRY)} (a folder of images "
                         f"is declared in params.yaml as download.{name}: {{kind: imagefolder, source: "
                         "<folder>}})") from None
