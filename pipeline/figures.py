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


def roc_and_pr(roc: list[dict], pr: list[dict], auc: float, title: str, target: Path) -> Path:
    """ROC and precision-recall curves of one binary classifier on the test set."""
    fig, (ax_roc, ax_pr) = plt.subplots(1, 2, figsize=(9, 3.8))
    ax_roc.plot([r["fpr"] for r in roc], [r["tpr"] for r in roc], label=f"AUC {auc:.4f}")
    ax_roc.plot([0, 1], [0, 1], ls="--", color="grey", lw=0.8)
    ax_roc.set(xlabel="false positive rate", ylabel="true positive rate", title=f"{title}: ROC")
    ax_pr.plot([r["recall"] for r in pr], [r["precision"] for r in pr])
    ax_pr.set(xlabel="recall", ylabel="precision", title=f"{title}: precision-recall")
    for ax in (ax_roc, ax_pr):
        ax.grid(alpha=0.3)
    ax_roc.legend(loc="lower right")
    return _save(fig, target)


def image_gallery(images: np.ndarray, captions: list[str], title: str, target: Path, columns: int = 6) -> Path:
    """uint8 grayscale images (N,H,W) in a grid, each with its caption."""
    rows = max(1, -(-len(images) // columns))
    fig, axes = plt.subplots(rows, columns, figsize=(1.9 * columns, 2.5 * rows), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, caption in zip(axes.flat, images, captions):
        ax.imshow(image, cmap="gray", vmin=0, vmax=255)
        ax.set_title(caption, fontsize=7)
    fig.suptitle(title, fontsize=10)
    return _save(fig, target)
