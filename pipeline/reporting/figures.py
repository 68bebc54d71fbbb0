"""Matplotlib figures shared by the evaluate stage (MLflow artifacts) and the report."""
from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402
import matplotlib.ticker  # noqa: E402
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
    # Fixed margins, not tight_layout, whose extra draw was 40% of this figure's time: the evaluate
    # stage draws it for every seed's run (BENCHMARKS.md, "The report stage"). Its labels are
    # the same for every model; only the title holds the model's name.
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.15, top=0.91, wspace=0.25)
    return _save(fig, target, tight=False)


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
    return _save(fig, target)  # tight: class names of any length (a user's folders) must fit


def overlay_curves(histories: dict[str, list[dict]], metric: str, title: str, target: Path) -> Path:
    """One line per model, e.g. validation accuracy of several models on one chart (lab-B)."""
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for name, history in histories.items():
        ax.plot([r["epoch"] for r in history], [r[metric] for r in history], marker=".", label=name)
    ax.set(xlabel="epoch", ylabel=metric.replace("_", " "), title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, target)


def _save(fig, target: Path, tight: bool = True) -> Path:
    target.parent.mkdir(parents=True, exist_ok=True)
    if tight:
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
    # Fixed margins: tight_layout measures every axes, which is slow for a grid of images.
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=1 - 0.5 / fig.get_figheight(), hspace=0.45)
    return _save(fig, target, tight=False)


def tile_grid(tiles: np.ndarray, title: str, target: Path, cmap: str = "gray", columns: int = 8,
              symmetric: bool = False) -> Path:
    """Small 2-D arrays (N,h,w) in a grid, each scaled on its own (conv filters, feature maps).

    Drawn as one mosaic image, not one axes per tile: tens of axes make matplotlib's layout slow.
    symmetric: a diverging scale centred on 0, so a filter's positive and negative weights read
    as opposite colours.
    """
    tiles = np.asarray(tiles, dtype=float)
    n, h, w = tiles.shape
    columns = min(columns, n)
    rows = -(-n // columns)
    gap = max(1, h // 8)
    mosaic = np.full((rows * (h + gap) - gap, columns * (w + gap) - gap), np.nan)
    for k, tile in enumerate(tiles):
        if symmetric:
            scaled = tile / (np.abs(tile).max() or 1.0)  # [-1, 1]
        else:
            low, high = tile.min(), tile.max()
            scaled = (tile - low) / ((high - low) or 1.0)  # [0, 1]
        r, c = divmod(k, columns)
        mosaic[r * (h + gap):r * (h + gap) + h, c * (w + gap):c * (w + gap) + w] = scaled
    fig, ax = plt.subplots(figsize=(min(1.0 * columns, 10), min(1.0 * rows, 10) + 0.5))
    colours = plt.get_cmap(cmap).with_extremes(bad="white")  # the gaps between tiles
    ax.imshow(mosaic, cmap=colours, vmin=-1 if symmetric else 0, vmax=1, interpolation="nearest")
    ax.axis("off")
    ax.set_title(f"{title} ({n}, numbered row by row from 0)", fontsize=9)
    return _save(fig, target)


def grad_cam_panel(images: np.ndarray, cams: np.ndarray, captions: list[str], title: str,
                   target: Path) -> Path:
    """Each image above its Grad-CAM heat map laid over it."""
    n = len(images)
    fig, axes = plt.subplots(2, n, figsize=(1.7 * n, 3.9), squeeze=False)
    for k in range(n):
        axes[0, k].imshow(images[k], cmap="gray")
        axes[0, k].set_title(captions[k], fontsize=7)
        axes[1, k].imshow(images[k], cmap="gray")
        axes[1, k].imshow(cams[k], cmap="jet", alpha=0.45, vmin=0, vmax=1)
    for ax in axes.flat:
        ax.axis("off")
    fig.suptitle(title, fontsize=9)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.02, top=0.82, wspace=0.08, hspace=0.05)
    return _save(fig, target, tight=False)


def accuracy_against_cost(points: list[dict], cost_label: str, title: str, target: Path) -> Path:
    """One point per model: test accuracy with its 95% interval against a cost (log scale).

    points: {"name", "cost", "accuracy", "low", "high"}.
    """
    fig, ax = plt.subplots(figsize=(6.5, 3.8))
    for p in points:
        # The point is the mean over seeds, the interval the first seed's: with few test images
        # the mean can fall outside it, and an error bar cannot be negative.
        below, above = max(0.0, p["accuracy"] - p["low"]), max(0.0, p["high"] - p["accuracy"])
        ax.errorbar(p["cost"], 100 * p["accuracy"], yerr=[[100 * below], [100 * above]], fmt="o", capsize=3)
        ax.annotate(p["name"], (p["cost"], 100 * p["accuracy"]), fontsize=7,
                    xytext=(4, 4), textcoords="offset points")
    ax.set_xscale("log")
    ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())  # "3x10^3" labels overlap
    ax.margins(x=0.15)  # room for the names beside the outermost points
    ax.set(xlabel=cost_label, ylabel="test accuracy (%), 95% interval", title=title)
    ax.grid(alpha=0.3, which="both")
    return _save(fig, target)
