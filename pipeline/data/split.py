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

    _, subset = train_test_split(
        np.arange(len(labels)), test_size=size, stratify=labels, random_state=seed, shuffle=True
    )
    return np.sort(subset)
