"""Every table of the report as plain-text cells: the one data model that both templates
(comparison.md and index.html) render, so the two can never disagree.

A metric that older metrics files lack (FLOPs, latency, per-epoch time) shows as "–", never fails.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

from pipeline.data.datasets import get_dataset
from pipeline.reporting.comparisons import cost, robustness
from pipeline.reporting.results import ModelResult
from pipeline.reporting.stats import mean_and_spread, wilson_interval

MISSING = "–"

# Binary (crack) metrics shown next to accuracy, as (key in metrics json, column title).
BINARY_COLUMNS = [("test_precision", "precision"), ("test_recall", "recall"), ("test_f1", "F1"),
                  ("test_roc_auc", "ROC-AUC"), ("threshold", "threshold (val)")]


def accuracy_interval(result: ModelResult) -> tuple[float, float]:
    """95% Wilson interval of the first seed's test accuracy on the test-set size."""
    n = result.test_size
    return wilson_interval(round(result.runs[0]["test_accuracy"] * n), n)


def score_cell(result: ModelResult, key: str, n: int | None) -> str:
    """"98.58% [98.33, 98.80]": a score's mean over the seeds and the 95% Wilson interval of the
    first seed's on its n images (none shown without n).

    With several runs (seeds) it is the mean ± the standard deviation across them, then the
    interval of the first run, which shows how much of the spread the images alone explain.
    """
    values = [run[key] for run in result.runs]
    mean, spread = mean_and_spread(values)
    value = f"{100 * mean:.2f}%" + (f" ± {100 * spread:.2f} ({len(values)} seeds)" if len(values) > 1 else "")
    if not n:
        return value
    low, high = wilson_interval(round(values[0] * n), n)
    return f"{value} [{100 * low:.2f}, {100 * high:.2f}]"


def accuracy_cell(result: ModelResult) -> str:
    """The test accuracy's cell: mean (± spread over seeds) [interval over the test images]."""
    return score_cell(result, "test_accuracy", result.test_size)


def validation_cell(result: ModelResult) -> str:
    """The validation accuracy the champion is chosen on, with its interval where the size is known."""
    return score_cell(result, "val_accuracy", result.metrics.get("val_size"))


def other_cell(result: ModelResult) -> str:
    """The score on the other source (balanced accuracy for a binary model), or a dash."""
    key = "other_balanced_accuracy" if "other_balanced_accuracy" in result.metrics else "other_accuracy"
    if result.metrics.get(key) is None:
        return MISSING
    return score_cell(result, key, result.metrics.get("other_size"))


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
        ("reported by the source", reported_text),
    ]
    return cols


def reported_text(r: ModelResult) -> str:
    reported = r.spec.reported
    return reported.text() if reported is not None and reported.dataset == r.dataset else "no figure given"


def numeric(title: str) -> bool:
    """Right-aligned columns: everything but names and prose."""
    return title not in ("model", "source", "reported by the source")


def p_value(p: float) -> str:
    return f"{p:.1e}" if p < 1e-3 else f"{p:.3f}"


def cost_text(result: ModelResult, measure: str) -> str:
    value = result.metrics[measure]
    return f"{flops(value)} FLOPs/image" if measure == "flops_per_image" else f"{value:,} params"


