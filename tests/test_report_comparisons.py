"""Which model the report recommends, and which pairs it tests, from paired test predictions."""
from __future__ import annotations

import math

from pipeline.models import get_model_spec
from pipeline.reporting.comparisons import pair_tests, recommend, source_tests
from pipeline.reporting.results import ModelResult
from pipeline.reporting.tables import SOURCE_COLUMNS, recommendation_line, source_table
from tests.conftest import shrunk_params

N = 1000


def _result(name: str, wrong: set[int], params: int) -> ModelResult:
    """A model's test outcome: image i (all of class 0) predicted wrong when i is in `wrong`."""
    predictions = [{"actual": "0", "predicted": "1" if i in wrong else "0"} for i in range(N)]
    metrics = {"test_accuracy": 1 - len(wrong) / N, "test_loss": 0.1, "params": params}
    return ModelResult(name, "mnist", get_model_spec(name), shrunk_params().train_config("mnist", name),
                       metrics, [{**metrics, "seed": 12, "mlflow_run_id": "run-" + name}], {}, [], predictions)


def test_the_cheapest_model_statistically_tied_with_the_best_is_recommended():
    best = _result("cnn2", set(range(50)), 225_034)  # 95.0%
    # 94.6%: wrong on 4 more images (54 vs 50, all of best's errors included): McNemar p = 0.125.
    tied = _result("cnn1", set(range(54)), 54_410)
    worse = _result("logreg", set(range(200)), 7_850)  # 80.0%: cheapest, clearly worse
    rec = recommend([worse, tied, best])
    assert rec.best is best and rec.cheapest is tied and rec.measure == "params"
    assert (rec.test.only_a, rec.test.only_b) == (4, 0) and rec.test.p_value == 0.125
    assert "Cheapest model not significantly less accurate (McNemar p = 0.125" in recommendation_line(rec)

    # One more error each and cnn1 is significantly worse too: the best is the answer.
    rec = recommend([worse, _result("cnn1", set(range(60)), 54_410), best])
    assert rec.cheapest is best and rec.test is None
    assert "Each of the 2 cheaper models is significantly less accurate" in recommendation_line(rec)


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
