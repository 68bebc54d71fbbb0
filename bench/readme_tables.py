"""The results tables (README, "Results", and docs/results.md), printed from a finished workspace's
metrics/ (what `dvc repro` wrote): every number in those tables comes from here, so a row can be
checked against its run.

    # in the workspace of a finished `dvc repro` (CI's: the fresh clone's folder)
    python bench/readme_tables.py            # MNIST, crack and other-source tables, as Markdown
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from pipeline.models import get_model_spec  # noqa: E402
from pipeline.reporting.stats import beats_reported  # noqa: E402


def _results(dataset: str) -> dict[str, dict]:
    folder = Path("metrics") / dataset
    return {p.stem: json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))}


def _seeds(dataset: str, model: str) -> list[dict]:
    return json.loads((Path("metrics") / dataset / "seeds" / f"{model}.json").read_text())


def _accuracy(m: dict) -> str:
    """Test accuracy; over several seeds, their mean ± standard deviation in points."""
    spread = f" ± {100 * m['test_accuracy_std']:.2f}" if m.get("seeds", 1) > 1 else ""
    return f"{100 * m['test_accuracy']:.2f}%{spread}"


def _epochs(dataset: str, model: str, m: dict) -> str:
    best = [s["best_epoch"] for s in _seeds(dataset, model)]
    mean = sum(best) / len(best)
    return f"{mean:g} / {m['epochs_run']}"


def mnist_table() -> list[str]:
    rows = ["| model | params | epochs (best / run) | test accuracy | test loss | macro F1 | train time | "
            "reported by the source (SPEC.md) | ours − source | one-sided binomial p |",
            "|---|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    results = _results("mnist")
    for model, m in sorted(results.items(), key=lambda kv: -kv[1]["test_accuracy"]):
        reported = get_model_spec(model).reported
        against = ["none", "", ""]
        if reported is not None:
            # The first seed's test predictions, as the report's test (pipeline/reporting/comparisons.py).
            with (Path("metrics") / "mnist" / "predictions" / f"{model}.csv").open() as f:
                rows_read = [line.strip().split(",") for line in f][1:]
            n, errors = len(rows_read), sum(actual != predicted for actual, predicted in rows_read)
            p = beats_reported(errors, n, reported.accuracy).p_value
            against = [reported.text(), f"{100 * (m['test_accuracy'] - reported.accuracy):+.2f}",
                       f"{p:.3f}" if p >= 0.001 else f"{p:.1e}"]
        rows.append(f"| {model} | {m['params']:,} | {_epochs('mnist', model, m)} | {_accuracy(m)} | "
                    f"{m['test_loss']:.4f} | {m['test_macro_f1']:.4f} | {m['train_seconds']:.0f} s | "
                    + " | ".join(against) + " |")
    return rows


def crack_table() -> list[str]:
    rows = ["| model | params | epochs (best / run) | test accuracy | precision | recall | F1 | ROC-AUC | "
            "threshold (val) | train time | SDNET2018: accuracy | balanced accuracy | ROC-AUC |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for model, m in sorted(_results("crack").items(), key=lambda kv: -kv[1]["test_accuracy"]):
        other = ([f"{100 * m['other_accuracy']:.1f}%", f"{100 * m['other_balanced_accuracy']:.1f}%",
                  f"{m['other_roc_auc']:.3f}"] if "other_accuracy" in m else ["not scored"] * 3)
        rows.append(f"| {model} | {m['params']:,} | {_epochs('crack', model, m)} | {_accuracy(m)} | "
                    f"{m['test_precision']:.4f} | {m['test_recall']:.4f} | {m['test_f1']:.4f} | "
                    f"{m['test_roc_auc']:.4f} | {m['threshold']:.3f} | {m['train_seconds']:.0f} s | "
                    + " | ".join(other) + " |")
    return rows


def other_source_table() -> list[str]:
    rows = ["| model | test accuracy | on UCI's digits | change (points) |", "|---|---:|---:|---:|"]
    results = [(model, m) for model, m in _results("mnist").items() if "other_accuracy" in m]
    for model, m in sorted(results, key=lambda kv: -kv[1]["other_accuracy"]):
        rows.append(f"| {model} | {100 * m['test_accuracy']:.2f}% | {100 * m['other_accuracy']:.2f}% | "
                    f"{100 * (m['other_accuracy'] - m['test_accuracy']):+.2f} |")
    return rows


def main() -> None:
    for title, table in (("MNIST", mnist_table), ("Surface cracks", crack_table),
                         ("MNIST models on UCI's digits", other_source_table)):
        print(f"### {title}\n")
        print("\n".join(table()) + "\n")
    champions = {p.stem: json.loads(p.read_text()) for p in sorted(Path("metrics/registry").glob("*.json"))}
    for dataset, entry in champions.items():
        print(f"champion of {dataset}: {entry['model']} (validation {100 * entry['val_accuracy']:.2f}%, "
              f"test {100 * entry['test_accuracy']:.2f}%)")


if __name__ == "__main__":
    main()
