"""Which model the report recommends (validation only), and which pairs it tests (paired test predictions)."""
from __future__ import annotations

import math

from statsmodels.stats.proportion import proportion_confint

from pipeline.models import get_model_spec
from pipeline.reporting.comparisons import pair_tests, recommend, source_tests
from pipeline.reporting.results import ModelResult
from pipeline.reporting.tables import SOURCE_COLUMNS, recommendation_line, source_table
from tests.conftest import shrunk_params

N = 1000


def _result(name: str, wrong: set[int], params: int, val_accuracy: float = 0.9, val_size: int | None = 2000,
            **extra) -> ModelResult:
    """A model's outcome: test image i (all of class 0) predicted wrong when i is in `wrong`; its
    best epoch's validation accuracy (on `val_size` images), and any other metrics."""
    predictions = [{"actual": "0", "predicted": "1" if i in wrong else "0"} for i in range(N)]
    metrics = {"test_accuracy": 1 - len(wrong) / N, "test_loss": 0.1, "params": params,
               "val_accuracy": val_accuracy, "val_loss": 0.2, "val_size": val_size, **extra}
    return ModelResult(name, "mnist", get_model_spec(name), shrunk_params().train_config("mnist", name),
                       metrics, [{**metrics, "seed": 12, "mlflow_run_id": "run-" + name}], {}, [], predictions)


def _wilson(successes: int, n: int) -> str:
    """statsmodels' 95% Wilson interval, as the report writes it."""
    low, high = proportion_confint(successes, n, alpha=0.05, method="wilson")
    return f"[{100 * low:.2f}, {100 * high:.2f}]"


def test_the_model_to_deploy_is_chosen_on_validation_and_changing_test_labels_changes_nothing():
    # cnn2 is best on validation, logreg best on test: the recommendation is cnn2.
    on_val = _result("cnn2", set(range(80)), 225_034, val_accuracy=0.990)
    on_test = _result("logreg", set(range(10)), 7_850, val_accuracy=0.950)
    rec = recommend([on_test, on_val])
    assert rec.best is on_val and [r.name for r in rec.ranked] == ["cnn2", "logreg"] and rec.cheaper is None
    line = recommendation_line(rec)
    assert line.startswith(f"Deploy cnn2: the highest validation accuracy, 99.00% {_wilson(1980, 2000)}")
    assert "Its test accuracy, an estimate made after the choice: 92.00% [" in line
    # Every test outcome turned around (as if the test labels were others): nothing changes.
    flipped = [_result(r.name, set(range(N)) - {i for i, p in enumerate(r.predictions) if p["predicted"] == "1"},
                       r.metrics["params"], r.metrics["val_accuracy"]) for r in (on_test, on_val)]
    again = recommend(flipped)
    assert [r.name for r in again.ranked] == ["cnn2", "logreg"] and again.cheaper is None


def test_a_cheaper_model_inside_the_champions_validation_interval_is_named_for_when_cost_matters():
    best = _result("cnn2", set(range(50)), 225_034, val_accuracy=0.990)  # [98.46, 99.35] on 2,000
    inside = _result("cnn1", set(range(90)), 54_410, val_accuracy=0.986)
    cheapest_outside = _result("logreg", set(range(200)), 7_850, val_accuracy=0.920)
    rec = recommend([cheapest_outside, inside, best])
    assert rec.best is best and rec.cheaper is inside and rec.measure == "params"
    assert "When cost matters: cnn1, 98.60% on validation, inside the champion's interval, at 54,410 params (0.24x)." \
        in recommendation_line(rec)
    # Just outside the interval: no cheaper model is named.
    rec = recommend([cheapest_outside, _result("cnn1", set(range(90)), 54_410, val_accuracy=0.984), best])
    assert rec.cheaper is None and "No cheaper model is inside its validation interval." in recommendation_line(rec)
    # Ties on validation: fewer parameters first (pipeline.selection, the register stage's rule).
    assert recommend([best, _result("cnn1", set(range(90)), 54_410, val_accuracy=0.990)]).best.name == "cnn1"


