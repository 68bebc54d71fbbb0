"""reports/index.html: one self-contained page (images as data: URIs, inline CSS, no script),
readable from file:// with no server and no network."""
from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from pipeline import report_tables as tables
from pipeline.report_build import DatasetReport, ModelSection

CSS = """
body { font: 15px/1.45 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1.2em 3em; color: #1d2330; }
h1 { margin-top: 1em; } h2 { border-bottom: 2px solid #d8dde6; padding-bottom: .2em; margin-top: 2em; }
table { border-collapse: collapse; margin: .6em 0 1.2em; font-size: 13px; }
th, td { border: 1px solid #d8dde6; padding: .25em .55em; vertical-align: top; }
th { background: #eef1f6; text-align: left; } td.num { text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }
tr.best td { background: #eaf7ee; }
.verdict { background: #f3f6fb; border-left: 4px solid #3b6fd8; padding: .7em 1em; font-size: 16px; }
details { border: 1px solid #d8dde6; border-radius: 4px; margin: .5em 0; padding: .3em .8em; }
summary { cursor: pointer; font-weight: 600; }
img { max-width: 100%; height: auto; display: block; margin: .4em 0; }
.figs { display: flex; flex-wrap: wrap; gap: .8em; align-items: flex-start; }
.note { color: #5b6475; font-size: 13px; }
nav a { margin-right: 1em; }
"""

FIGURE_TITLES = {
    "curves": "Learning curves", "confusion": "Confusion matrix (test)", "roc_pr": "ROC and precision-recall (test)",
    "errors": "Test images it gets wrong", "filters": "conv1 filters", "feature_maps": "Feature maps of conv1",
    "grad_cam": "Grad-CAM (top: input; bottom: heat map over it)",
}


def render(datasets: list[DatasetReport], intro: str) -> str:
    nav = " ".join(f'<a href="#{d.dataset}">{escape(d.dataset.upper())}</a>' for d in datasets)
    body = "\n".join(dataset_html(d) for d in datasets)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            # An empty icon: otherwise the browser asks for /favicon.ico, which file:// lacks.
            f'<link rel="icon" href="data:,"><title>Model comparison</title><style>{CSS}</style></head>\n'
            f"<body><h1>Model comparison</h1><p>{escape(intro)}</p><nav>{nav}</nav>\n{body}\n</body></html>\n")


def dataset_html(d: DatasetReport) -> str:
    parts = [f'<section id="{d.dataset}"><h2>{escape(d.dataset.upper())}</h2>',
             f'<p class="verdict"><strong>Which model?</strong> {escape(tables.recommendation_line(d.recommendation))}</p>',
             comparison_table(d), image(d.cost_figure, f"{d.dataset}: accuracy against cost")]
    if d.tests:
        parts += ["<h3>Do the accuracies really differ? McNemar's test on the test predictions</h3>",
                  '<p class="note">Paired on the same test images: only those one model gets right and the '
                  "other wrong count. Exact binomial test below 25 such images, chi-square with continuity "
                  "correction above. Each pair is tested at 5%, not corrected for the number of pairs.</p>",
                  table(tables.MCNEMAR_COLUMNS, [tables.mcnemar_cells(t) for t in d.tests], numeric={2, 3, 4})]
    if d.comparisons:
        parts.append("<h3>The comparisons the sources make</h3>")
    for section in d.comparisons:
        c = section.comparison
        parts.append(f"<h4>{escape(c.title)} ({escape(c.source)})</h4>")
        rows = [[r.name, f"{r.metrics['params']:,}", tables.flops(r.metrics.get("flops_per_image")),
                 tables.accuracy_cell(r), f"{r.metrics['test_loss']:.4f}"] for r in section.results]
        parts.append(table(["model", "params", "FLOPs / image", "test accuracy [Wilson CI]", "test loss"], rows,
                           numeric={1, 2, 3, 4}))
        parts += [f"<p>{escape(line)}</p>" for line in tables.against_baseline(section.results)]
        parts.append('<div class="figs">' + "".join(image(f, c.title) for f in section.figures) + "</div>")
    parts.append("<h3>Per model</h3>")
    parts += [model_html(m) for m in d.models]
    parts.append("</section>")
    return "\n".join(parts)


def comparison_table(d: DatasetReport) -> str:
    cols = tables.columns(d.binary)
    head = "".join(f"<th>{escape(title)}</th>" for title, _ in cols)
    best = d.recommendation.best.name
    rows = []
    for r in d.results:
        cells = "".join(f'<td{" class=num" if tables.numeric(t) else ""}>{escape(cell(r))}</td>' for t, cell in cols)
        cls = "model-row best" if r.name == best else "model-row"
        rows.append(f'<tr class="{cls}" data-model="{escape(r.name)}">{cells}</tr>')
    return (f'<table class="comparison" id="comparison-{d.dataset}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(rows)}</tbody></table>"
            f'<p class="note">Test accuracy on the held-out test split ({d.results[0].test_size:,} images) with '
            "its 95% Wilson interval; train time is wall time on the machine that trained; latency is per "
            "image, on the evaluating machine. Best model highlighted.</p>")


def model_html(m: ModelSection) -> str:
    r = m.result
    size = r.cfg.input_size or r.spec.input_size
    parts = [f'<details id="{r.dataset}-{r.name}"><summary>{escape(r.name)} ({escape(r.spec.source)}): '
             f"{escape(tables.accuracy_cell(r))}, {m.errors:,} test errors</summary>"]
    if m.layers is not None:
        parts.append(f"<h4>Layers at {size}x{size}</h4>")
        rows = [[row["name"], row["type"], "x".join(map(str, row["output_shape"])) if row["output_shape"] else "",
                 f"{row['params']:,}"] for row in m.layers]
        rows.append(["total", "", "", f"{sum(row['params'] for row in m.layers):,}"])
        parts.append(table(["name", "type", "output shape", "params"], rows, numeric={3}))
    parts.append("<h4>Per class (test)</h4>")
    classes = r.per_class["classes"]
    parts.append(table(["class", "precision", "recall", "F1", "support"],
                       [[c, f"{v['precision']:.4f}", f"{v['recall']:.4f}", f"{v['f1-score']:.4f}", f"{v['support']:,.0f}"]
                        for c, v in classes.items()], numeric={1, 2, 3, 4}))
    for kind, path in m.figures.items():
        parts.append(f"<h4>{escape(FIGURE_TITLES.get(kind, kind))}</h4>{image(path, f'{r.name}: {kind}')}")
    parts += [f'<p class="note">{escape(note)}</p>' for note in m.notes]
    parts.append(f'<p class="note">MLflow run <code>{escape(r.mlflow_run_id)}</code> (experiment '
                 f"<code>{escape(r.dataset)}</code>) holds these figures under <code>report/</code>.</p></details>")
    return "\n".join(parts)


def table(header: list[str], rows: list[list[str]], numeric: set[int] = frozenset()) -> str:
    head = "".join(f"<th>{escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f'<td{" class=num" if i in numeric else ""}>{escape(str(c))}</td>'
                                    for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def image(path: Path, alt: str) -> str:
    data = base64.b64encode(Path(path).read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{escape(alt)}">'
