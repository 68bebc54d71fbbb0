"""One record per dataset: what every stage and the report need to know about it.

The only list of dataset names; a new dataset is one more record here (plus its download and
decode module beside this one).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Dataset:
    name: str
    class_names: tuple[str, ...]  # per label value 0, 1, ..., as a person reads it
    binary: bool  # one logit (BCEWithLogitsLoss) and a decision threshold chosen on validation
    in_channels: int
    input_size: int  # the side a model reads unless its own settings ask for another

    @property
    def num_classes(self) -> int:
        """Outputs of a model on it: one logit when binary."""
        return 1 if self.binary else len(self.class_names)

    def class_name(self, label) -> str:
        """"crack" for crack's label 1 (or "1"); a digit stays itself."""
        return self.class_names[int(label)]


DATASETS = {d.name: d for d in (
    Dataset("mnist", tuple(str(digit) for digit in range(10)), binary=False, in_channels=1, input_size=28),
    # Grayscale (lab-C); 64 is prepare.crack.image_size's default.
    Dataset("crack", ("no crack", "crack"), binary=True, in_channels=1, input_size=64),
)}


def get_dataset(name: str) -> Dataset:
    try:
        return DATASETS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; known: {', '.join(DATASETS)}") from None
