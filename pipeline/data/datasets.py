"""The dataset registry: one record per dataset, every fact a stage, a model or the report needs.

A dataset is one module that registers itself (`DATASET = register_dataset(Dataset(...))`), as a
model does: its record (classes, binary or not, channels, normalisation, its place in listings),
its params.yaml sections (typed dataclasses that pipeline.config parses `download.<name>`,
`prepare.<name>`, `evaluate.<name>` with), its environment variables, offline copy and the
tests' smaller settings, and its kind, the code that downloads, prepares and decodes
(pipeline.data.mnist's own IDX files; pipeline.data.imagefolder for any folder of one sub-folder
per class). A folder declared in params.yaml (`download.<name>: {kind: imagefolder, source:
...}`) needs no module: its kind gives its record, with its class names and normalisation read
from its prepare stage's report.

Where the registry finds them:
- built-in: every module of pipeline/data whose top level registers a dataset or a kind, found
  on first use of the registry (no list to keep: a new module is found by being there);
- a plug-in (a dataset of your own, in your own package): list its module under `plugins` in
  params.yaml (`plugins: [my_datasets.digits]`), importable from where the stages run (pip
  install -e your package, or PYTHONPATH); every stage imports it before it parses the dataset
  sections, so its name works in `datasets`, `download`, `prepare` and `train` as a built-in's.
  tests/test_datasets.py adds one this way and runs its stages.

The built-in modules import no torch at the top: config reads this file, and must stay light.
"""
from __future__ import annotations

import importlib
import json
import pkgutil
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import numpy as np

from pipeline.errors import ConfigError, DataError

if TYPE_CHECKING:
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
    # Where it comes in every listing (`datasets`' error, the report, `pipeline datasets`): lowest
    # first; records of equal order keep the order they were registered in.
    order: int = 100
    # Setting (dotted, as in params.yaml) -> the environment variable that wins over it.
    environment: Mapping[str, str] = field(default_factory=dict)
    # Setting -> the folder, relative to a local data folder (../shared/data beside the
    # repository), of a copy that needs no network: what CI and the tests point the setting at.
    offline: Mapping[str, str] = field(default_factory=dict)
    # Setting -> value: the smaller data the tests run on (a stratified slice, a smaller side).
    shrink: Mapping[str, Any] = field(default_factory=dict)

    @cached_property
    def _measured(self) -> dict:
        """What the prepare stage wrote about the data (class names, normalisation)."""
        from pipeline import artifacts

        path = artifacts.prepare_report_file(self.name)
        try:
            return json.loads(path.read_text())
        except (OSError, ValueError):
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
_KINDS: dict[str, Any] = {}
_BUILTIN: set[str] = set()
_loaded = False
# What marks a module of pipeline/data as a built-in dataset or kind: its top level registers one
# (`DATASET = register_dataset(...)`, `KIND = register_kind(...)`). Read from the source, not
# imported, so that the registry imports only the modules that register something.
_MARKER = re.compile(rb"^[A-Z_]+ = register_(?:dataset|kind)\(", re.MULTILINE)


def register_dataset(record: Dataset) -> Dataset:
    """Adds a record (a module's at import; a params.yaml declaration each time params are parsed)."""
    previous = _REGISTRY.get(record.name)
    if previous is not None and not (previous.declared and record.declared):
        raise ValueError(f"dataset {record.name!r} is registered twice")
    _REGISTRY[record.name] = record
    return record


def register_kind(name: str, kind: Any) -> str:
    """Adds a kind of source a params.yaml may declare a dataset of (`download.<name>: {kind: NAME,
    ...}`): `kind.declared(name, raw_prepare) -> Dataset` gives the declared dataset's record."""
    if name in _KINDS and _KINDS[name] is not kind:
        raise ValueError(f"dataset kind {name!r} is registered twice")
    _KINDS[name] = kind
    return name


def forget_declared() -> None:
    """Drops the folders a params.yaml declared: the next params parsed declare their own."""
    for name in [n for n, record in _REGISTRY.items() if record.declared]:
        del _REGISTRY[name]


def _load_builtins() -> None:
    global _loaded
    if _loaded:
        return
    _loaded = True
    import pipeline.data

    for info in sorted(pkgutil.iter_modules(pipeline.data.__path__), key=lambda m: m.name):
        path = Path(info.module_finder.path) / f"{info.name}.py"
        if not info.ispkg and path.is_file() and _MARKER.search(path.read_bytes()):
            importlib.import_module(f"pipeline.data.{info.name}")
    _BUILTIN.update(_REGISTRY)


def load_plugins(modules: Any) -> None:
    """Imports the modules params.yaml lists under `plugins` (each registers its datasets or kinds
    at import, as a built-in does); a module already imported is not imported again."""
    if modules is None:
        return
    if not isinstance(modules, list) or not all(isinstance(m, str) and m for m in modules):
        raise ConfigError(f"plugins: got {modules!r}, expected a list of module names, e.g. [my_datasets.digits]")
    _load_builtins()
    for module in modules:
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"plugins: cannot import {module!r} ({e}); install its package (pip install -e "
                              "<its folder>) or put its folder on PYTHONPATH") from None


def declare_from_params(raw: dict[str, Any]) -> None:
    """Registers each dataset declared under download (`<name>: {kind: imagefolder, ...}`), so that
    every later lookup of its name (a stage, the report) finds its record."""
    forget_declared()
    download = raw.get("download") or {}
    if not isinstance(download, dict):
        return  # the generic parser names the problem
    builtins = builtin_names()
    for name, entry in download.items():
        if isinstance(entry, dict) and "kind" in entry:
            kind = _KINDS.get(entry["kind"])
            if kind is None:
                raise ConfigError(f"download.{name}.kind: got {entry['kind']!r}, expected "
                                  f"{' or '.join(_KINDS) or 'a registered kind'}")
            if name in builtins:
                raise ConfigError(f"download.{name}.kind: {name} is a built-in dataset; declare your folder "
                                  "under another name")
            register_dataset(kind.declared(name, (raw.get("prepare") or {}).get(name)))


def registered() -> dict[str, Dataset]:
    """name -> record, by each record's `order` (the built-ins'), then in the order registered
    (plug-ins, then the folders declared by the params parsed last)."""
    _load_builtins()
    return dict(sorted(_REGISTRY.items(), key=lambda item: item[1].order))


def builtin_names() -> list[str]:
    """The datasets of pipeline/data's own modules, by order."""
    return [name for name in registered() if name in _BUILTIN]


def get_dataset(name: str) -> Dataset:
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(registered())} (a folder of images "
                         f"is declared in params.yaml as download.{name}: {{kind: imagefolder, source: "
                         "<folder>}})") from None