def test_the_most_robust_model_is_named_beside_the_champion_and_chooses_nothing():
    best = _result("cnn2", set(range(50)), 225_034, val_accuracy=0.990, other_accuracy=0.90, other_size=1797)
    robust = _result("lenet5", set(range(70)), 61_706, val_accuracy=0.980, other_accuracy=0.95, other_size=1797)
    rec = recommend([robust, best])
    assert rec.best is best and rec.most_robust is robust
    line = recommendation_line(rec, "UCI optical digits")
    assert ("Most robust on UCI optical digits (accuracy, report-only: it chose nothing): lenet5, 95.00% "
            f"{_wilson(1707, 1797)}, against 90.00% {_wilson(1617, 1797)} for cnn2.") in line
    # A binary model is judged there by its balanced accuracy, not its accuracy.
    a = _result("cnn1", set(), 54_410, other_accuracy=0.7, other_balanced_accuracy=0.5, other_size=200)
    b = _result("logreg", set(), 7_850, other_accuracy=0.6, other_balanced_accuracy=0.6, other_size=200)
    assert recommend([a, b]).most_robust is b


def test_only_the_source_pairs_of_trained_models_are_tested():
    results = [_result("logreg", set(range(100)), 7_850), _result("cnn1", set(range(40)), 54_410),
               _result("keras_cnn2", set(range(30)), 113_386)]
    tests = pair_tests(results)
    assert [(t.a, t.b, t.source) for t in tests] == [("logreg", "cnn1", "lab-C")]
    assert tests[0].verdict == "cnn1 is more accurate"
    assert (tests[0].result.only_a, tests[0].result.only_b) == (0, 60)


def _by_hand(errors: int, n: int, accuracy: float) -> float:
    """P(at most `errors` errors in n images at the source's error rate): the binomial sum, term by term."""
    q = 1 - accuracy
    return sum(math.comb(n, k) * q**k * (1 - q) ** (n - k) for k in range(errors + 1))


def test_each_reported_figure_is_set_against_ours_with_a_one_sided_binomial_test():
    # lenet5: lab-A reports 98.90% (error 0.011). 3 errors in 1,000: sum_{k<=3} C(1000,k) .011^k .989^(1000-k)
    # = 0.004754, significant; 8 errors (99.2%): 0.2305, above the source but not significantly.
    # cnn1: no reported figure, no row. numpy_cnn (90.51%, lab-D) with 100 errors (90.0%): below it.
    lenet, close = _result("lenet5", set(range(3)), 61_706), _result("lenet5", set(range(8)), 61_706)
    rows = source_tests([_result("cnn1", set(), 54_410), lenet, _result("numpy_cnn", set(range(100)), 1_979)])
    assert [t.result.name for t in rows] == ["lenet5", "numpy_cnn"]
    assert math.isclose(rows[0].test.p_value, _by_hand(3, N, 0.989))
    assert math.isclose(rows[0].test.p_value, 0.0047542, rel_tol=1e-4)
    assert rows[0].verdict == "significantly above the source" and math.isclose(rows[0].difference, 0.8)
    (near,) = source_tests([close])
    assert math.isclose(near.test.p_value, _by_hand(8, N, 0.989))
    assert math.isclose(near.test.p_value, 0.2305, abs_tol=1e-4)
    assert near.verdict == "not significantly above the source"
    assert rows[1].verdict == "not significantly above the source (below it)"
    assert math.isclose(rows[1].difference, -0.51)

    class Dataset:  # the two fields source_table reads of a DatasetReport
        dataset, source_tests = "mnist", rows

    table = source_table(Dataset)
    assert table.header == SOURCE_COLUMNS and table.row_models == ["lenet5", "numpy_cnn"]
    assert table.rows[0] == ["lenet5", "98.90%, loss 0.0409 (lab-A)", "99.70%", "+0.80", "0.1000 / 0.0409",
                             "3 of 1,000 (seed 12)", "0.005", "significantly above the source"]
    assert table.rows[1][1:4] == ["90.51%, after 2 epochs, 7.3 samples/s (lab-D)", "90.00%", "-0.51"]