def recommendation_line(rec, other_name: str | None = None) -> str:
    """The answer to "which model should I deploy?": the champion by validation with its test
    estimate, a cheaper model as good on validation, and the most robust on the other source."""
    best, cheap, robust = rec.best, rec.cheaper, rec.most_robust
    line = (f"Deploy {best.name}: the highest validation accuracy, {validation_cell(best)} "
            f"({cost_text(best, rec.measure)}); the register stage's champion, chosen by the same rule "
            f"(ties: fewer parameters, then lower validation loss). Its test accuracy, an estimate made "
            f"after the choice: {accuracy_cell(best)}.")
    if len(rec.ranked) == 1:
        line += " It is the only model trained on this dataset."
    elif cheap is not None:
        ratio = cost(cheap, rec.measure) / cost(best, rec.measure)
        line += (f" When cost matters: {cheap.name}, {100 * cheap.metrics['val_accuracy']:.2f}% on validation, "
                 f"inside the champion's interval, at {cost_text(cheap, rec.measure)} ({ratio:.2g}x).")
    else:
        line += " No cheaper model is inside its validation interval."
    if robust is not None and other_name:
        what = "balanced accuracy" if "other_balanced_accuracy" in robust.metrics else "accuracy"
        line += (f" Most robust on {other_name} ({what}, report-only: it chose nothing): {robust.name}, "
                 f"{other_cell(robust)}")
        line += ("." if robust is best else f", against {other_cell(best)} for {best.name}.")
    return line


DEPLOY_COLUMNS = ["model", "validation accuracy [Wilson CI]", "cost", "test accuracy [Wilson CI]"]


def deploy_table(d, other_name: str | None) -> Table:
    """Every model in the order the champion is chosen (validation), with its cost, and its test and
    other-source scores beside, measured after the choice."""
    header = list(DEPLOY_COLUMNS)
    binary = any("other_roc_auc" in r.metrics for r in d.results)
    if other_name:
        header += [f"on {other_name}" + (" (balanced accuracy)" if binary else "")]
        header += ["ROC-AUC there"] if binary else []
    rows = []
    for r in d.recommendation.ranked:
        row = [r.name, validation_cell(r), cost_text(r, d.recommendation.measure), accuracy_cell(r)]
        if other_name:
            row.append(other_cell(r))
            row += [_optional("other_roc_auc", lambda v: f"{v:.4f}")(r)] if binary else []
        rows.append(row)
    return Table(header, rows, set(range(1, len(header))), [r.name for r in d.recommendation.ranked],
                 d.recommendation.best.name, f"deploy-{d.dataset}")


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


@dataclass
class Table:
    header: list[str]
    rows: list[list[str]]
    numeric: set[int] = field(default_factory=set)  # right-aligned columns, by index
    row_models: list[str] | None = None  # the model of each row (index.html's data-model)
    highlight: str | None = None  # the model whose row stands out (the best)
    id: str | None = None  # index.html's id of the table


def comparison_table(d) -> Table:
    cols = columns(d.binary)
    return Table([title for title, _ in cols], [[cell(r) for _, cell in cols] for r in d.results],
                 {i for i, (title, _) in enumerate(cols) if numeric(title)}, [r.name for r in d.results],
                 d.recommendation.best.name, f"comparison-{d.dataset}")


SOURCE_COLUMNS = ["model", "reported by the source", "ours: test accuracy (mean over seeds)", "difference (points)",
                  "test loss (ours / source)", "our test errors (first seed)", "p-value (one-sided)", "verdict"]


def source_table(d) -> Table:
    rows = []
    for t in d.source_tests:
        r, reported = t.result, t.result.spec.reported
        loss = f"{r.metrics['test_loss']:.4f} / " + (f"{reported.loss:.4f}" if reported.loss is not None else MISSING)
        rows.append([r.name, reported.text(), f"{100 * r.metrics['test_accuracy']:.2f}%", f"{t.difference:+.2f}",
                     loss, f"{t.test.errors:,} of {t.test.n:,} (seed {r.seed})", p_value(t.test.p_value), t.verdict])
    return Table(SOURCE_COLUMNS, rows, {2, 3, 4, 5, 6}, [t.result.name for t in d.source_tests],
                 id=f"source-{d.dataset}")


def mcnemar_table(d) -> Table:
    return Table(MCNEMAR_COLUMNS, [mcnemar_cells(t) for t in d.tests], {2, 3, 4})


