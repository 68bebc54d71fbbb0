"""The report stage on a real tiny pipeline run: reports/index.html as a person sees it (headless
Chromium), its statistics, and its figures in the models' MLflow runs."""
from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import mlflow
import pytest
import yaml

from pipeline import artifacts, evaluate, report, train
from pipeline.data.datasets import get_dataset
from pipeline.engine.runtime import usable_cores
from pipeline.reporting import build
from pipeline.reporting.comparisons import recommend
from pipeline.reporting.stats import mcnemar_from_counts
from pipeline.tracking.store import TrackingError
from tests.browser import headless_chromium, save_screenshot
from tests.conftest import REPO, new_store, shrunk_params, shrunk_params_dict

MNIST_MODELS = ["logreg", "cnn1", "numpy_cnn"]
CRACK_MODELS = ["crack_cnn"]


def _params(**kwargs):
    # logreg trains with two seeds: the table's mean ± spread and a run per seed.
    return shrunk_params(models=MNIST_MODELS, crack_models=CRACK_MODELS,
                         train={"mnist": {"logreg": {"seeds": [12, 13]}}}, **kwargs)


@pytest.fixture(scope="module")
def reported(prepared_workspace, tmp_path_factory, empty_store):
    """Train, evaluate and report 3 MNIST models and crack_cnn (1 epoch each) in a workspace of
    its own (other tests train the same names elsewhere), with its own MLflow store."""
    ws = tmp_path_factory.mktemp("report_ws")
    for dataset in ("mnist", "crack"):
        (ws / "data" / dataset).mkdir(parents=True)
        shutil.copy(prepared_workspace / artifacts.prepared_file(dataset), ws / artifacts.prepared_file(dataset))
    uri = new_store(empty_store, ws)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ws)
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.setenv("PIPELINE_GROUP", "pytest-report")
        params = _params()
        for dataset in ("mnist", "crack"):
            for model in params.models(dataset):
                train.main(params, dataset, model)
                evaluate.main(params, dataset, model)
        reports = report.main(params)
    return ws, uri, {r.dataset: r for r in reports}


def _html(ws: Path) -> str:
    return (ws / "reports" / "index.html").read_text()


def test_page_renders_in_headless_chromium(reported):
    ws, _, reports = reported
    browser = headless_chromium()
    try:
        browser.get((ws / "reports" / "index.html").as_uri())
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert errors == [], f"console errors: {errors}"
        # Every image decoded, including those inside closed <details>.
        images = browser.execute_script(
            "return Array.from(document.images).map(i => [i.alt, i.complete, i.naturalWidth])")
        assert len(images) >= 20
        broken = [alt for alt, complete, width in images if not (complete and width > 0)]
        assert broken == [], f"images that did not decode: {broken}"
        for dataset, models in (("mnist", MNIST_MODELS), ("crack", CRACK_MODELS)):
            rows = browser.execute_script(
                f"return Array.from(document.querySelectorAll('#comparison-{dataset} tbody tr'))"
                ".map(r => r.dataset.model)")
            assert sorted(rows) == sorted(models)
        sources = browser.execute_script(
            "return Array.from(document.querySelectorAll('#source-mnist tbody tr')).map(r => r.dataset.model)")
        assert sources == ["numpy_cnn"]  # of the three, only lab-D's model has a reported figure
        assert browser.find_element("css selector", "#mnist .verdict").text.startswith("Deploy ")
        deploy = browser.execute_script(
            "return Array.from(document.querySelectorAll('#deploy-mnist tbody tr')).map(r => r.dataset.model)")
        assert sorted(deploy) == sorted(MNIST_MODELS)
        # The screenshot a person would see, every model's section opened, for the CI artifacts.
        browser.execute_script("document.querySelectorAll('details').forEach(d => d.open = true)")
        height = browser.execute_script("return document.body.scrollHeight")
        browser.set_window_size(1280, min(height, 16000))
        save_screenshot(browser, "report_index.png", min_height=1600)
    finally:
        browser.quit()


def test_page_is_self_contained(reported):
    ws, _, _ = reported
    html = _html(ws)
    assert "<script" not in html.lower()
    sources = re.findall(r'<img src="([^"]{0,30})', html)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources)
    # No request leaves the file: no http(s) resource, no relative file beside it.
    assert not re.search(r'(src|href)="(https?:|//|figures/)', html)


