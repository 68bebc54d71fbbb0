"""reports/index.html and reports/comparison.md, rendered from the Jinja2 templates in
pipeline/reporting/templates/ out of one data model (`page`), so the two say the same.

index.html is one self-contained page (images as data: URIs, the CSS inlined, no script),
readable from file:// with no server and no network.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path

import jinja2

from pipeline.reporting import tables
from pipeline.reporting.build import DatasetReport, ModelSection

TEMPLATES = Path(__file__).parent / "templates"

FIGURE_TITLES = {
    "curves": "Learning curves", "confusion": "Confusion matrix (test)", "roc_pr": "ROC and precision-recall (test)",
    "errors": "Test images it gets wrong", "filters": "conv1 filters", "feature_maps": "Feature maps of conv1",
    "grad_cam": "Grad-CAM (top: input; bottom: heat map over it)",
}
SOURCES_NOTE = ("Ours is the mean test accuracy over the model's seeds; the difference is ours minus the "
                "source's, in percentage points. The p-value is a one-sided exact binomial test of the first "
                "seed's test errors (the run whose predictions the page shows) against the source's error rate "
                "(H1: ours is lower), at 5%; the seeds are not pooled, since each scores the same test images. "
                "\"About\" and \"above\" figures are taken at their value.")


def page(reports: list[DatasetReport], intro: str) -> dict:
    """What both templates render: text cells and figure paths only, no formatting left to them."""
    return {"intro": intro, "datasets": [_dataset(d) for d in reports]}


def render_html(view: dict) -> str:
    return _environment().get_template("index.html.j2").render(view)


def render_markdown(view: dict) -> str:
    text = _environment().get_template("comparison.md.j2").render(view)
    # Templates' block tags leave runs of blank lines: one blank line between Markdown blocks.
    return re.sub(r"\n{3,}", "\n\n", text).strip() + "\n"


def _dataset(d: DatasetReport) -> dict:
    other = tables.other_source_section(d)
    scored_there = other["table"] is not None
    return {
        "id": d.dataset, "title": d.dataset.upper(), "test_size": d.results[0].test_size,
        "recommendation": tables.recommendation_line(d.recommendation, other["name"] if scored_there else None),
        "deploy": tables.deploy_table(d, other["name"] if scored_there else None),
        "comparison": tables.comparison_table(d), "cost_figure": d.cost_figure,
        "sources": tables.source_table(d) if d.source_tests else None, "sources_note": SOURCES_NOTE,
        "mcnemar": tables.mcnemar_table(d) if d.tests else None,
        "other": other,
        "comparisons": [{"title": s.comparison.title, "source": s.comparison.source,
                         "table": tables.members_table(s.results), "lines": tables.against_baseline(s.results),
                         "figures": s.figures} for s in d.comparisons],
        "models": [_model(m) for m in d.models],
    }


def _model(m: ModelSection) -> dict:
    r = m.result
    worst_name, worst = min(tables.per_class_rows(r), key=lambda kv: kv[1]["f1-score"])
    return {
        "id": f"{r.dataset}-{r.name}", "name": r.name, "source": r.spec.source, "dataset": r.dataset,
        "accuracy": tables.accuracy_cell(r), "errors": m.errors, "macro_f1": f"{r.metrics['test_macro_f1']:.4f}",
        "hardest": f"{worst_name} (F1 {worst['f1-score']:.4f})", "size": r.cfg.input_size or r.spec.input_size,
        "layers": tables.layers_table(m.layers) if m.layers is not None else None,
        "per_class": tables.per_class_table(r),
        "figures": [{"kind": kind, "title": FIGURE_TITLES.get(kind, kind), "path": path}
                    for kind, path in m.figures.items()],
        "notes": m.notes, "run_id": r.mlflow_run_id,
    }


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), undefined=jinja2.StrictUndefined,
                             autoescape=jinja2.select_autoescape(enabled_extensions=("html.j2",)),
                             keep_trailing_newline=True)
    env.filters["data_uri"] = _data_uri
    # A figure's path as seen from reports/ (the temp folder it is drawn in becomes reports/).
    env.filters["figure_path"] = lambda path: f"figures/{Path(path).name}"
    env.filters["md_cell"] = lambda cell: str(cell).replace("|", "\\|")
    return env


def _data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")
