"""The comparison table's columns, as plain-text cells shared by comparison.md and index.html.

A metric that older metrics files lack (FLOPs, latency, per-epoch time) shows as "–", never fails.
"""
from __future__ import annotations

from typing import Callable

from pipeline.results import ModelResult
from pipeline.stats import mean_and_spread, wilson_interval

MISSING = "–"

# What the source material reports for each model (SPEC.md, "Reported results").
REPORTED = {
    "lenet5": "98.90%, loss 0.0409 (lab-A)",
    "vgg16": "96.29%, loss 0.1203, from scratch, undertrained (lab-A)",
    "resnet50": "92.65%, loss 0.2381, from scratch, undertrained (lab-A)",
    "classic_cnn": "above 98% after 10 epochs (lab-A)",
    "keras_cnn2": "99.36%, best epoch 14 of 19, selected on the test set (lab-B)",
    "keras_cnn3": "98.95%, best epoch 12 of 17, selected on the test set (lab-B)",
    "simple_cnn": "about 99% (course)",
    "mlp": "about 98% (course)",
    "numpy_cnn": "90.51% after 2 epochs, 7.3 samples/s (lab-D)",
}
# Binary (crack) metrics shown next to accuracy, as (key in metrics json, column title).
BINARY_COLUMNS = [("test_precision", "precision"), ("test_recall", "recall"), ("test_f1", "F1"),
                  ("test_roc_auc", "ROC-AUC"), ("threshold", "threshold (val)")]


def accuracy_interval(result: ModelResult) -> tuple[float, float]:
    """95% Wilson interval of the first seed's test accuracy on the test-set size."""
    n = result.test_size
    return wilson_interval(round(result.runs[0]["test_accuracy"] * n), n)


def accuracy_cell(result: ModelResult) -> str:
    """"98.58% [98.33, 98.80]": the accuracy and its 95% interval over the test images.

    With several runs (seeds) it is the mean ± the standard deviation across them, then the
    interval of the first run, which shows how much of the spread the test set alone explains.
    """
    low, high = accuracy_interval(result)
    accuracies = [run["test_accuracy"] for run in result.runs]
    mean, spread = mean_and_spread(accuracies)
    value = f"{100 * mean:.2f}%" + (f" ± {100 * spread:.2f} ({len(accuracies)} seeds)" if len(accuracies) > 1 else "")
    return f"{value} [{100 * low:.2f}, {100 * high:.2f}]"


def flops(value) -> str:
    if value is None:
        return MISSING
    for unit, scale in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if value >= scale:
            return f"{value / scale:.3g} {unit}"
    return f"{value:.0f}"


def _optional(key: str, fmt: Callable) -> Callable[[ModelResult], str]:
    return lambda r: fmt(r.metrics[key]) if r.metrics.get(key) is not None else MISSING


def _latency(r: ModelResult) -> str:
    one, many = r.metrics.get("latency_ms_batch1"), r.metrics.get("latency_ms_batch256")
    if one is None and many is None:
        return MISSING
    return " / ".join(MISSING if v is None else f"{v:.3g}" for v in (one, many))


def _train_time(r: ModelResult) -> str:
    per_epoch = r.metrics.get("train_seconds_per_epoch")
    return f"{r.metrics['train_seconds']:.0f} s" + (f" ({per_epoch:.1f} s/epoch)" if per_epoch is not None else "")


def columns(binary: bool) -> list[tuple[str, Callable[[ModelResult], str]]]:
    """(title, cell of a model) for each column of the comparison table, in order."""
    cols = [
        ("model", lambda r: r.name),
        ("source", lambda r: r.spec.source),
        ("params", lambda r: f"{r.metrics['params']:,}"),
        ("FLOPs / image", lambda r: flops(r.metrics.get("flops_per_image"))),
        ("test accuracy [Wilson CI]", accuracy_cell),
        ("test loss", lambda r: f"{r.metrics['test_loss']:.4f}"),
    ]
    if binary:
        cols += [(title, _optional(key, lambda v: f"{v:.4f}")) for key, title in BINARY_COLUMNS]
    cols += [
        ("best epoch / run (max)", lambda r: f"{r.metrics['best_epoch']} / {r.metrics['epochs_run']} ({r.cfg.epochs})"),
        ("train time", _train_time),
        ("latency ms/image (batch 1 / 256)", _latency),
        ("reported by the source", lambda r: REPORTED.get(r.name, "no figure given")),
    ]
    return cols


def numeric(title: str) -> bool:
    """Right-aligned columns: everything but names and prose."""
    return title not in ("model", "source", "reported by the source")


def p_value(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def cost_text(result: ModelResult, measure: str) -> str:
    value = result.metrics[measure]
    return f"{flops(value)} FLOPs/image" if measure == "flops_per_image" else f"{value:,} params"


def recommendation_line(rec) -> str:
    """One sentence: the most accurate model, and the cheapest one statistically as good."""
    best, cheap = rec.best, rec.cheapest
    line = f"Most accurate: {best.name}, {accuracy_cell(best)} ({cost_text(best, rec.measure)})."
    if rec.compared == 1:
        return line + " It is the only model trained on this dataset."
    if cheap is best and not rec.cheaper:
        return line + f" It is also the cheapest: use {best.name}."
    if cheap is best:
        return line + (f" Each of the {rec.cheaper} cheaper models is significantly less accurate "
                       f"(McNemar, 5%): use {best.name}.")
    return line + (f" Cheapest model not significantly less accurate (McNemar p = {p_value(rec.test.p_value)}"
                   f" ≥ 0.05): {cheap.name}, {100 * cheap.metrics['test_accuracy']:.2f}% with "
                   f"{cost_text(cheap, rec.measure)}: use it when cost matters.")


MCNEMAR_COLUMNS = ["pair (A vs B)", "source", "only A right", "only B right", "p-value", "test", "verdict"]


def mcnemar_cells(test) -> list[str]:
    r = test.result
    return [f"{test.a} vs {test.b}", test.source, f"{r.only_a:,}", f"{r.only_b:,}", p_value(r.p_value),
            r.method, test.verdict]


def against_baseline(results: list[ModelResult]) -> list[str]:
    """Each model against the comparison's first (its baseline): cost ratio and errors removed."""
    base = results[0]
    base_errors = round((1 - base.metrics["test_accuracy"]) * base.test_size)
    lines = []
    for r in results[1:]:
        errors = round((1 - r.metrics["test_accuracy"]) * r.test_size)
        ratio = r.metrics["params"] / base.metrics["params"]
        change = (f"{100 * (base_errors - errors) / base_errors:.0f}% fewer" if errors <= base_errors and base_errors
                  else f"{100 * (errors - base_errors) / max(base_errors, 1):.0f}% more")
        lines.append(f"{r.name}: {ratio:.3g}x the parameters of {base.name}, {errors:,} test errors against "
                     f"{base_errors:,} ({change}).")
    return lines
