"""How the champion of a dataset is chosen, in one place: on validation only.

The register stage registers it and the report recommends it ("Which model should I deploy?"),
so the two can never name different models. The test split and the other sources' images rank
nothing: their scores are estimates made after this choice.
"""
from __future__ import annotations

from typing import Callable, TypeVar

T = TypeVar("T")


def rank_by_validation(items: list[T], facts: Callable[[T], tuple[float, int, float]]) -> list[T]:
    """Best first: the highest mean validation accuracy over the seeds; ties: fewer parameters,
    then lower validation loss, then the given order (params.yaml's). `facts(item)` gives
    (val_accuracy, params, val_loss)."""
    def key(indexed: tuple[int, T]) -> tuple:
        i, item = indexed
        accuracy, params, loss = facts(item)
        return (-accuracy, params, loss, i)

    return [item for _, item in sorted(enumerate(items), key=key)]
