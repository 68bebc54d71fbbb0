"""Which model the report recommends, and which pairs it tests, from paired test predictions."""
from __future__ import annotations

from pipeline.comparisons import pair_tests, recommend
from pipeline.models import get_model_spec
from pipeline.report_tables import recommendation_line
from pipeline.results import ModelResult
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