def members_table(results: list[ModelResult]) -> Table:
    rows = [[r.name, f"{r.metrics['params']:,}", flops(r.metrics.get("flops_per_image")), accuracy_cell(r),
             f"{r.metrics['test_loss']:.4f}"] for r in results]
    return Table(["model", "params", "FLOPs / image", "test accuracy [Wilson CI]", "test loss"], rows, {1, 2, 3, 4})


def layers_table(layers: list[dict]) -> Table:
    rows = [[row["name"], row["type"], "x".join(map(str, row["output_shape"])) if row["output_shape"] else "",
             f"{row['params']:,}"] for row in layers]
    rows.append(["total", "", "", f"{sum(row['params'] for row in layers):,}"])
    return Table(["name", "type", "output shape", "params"], rows, {3})


def per_class_rows(r: ModelResult) -> list[tuple[str, dict]]:
    """(display name, scores) per class: evaluate's keys in label order, named as the dataset names them."""
    names = get_dataset(r.dataset).class_names
    return list(zip(names, r.per_class["classes"].values()))


def per_class_table(r: ModelResult) -> Table:
    rows = [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", f"{v['support']:,.0f}"]
            for c, v in per_class_rows(r)]
    return Table(["class", "precision", "recall", "F1", "support"], rows, {1, 2, 3, 4})


def _drop(r: ModelResult) -> float:
    """Points of accuracy a model loses from the test set to the other source (negative: a loss)."""
    return 100 * (r.metrics["other_accuracy"] - r.metrics["test_accuracy"])


def other_source_section(d) -> dict:
    """What the report says of the dataset's other source: where its images come from, each model's
    accuracy there against its test accuracy, and the most robust model; or why nothing was scored."""
    source = get_dataset(d.dataset).other_source
    if source is None:
        return {"name": None, "table": None, "verdict": None}
    scored = sorted((r for r in d.results if robustness(r) is not None), key=lambda r: -robustness(r))
    section = {"name": source.name, "citation": source.citation, "licence": source.licence,
               "made_like": source.made_like, "table": None, "verdict": None}
    if not scored:
        section["verdict"] = ("Not scored: no metrics file holds an accuracy on these images. "
                              + (f"Point {source.setting} in params.yaml at them (PROVENANCE.md beside their "
                                 "SHA256SUMS says where they come from), then " if source.setting else "")
                              + "re-run the evaluate stages (`dvc repro`).")
        return section
    binary = "other_roc_auc" in scored[0].metrics
    header = ["model", "test accuracy", f"accuracy on {source.name}", "change (points)"]
    header += ["balanced accuracy there", "ROC-AUC there"] if binary else []
    rows = []
    for r in scored:
        m = r.metrics
        spread = m.get("other_accuracy_std") if m.get("seeds", 1) > 1 else None
        there = f"{100 * m['other_accuracy']:.2f}%" + (f" ± {100 * spread:.2f}" if spread else "")
        row = [r.name, f"{100 * m['test_accuracy']:.2f}%", there, f"{_drop(r):+.2f}"]
        rows.append(row + ([_optional("other_balanced_accuracy", lambda v: f"{100 * v:.2f}%")(r),
                            _optional("other_roc_auc", lambda v: f"{v:.4f}")(r)] if binary else []))
    best, steadiest = scored[0], max(scored, key=_drop)
    what = "balanced accuracy " if "other_balanced_accuracy" in best.metrics else ""
    verdict = (f"Most robust there: {best.name}, {what}{100 * robustness(best):.2f}% of the "
               f"{best.metrics['other_size']:,} images, against {100 * best.metrics['test_accuracy']:.2f}% "
               "on the test set.")
    if steadiest is not best:
        verdict += f" Smallest drop from its test accuracy: {steadiest.name} ({_drop(steadiest):+.2f} points)."
    section["table"] = Table(header, rows, set(range(1, len(header))), [r.name for r in scored], best.name,
                             f"other-source-{d.dataset}")
    section["verdict"] = verdict
    return section
