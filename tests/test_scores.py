"""pipeline.engine.scores against scikit-learn's own figures, which it replaces on the evaluate
stage's path (its import alone was a third of a small model's stage)."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.metrics import classification_report, confusion_matrix

from pipeline.engine import scores


@pytest.mark.parametrize("case", ["balanced", "a class never predicted", "a class never present"])
def test_matrix_and_report_match_scikit_learn(case):
    rng = np.random.default_rng(12)
    actual = rng.integers(0, 10, 5000)
    # About 90% right, the rest anywhere: every cell of the matrix has a chance.
    predicted = np.where(rng.random(5000) < 0.9, actual, rng.integers(0, 10, 5000))
    if case == "a class never predicted":
        predicted[predicted == 3] = 4
    elif case == "a class never present":
        keep = actual != 7
        actual, predicted = actual[keep], predicted[keep]
    names = [f"digit {k}" for k in range(10)]
    matrix = scores.confusion_matrix(actual, predicted, 10)
    expected = classification_report(actual, predicted, labels=range(10), target_names=names,
                                     output_dict=True, zero_division=0)
    assert matrix.tolist() == confusion_matrix(actual, predicted, labels=range(10)).tolist()
    report = scores.classification_report(matrix, names)
    for key in [*names, "macro avg", "weighted avg"]:
        assert report[key] == pytest.approx(expected[key], abs=1e-12), key
    assert report["accuracy"] == pytest.approx(expected["accuracy"], abs=1e-12)
