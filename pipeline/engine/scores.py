"""A classifier's test scores in NumPy: the confusion matrix and per-class precision, recall and F1,
in scikit-learn's `classification_report(output_dict=True, zero_division=0)` form.

Why not scikit-learn's own: importing `sklearn.metrics` (and scipy.stats, which
sklearn.utils.fixes pulls in) cost every `pipeline evaluate` 0.7 s of logreg's 7 (BENCHMARKS.md,
"Stage overheads"), for arithmetic on a K x K matrix.
tests/test_scores.py holds these to scikit-learn's figures. The binary figures (ROC and PR
curves, pipeline.engine.binary) still come from scikit-learn: a crack stage pays its import.
"""
from __future__ import annotations

import numpy as np


def confusion_matrix(actual: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """[classes, classes] counts, rows the actual class, columns the predicted one."""
    return np.bincount(np.asarray(actual) * classes + np.asarray(predicted),
                       minlength=classes * classes).reshape(classes, classes)


def classification_report(matrix: np.ndarray, class_names: list[str]) -> dict:
    """{class name: {precision, recall, f1-score, support}, "accuracy", "macro avg", "weighted avg"}
    from a confusion matrix; a ratio with nothing to divide is 0 (scikit-learn's zero_division=0)."""
    matrix = np.asarray(matrix, dtype=np.float64)
    hits, support, called = np.diag(matrix), matrix.sum(1), matrix.sum(0)
    precision, recall = _ratio(hits, called), _ratio(hits, support)
    f1 = _ratio(2 * precision * recall, precision + recall)
    report: dict = {name: {"precision": float(p), "recall": float(r), "f1-score": float(f), "support": float(s)}
                    for name, p, r, f, s in zip(class_names, precision, recall, f1, support)}
    total = support.sum()
    report["accuracy"] = float(hits.sum() / total) if total else 0.0
    for name, weights in (("macro avg", np.ones_like(support)), ("weighted avg", support)):
        report[name] = {"precision": _average(precision, weights), "recall": _average(recall, weights),
                        "f1-score": _average(f1, weights), "support": float(total)}
    return report


def _ratio(numerator: np.ndarray, denominator: np.ndarray) -> np.ndarray:
    return np.divide(numerator, denominator, out=np.zeros_like(numerator), where=denominator > 0)


def _average(values: np.ndarray, weights: np.ndarray) -> float:
    return float((values * weights).sum() / weights.sum()) if weights.sum() else 0.0
