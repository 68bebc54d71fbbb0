"""The comparisons the sources make, McNemar's test on them, and which model to use.

Computed from the test predictions only: nothing here is hard-coded but which models the
sources set against each other (SPEC.md).
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.results import ModelResult
from pipeline.stats import McNemarResult, mcnemar

ALPHA = 0.05
SMALL = ("classic_cnn", "lenet5")
DEEP = ("vgg16", "resnet50", "tiny_vgg", "tiny_resnet")
RESNET18 = ("resnet18_feature", "resnet18_finetune", "resnet18_progressive")


@dataclass(frozen=True)
class Comparison:
    title: str
    source: str
    members: tuple[str, ...]
    pairs: tuple[tuple[str, str], ...]
    overlay: bool = False  # validation curves on one chart (lab-B)


COMPARISONS = {
    "mnist": [
        Comparison("CNN against logistic regression: complexity and accuracy", "lab-C",
                   ("logreg", "cnn1", "cnn2"), (("logreg", "cnn1"), ("logreg", "cnn2"), ("cnn1", "cnn2"))),
        Comparison("2 against 3 convolutions", "lab-B", ("keras_cnn2", "keras_cnn3"),
                   (("keras_cnn2", "keras_cnn3"),), overlay=True),
        Comparison("Deep against small models", "lab-A", SMALL + DEEP,
                   (SMALL,) + tuple((deep, small) for deep in DEEP for small in SMALL)),
    ],
    "crack": [
        Comparison("Our small CNN against ResNet-18 transfer learning", "lab-C, course",
                   ("crack_cnn",) + RESNET18, tuple(("crack_cnn", r) for r in RESNET18)),
    ],
}


@dataclass(frozen=True)
class PairTest:
    a: str
    b: str
    source: str
    result: McNemarResult

    @property
    def verdict(self) -> str:
        r = self.result
        if r.p_value >= ALPHA:
            return "no significant difference"
        better = self.a if r.only_a > r.only_b else self.b
        return f"{better} is more accurate"


def present(comparison: Comparison, results: list[ModelResult]) -> list[ModelResult]:
    """The comparison's models that were trained, in the comparison's order."""
    by_name = {r.name: r for r in results}
    return [by_name[m] for m in comparison.members if m in by_name]


def pair_tests(dataset: str, results: list[ModelResult]) -> list[PairTest]:
    """McNemar's test for every pair the sources compare whose two models were trained."""
    by_name = {r.name: r for r in results}
    tests, seen = [], set()
    for comparison in COMPARISONS.get(dataset, []):
        for a, b in comparison.pairs:
            if a in by_name and b in by_name and (a, b) not in seen:
                seen.add((a, b))
                tests.append(PairTest(a, b, comparison.source,
                                      mcnemar(by_name[a].correct, by_name[b].correct)))
    return tests


def cost(result: ModelResult, measure: str) -> float:
    return float(result.metrics[measure])


def cost_measure(results: list[ModelResult]) -> str:
    """FLOPs per image when every model has it (newer metrics files), else parameters."""
    return "flops_per_image" if all("flops_per_image" in r.metrics for r in results) else "params"


@dataclass(frozen=True)
class Recommendation:
    best: ModelResult
    cheapest: ModelResult  # cheapest model not significantly less accurate than the best
    test: McNemarResult | None  # best against cheapest; None when they are the same model
    measure: str  # what "cheapest" counts: flops_per_image or params
    cheaper: int  # models cheaper than the best
    compared: int  # models trained for this dataset


def recommend(results: list[ModelResult]) -> Recommendation:
    best = max(results, key=lambda r: r.metrics["test_accuracy"])
    measure = cost_measure(results)
    tied = [(r, mcnemar(best.correct, r.correct)) for r in results if r is not best]
    tied = [(r, t) for r, t in tied if t.p_value >= ALPHA]
    cheapest, test = min([(best, None)] + tied, key=lambda rt: (cost(rt[0], measure),
                                                                 -rt[0].metrics["test_accuracy"]))
    cheaper = sum(cost(r, measure) < cost(best, measure) for r in results)
    return Recommendation(best, cheapest, test, measure, cheaper, len(results))