class _Tables(HTMLParser):
    """Each <table id=...> of the page as rows of cell texts, with each row's data-model."""

    def __init__(self):
        super().__init__()
        self.tables, self._table, self._row, self._cell = {}, None, None, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table" and attrs.get("id"):
            self._table = self.tables.setdefault(attrs["id"], [])
        elif tag == "tr" and self._table is not None and "data-model" in attrs:
            self._row = [attrs["data-model"]]
        elif tag == "td" and self._row is not None:
            self._cell = ""

    def handle_data(self, data):
        if self._cell is not None:
            self._cell += data

    def handle_endtag(self, tag):
        if tag == "td" and self._row is not None:
            self._row.append(self._cell)
            self._cell = None
        elif tag == "tr" and self._row is not None:
            self._table.append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None


def _tables(ws: Path) -> dict[str, list[list[str]]]:
    parser = _Tables()
    parser.feed(_html(ws))
    return parser.tables


def test_every_model_has_its_row_and_each_reported_figure_its_test(reported):
    ws, _, _ = reported
    tables = _tables(ws)
    for dataset, models in (("mnist", MNIST_MODELS), ("crack", CRACK_MODELS)):
        assert sorted(row[0] for row in tables[f"comparison-{dataset}"]) == sorted(models)
    assert "source-crack" not in tables  # no source reports a crack figure
    (row,) = tables["source-mnist"]
    with open(ws / artifacts.predictions_file("mnist", "numpy_cnn")) as f:
        predictions = list(csv.DictReader(f))
    n, errors = len(predictions), sum(r["actual"] != r["predicted"] for r in predictions)
    accuracy = json.loads((ws / artifacts.metrics_file("mnist", "numpy_cnn")).read_text())["test_accuracy"]
    # lab-D's 90.51%, error rate 0.0949: P(at most our errors) term by term, in logs (n is 10,000).
    by_hand = sum(math.exp(math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)
                           + k * math.log(0.0949) + (n - k) * math.log(0.9051)) for k in range(errors + 1))
    p = f"{by_hand:.1e}" if by_hand < 1e-3 else f"{by_hand:.3f}"
    verdict = "significantly above the source" if by_hand < 0.05 else "not significantly above the source"
    assert row[:5] == ["numpy_cnn", "numpy_cnn", "90.51%, after 2 epochs, 7.3 samples/s (lab-D)",
                       f"{100 * accuracy:.2f}%", f"{100 * (accuracy - 0.9051):+.2f}"]
    assert row[6:8] == [f"{errors:,} of {n:,} (seed 12)", p] and row[8].startswith(verdict)
    md = (ws / "reports" / "comparison.md").read_text()
    assert (f"| numpy_cnn | 90.51%, after 2 epochs, 7.3 samples/s (lab-D) | {100 * accuracy:.2f}% | "
            f"{100 * (accuracy - 0.9051):+.2f} |") in md


def test_the_other_source_section_ranks_the_models_there_and_names_the_most_robust(reported):
    ws, _, _ = reported
    metrics = {m: json.loads((ws / artifacts.metrics_file("mnist", m)).read_text()) for m in MNIST_MODELS}
    ranked = sorted(MNIST_MODELS, key=lambda m: -metrics[m]["other_accuracy"])
    rows = _tables(ws)["other-source-mnist"]
    assert [row[0] for row in rows] == ranked
    best = metrics[ranked[0]]
    assert rows[0][2:5] == [f"{100 * best['test_accuracy']:.2f}%", f"{100 * best['other_accuracy']:.2f}%",
                            f"{100 * (best['other_accuracy'] - best['test_accuracy']):+.2f}"]
    md = (ws / "reports" / "comparison.md").read_text()
    assert "### On images from another source: UCI optical digits" in md and "Alpaydin" in md
    assert (f"Most robust there: {ranked[0]}, {100 * best['other_accuracy']:.2f}% of the 1,797 images, "
            f"against {100 * best['test_accuracy']:.2f}% on the test set.") in md
    assert "On images from another source: SDNET2018 bridge decks" in _html(ws)


def test_only_the_datasets_params_lists_are_reported(reported, tmp_path, monkeypatch):
    ws, _, _ = reported
    params = _params()
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy, ignore=shutil.ignore_patterns("crack"))  # no crack input at all
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    # What params.yaml with `datasets: [mnist]` gives: crack left out, with no models.
    report.main(dataclasses.replace(params, datasets=("mnist",), train={"mnist": params.train["mnist"], "crack": {}}))
    tables = _tables(copy)
    assert "comparison-mnist" in tables and "comparison-crack" not in tables
    assert '<section id="crack">' not in _html(copy)
    assert "## CRACK" not in (copy / "reports" / "comparison.md").read_text()


