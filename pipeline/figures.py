"""Matplotlib figures shared by the evaluate stage (MLflow artifacts) and the report."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


def learning_curves(history: list[dict], title: str, target: Path) -> Path:
    """Loss and accuracy per epoch, train against validation (lab-A)."""
    epochs = [r["epoch"] for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(9, 3.4))
    for split in ("train", "val"):
        ax_loss.plot(epochs, [r[f"{split}_loss"] for r in history], marker="o", label=split)
        ax_acc.plot(epochs, [r[f"{split}_accuracy"] for r in history], marker="o", label=split)
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title=f"{title}: loss")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title=f"{title}: accuracy")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.legend()
    return _save(fig, target)


def confusion_matrix(matrix: np.ndarray, labels: list[str], title: str, target: Path) -> Path:
    fig, ax = plt.subplots(figsize=(5, 4.4))
    im = ax.imshow(matrix, cmap="Blues")
    ax.set(xticks=range(len(labels)), yticks=range(len(labels)), xticklabels=labels,
           yticklabels=labels, xlabel="predicted", ylabel="true", title=title)
    threshold = matrix.max() / 2
    for i in range(matrix.shape[0]):
        for j in range(matrix.shape[1]):
            ax.text(j, i, str(matrix[i, j]), ha="center", va="center", fontsize=7,
                    color="white" if matrix[i, j] > threshold else "black")
    fig.colorbar(im, ax=ax, fraction=0.046)
    return _save(fig, target)


def overlay_curves(histories: dict[str, list[dict]], metric: str, title: str, target: Path) -> Path:
    """One line per model, e.g. validation accuracy of several models on one chart (lab-B)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, history in histories.items():
        ax.plot([r["epoch"] for r in history], [r[metric] for r in history], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, target)


def _save(fig, target: Path) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(target, dpi=110)
    plt.close(fig)
    return target
