"""Everything the report shows for one dataset, computed once and rendered twice (Markdown, HTML)."""
from __future__ import annotations

import dataclasses
import logging
import signal
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from pipeline import artifacts
from pipeline.artifacts import load_prepared
from pipeline.data.datasets import get_dataset
from pipeline.engine.learners import build_learner
from pipeline.engine.runtime import usable_cores
from pipeline.models.summary import layer_table
from pipeline.reporting import comparisons, figures
from pipeline.reporting.comparisons import Comparison, PairTest, Recommendation, SourceTest
from pipeline.reporting.interpretation import interpret_model
from pipeline.reporting.results import ModelResult, read_csv
from pipeline.reporting.tables import accuracy_interval
from pipeline.speedups import fork_map

log = logging.getLogger(__name__)
GALLERY_SIZE = 18


@dataclass
class ModelSection:
    result: ModelResult
    figures: dict[str, Path] = field(default_factory=dict)  # kind -> PNG, in display order
    layers: list[dict] | None = None
    notes: list[str] = field(default_factory=list)
    errors: int = 0  # test images it gets wrong


@dataclass
class ComparisonSection:
    comparison: Comparison
    results: list[ModelResult]
    figures: list[Path]


@dataclass
class DatasetReport:
    dataset: str
    binary: bool
    results: list[ModelResult]  # in the recommendation's order: by validation, the champion first
    models: list[ModelSection]
    tests: list[PairTest]
    source_tests: list[SourceTest]  # against the figures the sources report
    recommendation: Recommendation
    comparisons: list[ComparisonSection]
    cost_figure: Path


def build_reports(loaded: dict[str, list[ModelResult]], out: Path) -> list[DatasetReport]:
    """Every dataset's report, its figures into `out`; each model's section drawn in a process of
    its own (`model_sections`)."""
    test_x = {dataset: load_prepared(dataset)["test_x"] for dataset in loaded}
    jobs = [(result, test_x[dataset], get_dataset(dataset).class_name, get_dataset(dataset).binary, out)
            for dataset, results in loaded.items() for result in results]
    sections = iter(model_sections(jobs))
    return [build_dataset_report(dataset, results, [next(sections) for _ in results], out)
            for dataset, results in loaded.items()]


def build_dataset_report(dataset: str, results: list[ModelResult], models: list[ModelSection],
                         out: Path) -> DatasetReport:
    """One dataset's tables and its comparison figures into `out`; `models`: its models' sections."""
    recommendation = comparisons.recommend(results)
    measure = recommendation.measure
    cost_figure = figures.accuracy_against_cost(
        [_cost_point(r, measure) for r in recommendation.ranked], _measure_label(measure),
        f"{dataset}: accuracy against cost", out / f"{dataset}_accuracy_vs_cost.png")
    return DatasetReport(dataset, get_dataset(dataset).binary, recommendation.ranked, models,
                         comparisons.pair_tests(results), comparisons.source_tests(results), recommendation,
                         comparison_sections(dataset, results, out), cost_figure)


def model_sections(jobs: list[tuple], workers: int | None = None) -> list[ModelSection]:
    """`model_section(*job)` for each job, in order, on every core: one process per core (or
    `workers`; 1: in this process), each drawing one model at a time with one torch thread.

    The report is the last stage and nothing else runs beside it; its time is matplotlib's (six
    figures a model) and one core's worth of Python, so the sections go in parallel
    (BENCHMARKS.md, "The report stage"). The workers are forks: they start at once with what this
    process has imported and read, and hand back only the small parts of a section. One torch
    thread in either case, so that the PNG files are the same whatever the number of processes
    (tests/test_report_html.py; with two threads, resnet50's Grad-CAM differs in its last bits).
    """
    workers = min(len(jobs), workers or usable_cores())
    if workers < 2:
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as each worker has: Grad-CAM's floats depend on the thread count
        try:
            return [model_section(*job) for job in jobs]
        finally:
            torch.set_num_threads(threads)
    # On Ctrl-C or a failed section the sections under way finish (a few seconds), the rest never
    # start, and the caller removes what was drawn.
    parts = fork_map(_section_parts, jobs, workers, _worker_start)
    return [ModelSection(job[0], *part) for job, part in zip(jobs, parts)]


def _worker_start() -> None:
    # Ctrl-C is the stage's to handle (it stops the pool); one thread each, as many workers as cores.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    torch.set_num_threads(1)


def _section_parts(job: tuple) -> tuple:
    section = model_section(*job)
    return section.figures, section.layers, section.notes, section.errors