def test_tables_statistics_and_verdict_are_computed_from_the_predictions(reported):
    ws, _, reports = reported
    mnist = reports["mnist"]
    correct = {}
    for model in MNIST_MODELS:
        with open(ws / artifacts.predictions_file("mnist", model)) as f:
            correct[model] = [r["actual"] == r["predicted"] for r in csv.DictReader(f)]
    only_logreg = sum(a and not b for a, b in zip(correct["logreg"], correct["cnn1"]))
    only_cnn1 = sum(b and not a for a, b in zip(correct["logreg"], correct["cnn1"]))
    (pair,) = [t for t in mnist.tests if (t.a, t.b) == ("logreg", "cnn1")]
    assert (pair.result.only_a, pair.result.only_b) == (only_logreg, only_cnn1)
    assert pair.result.p_value == mcnemar_from_counts(only_logreg, only_cnn1).p_value
    html = _html(ws)
    assert f"<td>logreg vs cnn1</td><td>lab-C</td><td class=num>{only_logreg:,}</td>" in html

    # The model to deploy: the best mean validation accuracy (ties: fewer parameters, lower
    # validation loss), as the register stage chooses, whatever the test predictions say.
    metrics = {m: json.loads((ws / artifacts.metrics_file("mnist", m)).read_text()) for m in MNIST_MODELS}
    by_validation = sorted(MNIST_MODELS, key=lambda m: (-metrics[m]["val_accuracy"], metrics[m]["params"],
                                                        metrics[m]["val_loss"]))
    best = by_validation[0]
    assert mnist.recommendation.best.name == best
    assert [r.name for r in mnist.results] == by_validation
    deploy = _tables(ws)["deploy-mnist"]  # each row: its data-model, then its cells
    assert [row[0] for row in deploy] == by_validation and deploy[0][1] == best
    md = (ws / "reports" / "comparison.md").read_text()
    assert f"Deploy {best}: the highest validation accuracy, " in html and f"Deploy {best}: " in md
    assert "### Which model should I deploy?" in md and "an estimate made after the choice" in md
    assert "Deploy crack_cnn:" in html and "It is the only model trained on this dataset." in html
    accuracy = sum(correct[best]) / len(correct[best])
    assert re.search(rf"{100 * accuracy:.2f}% \[\d\d\.\d\d, \d\d\.\d\d\]", html)


def test_several_seeds_show_their_mean_and_spread(reported):
    ws, uri, reports = reported
    runs = json.loads((ws / artifacts.seed_metrics_file("mnist", "logreg")).read_text())
    accuracies = [r["test_accuracy"] for r in runs]
    mean = sum(accuracies) / 2
    spread = abs(accuracies[0] - accuracies[1]) / 2 ** 0.5
    assert f"{100 * mean:.2f}% ± {100 * spread:.2f} (2 seeds)" in _html(ws)
    (section,) = [m for m in reports["mnist"].models if m.result.name == "logreg"]
    assert section.result.mlflow_run_id == runs[0]["mlflow_run_id"]  # figures: the first seed's
    client = mlflow.MlflowClient(uri)
    assert {client.get_run(r["mlflow_run_id"]).data.tags["seed"] for r in runs} == {"12", "13"}


def test_every_model_section_holds_its_figures_and_tables(reported):
    ws, _, reports = reported
    sections = {m.result.name: m for r in reports.values() for m in r.models}
    for name in ("cnn1", "crack_cnn"):
        assert {"curves", "confusion", "errors", "filters", "feature_maps", "grad_cam"} <= set(sections[name].figures)
    assert "roc_pr" in sections["crack_cnn"].figures
    # The NumPy model: no torch module to interpret, said so on the page; its layers still listed.
    assert "filters" not in sections["numpy_cnn"].figures
    assert sum(row["params"] for row in sections["numpy_cnn"].layers) == 1_979
    html = _html(ws)
    assert "numpy_cnn is written in NumPy (no torch module to hook)" in html
    assert "Grad-CAM at layer 14 (ReLU" in html  # crack_cnn: the ReLU after its last conv (12)
    assert html.count("<h4>Per class (test)</h4>") == len(MNIST_MODELS + CRACK_MODELS)
    assert "<h4>CNN against logistic regression: complexity and accuracy (lab-C)</h4>" in html


def test_figures_drawn_in_parallel_are_those_one_process_draws(reported, tmp_path, monkeypatch):
    # The fixture's report drew its sections in one forked process per core (build.model_sections).
    if usable_cores() < 2:
        pytest.skip("one usable core: the fixture's report drew every section in one process (nothing to compare)")
    ws, _, reports = reported
    monkeypatch.chdir(ws)
    (drawn,) = [m for m in reports["mnist"].models if m.result.name == "cnn1"]
    test_x = artifacts.load_prepared("mnist")["test_x"]
    (alone,) = build.model_sections([(drawn.result, test_x, get_dataset("mnist").class_name, False, tmp_path)],
                                    workers=1)
    assert set(alone.figures) == set(drawn.figures) >= {"curves", "confusion", "errors", "filters", "grad_cam"}
    for kind, path in alone.figures.items():
        assert path.name == drawn.figures[kind].name
        assert path.read_bytes() == (ws / "reports" / "figures" / path.name).read_bytes(), kind
    assert (alone.layers, alone.notes, alone.errors) == (drawn.layers, drawn.notes, drawn.errors)


