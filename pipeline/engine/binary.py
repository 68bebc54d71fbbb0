"""Binary classification (crack or not): the decision threshold and the figures that describe it.

The threshold is chosen on the validation split, never on test: the probability cut that
maximises validation accuracy (ties: the one closest to 0.5), then applied unchanged to test.
"""
from __future__ import annotations

import numpy as np

# scikit-learn is imported where a binary figure is computed, not with this module: its import
# (0.7 s, with scipy.stats) would otherwise be on every evaluate stage's path, multi-class ones
# included (pipeline.engine.scores).


def choose_threshold(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """The cut on P(positive) with the best accuracy on these (validation) labels."""
    order = np.argsort(probabilities)
    p, y = probabilities[order], labels[order]
    # Cutting just above p[i] calls p[:i+1] negative. Candidates: below all, and every midpoint.
    cuts = np.concatenate([[0.0], (p[:-1] + p[1:]) / 2, [1.0]])
    negatives_below = np.concatenate([[0], np.cumsum(y == 0)])
    positives_above = np.concatenate([[0], np.cumsum(y[::-1] == 1)])[::-1]
    correct = negatives_below + positives_above
    best = np.flatnonzero(correct == correct.max())
    return float(cuts[best[np.argmin(np.abs(cuts[best] - 0.5))]])


def roc_auc(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """ROC-AUC; NaN where the labels hold one class only (it is not defined)."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(labels, probabilities)) if len(set(labels.tolist())) == 2 else float("nan")


def balanced_accuracy(predicted: np.ndarray, labels: np.ndarray) -> float:
    """The mean of each class's recall: a detector that calls everything "no crack" scores 0.5 on
    any mix of classes, whereas its accuracy would be the share of uncracked images."""
    return float(np.mean([(predicted[labels == c] == c).mean() for c in np.unique(labels)]))


def binary_metrics(probabilities: np.ndarray, labels: np.ndarray, threshold: float) -> dict:
    from sklearn.metrics import accuracy_score, f1_score, precision_score, recall_score

    predicted = (probabilities >= threshold).astype(int)
    return {
        "test_accuracy": float(accuracy_score(labels, predicted)),
        "test_precision": float(precision_score(labels, predicted, zero_division=0)),
        "test_recall": float(recall_score(labels, predicted, zero_division=0)),
        "test_f1": float(f1_score(labels, predicted, zero_division=0)),
        "test_roc_auc": roc_auc(probabilities, labels),
        "threshold": threshold,
    }


def roc_points(probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(labels, probabilities)
    return [{"fpr": round(float(f), 6), "tpr": round(float(t), 6)} for f, t in zip(fpr, tpr)]


def pr_points(probabilities: np.ndarray, labels: np.ndarray) -> list[dict]:
    from sklearn.metrics import precision_recall_curve

    precision, recall, _ = precision_recall_curve(labels, probabilities)
    return [{"recall": round(float(r), 6), "precision": round(float(p), 6)}
            for r, p in zip(recall, precision)]