def model_section(result: ModelResult, test_x: torch.Tensor, label, binary: bool, out: Path) -> ModelSection:
    log.info("report: %s/%s", result.dataset, result.name)
    section = ModelSection(result)
    stem = f"{result.dataset}_{result.name}"
    section.figures["curves"] = figures.learning_curves(result.curves, result.name, out / f"{stem}_curves.png")
    classes = list(get_dataset(result.dataset).class_names)
    section.figures["confusion"] = figures.confusion_matrix(
        np.array(result.per_class["confusion_matrix"]), classes, f"{result.name}: test confusion matrix",
        out / f"{stem}_confusion.png")
    if binary:
        roc = read_csv(artifacts.curve_points_file(result.dataset, "roc", result.name))
        pr = read_csv(artifacts.curve_points_file(result.dataset, "pr", result.name))
        section.figures["roc_pr"] = figures.roc_and_pr(
            [{k: float(v) for k, v in r.items()} for r in roc], [{k: float(v) for k, v in r.items()} for r in pr],
            result.metrics["test_roc_auc"], result.name, out / f"{stem}_roc_pr.png")
    wrong = np.flatnonzero(~result.correct).tolist()
    section.errors = len(wrong)
    if wrong:
        section.figures["errors"] = error_gallery(result, wrong, test_x, label, binary, out / f"{stem}_errors.png")
    section.layers = layer_rows(result)
    found = interpret_model(result, test_x, label, out)
    section.figures.update(found.figures)
    section.notes += found.notes
    return section


def error_gallery(result: ModelResult, wrong: list[int], test_x: torch.Tensor, label, binary: bool,
                  target: Path) -> Path:
    rows = result.predictions
    if binary:
        # The most confident mistakes first: they say most about what the model misreads.
        threshold = result.metrics["threshold"]
        wrong = sorted(wrong, key=lambda i: -abs(float(rows[i]["probability"]) - threshold))
    shown = wrong[:GALLERY_SIZE]
    captions = [(f"{rows[i]['file']}\n" if rows[i].get("file") else f"test #{i}\n")
                + f"true {label(rows[i]['actual'])}, said {label(rows[i]['predicted'])}"
                + (f"\np={float(rows[i]['probability']):.2f}" if binary else "") for i in shown]
    order = "most confident first" if binary else "first in test order"
    return figures.image_gallery(test_x[torch.tensor(shown)].numpy(), captions,
                                 f"{result.name}: {len(shown)} of its {len(wrong)} test errors ({order})", target)


def layer_rows(result: ModelResult) -> list[dict]:
    """Output shape and parameter count per layer (lab-C), as the model was trained: its dataset's
    channels and classes, its input size."""
    if result.spec.framework != "torch":  # no torch module to hook: the model lists its own layers
        return result.spec.build(dataset=result.dataset).layer_table()
    # Shapes and counts only: never ImageNet weights (nor their download).
    cfg = dataclasses.replace(result.cfg, pretrained=False)
    learner = build_learner(result.name, result.dataset, cfg, torch.device("cpu"), 0)
    return layer_table(learner.evaluated, learner.input_shape)


def comparison_sections(dataset: str, results: list[ModelResult], out: Path) -> list[ComparisonSection]:
    """The sources' comparisons whose models (at least two) were trained, with their charts."""
    sections = []
    for comparison in comparisons.COMPARISONS:
        members = comparisons.present(comparison, results)
        if len(members) < 2:
            continue
        stem = f"{dataset}_{'_vs_'.join(r.name for r in members)}"
        if comparison.overlay:
            pair = {r.name: r.curves for r in members}
            charts = [figures.overlay_curves(pair, f"val_{metric}", f"{' vs '.join(pair)}: validation {metric}",
                                             out / f"{stem}_{metric}.png") for metric in ("accuracy", "loss")]
        else:
            measure = comparisons.cost_measure(members)
            charts = [figures.accuracy_against_cost([_cost_point(r, measure) for r in members],
                                                    _measure_label(measure), comparison.title,
                                                    out / f"{stem}_cost.png")]
        sections.append(ComparisonSection(comparison, members, charts))
    return sections


def _cost_point(result: ModelResult, measure: str) -> dict:
    low, high = accuracy_interval(result)
    return {"name": result.name, "cost": result.metrics[measure], "accuracy": result.metrics["test_accuracy"],
            "low": low, "high": high}


def _measure_label(measure: str) -> str:
    return "FLOPs per image (log)" if measure == "flops_per_image" else "parameters (log)"