def test_a_section_failing_in_a_worker_fails_the_stage_by_name_and_keeps_the_last_report(reported, tmp_path,
                                                                                          monkeypatch):
    ws, _, _ = reported
    copy = tmp_path / "ws"
    shutil.copytree(ws, copy)
    monkeypatch.chdir(copy)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{copy / 'mlflow.db'}")
    params = _params()
    # A checkpoint cut short after check_inputs saw it: only the worker drawing cnn1 reads it.
    checkpoint = artifacts.checkpoint_file("mnist", "cnn1", params.seeds_for("mnist", "cnn1")[0])
    checkpoint.write_bytes(checkpoint.read_bytes()[:1000])
    before = {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()}
    with pytest.raises(artifacts.ArtifactError, match=re.escape(str(checkpoint))):
        report.main(params)
    assert {p: p.read_bytes() for p in Path("reports").rglob("*") if p.is_file()} == before


def test_figures_are_artifacts_of_each_models_mlflow_run(reported):
    ws, uri, reports = reported
    client = mlflow.MlflowClient(uri)
    for r in reports.values():
        for section in r.models:
            run = client.get_run(section.result.mlflow_run_id)
            assert run.data.tags["model"] == section.result.name
            assert run.info.status == "FINISHED"
            logged = {Path(a.path).name for a in client.list_artifacts(run.info.run_id, "report")}
            assert logged == {p.name for p in section.figures.values()}


def test_missing_inputs_are_named_before_any_work(reported, monkeypatch):
    ws, _, _ = reported
    monkeypatch.chdir(ws)
    before = (ws / "reports" / "index.html").stat().st_mtime_ns
    params = shrunk_params(models=MNIST_MODELS + ["mlp"], crack_models=CRACK_MODELS)
    with pytest.raises(FileNotFoundError, match=r"models/mnist/mlp/seed12\.pt .*metrics/mnist/mlp\.json"):
        report.main(params)
    assert (ws / "reports" / "index.html").stat().st_mtime_ns == before


def test_an_unreachable_tracking_store_fails_clearly_before_any_work(reported, monkeypatch):
    ws, _, _ = reported
    monkeypatch.chdir(ws)
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # refused at once, not after backoff
    before = (ws / "reports" / "index.html").stat().st_mtime_ns
    with pytest.raises(TrackingError, match=rf"MLflow run \w+ of mnist/logreg .* http://127.0.0.1:{port}"):
        report.main(_params())
    assert (ws / "reports" / "index.html").stat().st_mtime_ns == before


def test_older_metrics_without_flops_or_latency_show_a_dash(reported):
    from pipeline.reporting.tables import columns

    _, _, reports = reported
    result = reports["mnist"].results[0]
    old = {k: v for k, v in result.metrics.items()
           if k not in ("flops_per_image", "latency_ms_batch1", "latency_ms_batch256", "train_seconds_per_epoch")}
    cells = {title: cell(dataclasses.replace(result, metrics=old)) for title, cell in columns(binary=False)}
    assert cells["FLOPs / image"] == "–" and cells["latency ms/image (batch 1 / 256)"] == "–"
    assert cells["train time"].endswith(" s")
    # Cost then falls back to parameters for the recommendation.
    assert recommend([dataclasses.replace(r, metrics=old) for r in reports["mnist"].results]).measure == "params"


def test_dvc_plots_show_draws_the_curves_and_the_source_comparisons(reported):
    ws, _, _ = reported
    root = ws / "dvc_plots_repo"
    shutil.copytree(ws / "metrics", root / "metrics")
    shutil.copy(REPO / "dvc.yaml", root / "dvc.yaml")
    raw = shrunk_params_dict(models=MNIST_MODELS, crack_models=CRACK_MODELS)
    (root / "params.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    subprocess.run(["dvc", "init", "--no-scm", "-q"], cwd=root, env=env, check=True)
    shown = subprocess.run(["dvc", "plots", "show", "--json"], cwd=root, env=env, capture_output=True, text=True)
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)["data"]
    assert "lab-C logistic regression against CNNs, validation accuracy" in data
    for model in MNIST_MODELS:
        assert f"metrics/mnist/curves/{model}/seed12.csv" in data
    assert "metrics/crack/roc/crack_cnn.csv" in data
