"""Stratified splits: every class keeps its share in every part."""
from __future__ import annotations

import numpy as np


def stratified_split(labels: np.ndarray, test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Returns (keep, held_out) index arrays, sorted, with class proportions preserved."""
    from sklearn.model_selection import train_test_split  # 2 s of imports: not on every stage's path

    index = np.arange(len(labels))
    keep, held = train_test_split(
        index, test_size=test_fraction, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(keep), np.sort(held)


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> np.ndarray:
    """A stratified sample of `size` indices (sorted)."""
    if size >= len(labels):
        return np.arange(len(labels))
    from sklearn.model_selection import train_test_split

    from pipeline.errors import DataError

    try:
        _, subset = train_test_split(
            np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed, shuffle=True
        )
    except ValueError as e:  # sklearn: a class too small to be sampled in proportion
        raise DataError(f"cannot draw a stratified subset of {size} images from class counts "
                        f"{np.bincount(labels).tolist()} ({e}); add images of the small class") from None
    return np.sort(subset)


# Each class at least this often in every split: a split without a class scores it as perfect
# (no false negatives to miss) and a split with one image of it gives that class's recall as
# 0 or 1; two is also what a stratified split needs to put a class on both of its sides.
MIN_PER_CLASS = 2


def check_classes(labels: dict[str, np.ndarray], classes: list[str], source: str, fix: str,
                  minimum: int = MIN_PER_CLASS) -> None:
    """Raises DataError unless every class has `minimum` images in every split (name -> labels)."""
    from pipeline.errors import DataError

    for split, split_labels in labels.items():
        counts = np.bincount(np.asarray(split_labels), minlength=len(classes))
        for k, cls in enumerate(classes):
            if counts[k] < minimum:
                raise DataError(
                    f"{source}: class {cls} has {counts[k]} image(s) in the {split} split, fewer than "
                    f"the {minimum} every split needs of each class (its scores would mean nothing); {fix}")
