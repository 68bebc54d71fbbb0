"""The comparisons the sources make, McNemar's test on them, and which model to use.

Computed from the test predictions only. Which models a comparison takes is read from their
registry entries (source, family), never from a list of names: a new model joins the
comparisons its entry qualifies it for.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.models.registry import ModelSpec
from pipeline.reporting.results import ModelResult
from pipeline.reporting.stats import AgainstReported, McNemarResult, beats_reported, mcnemar

ALPHA = 0.05


@dataclass(frozen=True)
class Side:
    """The models of one side of a comparison: those whose registry entry matches every field given."""
    family: str | None = None
    source: str | None = None

    def holds(self, spec: ModelSpec) -> bool:
        return ((self.family is None or spec.family == self.family)
                and (self.source is None or spec.source == self.source))


@dataclass(frozen=True)
class Comparison:
    title: str
    source: str
    # The first side is the baseline: each of its models is tested against every other model of
    # its side and of the other sides (the other sides are not tested among themselves).
    sides: tuple[Side, ...]
    overlay: bool = False  # validation curves on one chart (lab-B)


COMPARISONS = [
    Comparison("CNN against logistic regression: complexity and accuracy", "lab-C", (Side(source="lab-C"),)),
    Comparison("2 against 3 convolutions", "lab-B", (Side(source="lab-B"),), overlay=True),
    Comparison("Deep against small models", "lab-A", (Side("small", "lab-A"), Side("deep"))),
    Comparison("Our small CNN against ResNet-18 transfer learning", "lab-C, course",
               (Side("small", "lab-C"), Side("transfer"))),
]


def sides_present(comparison: Comparison, results: list[ModelResult]) -> list[list[ModelResult]]:
    """Per side, its trained models in the report's order (params.yaml's)."""
    return [[r for r in results if side.holds(r.spec)] for side in comparison.sides]


def present(comparison: Comparison, results: list[ModelResult]) -> list[ModelResult]:
    """The comparison's trained models, baseline side first; none unless every side has one and
    there are two to compare."""
    sides = sides_present(comparison, results)
    members = [r for side in sides for r in side]
    return members if all(sides) and len(members) >= 2 else []


def pairs(comparison: Comparison, results: list[ModelResult]) -> list[tuple[ModelResult, ModelResult]]:
    if not present(comparison, results):
        return []
    base, *others = sides_present(comparison, results)
    within = [(a, b) for i, a in enumerate(base) for b in base[i + 1:]]
    return within + [(a, b) for a in base for side in others for b in side]


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


def pair_tests(results: list[ModelResult]) -> list[PairTest]:
    """McNemar's test for every pair the sources compare whose two models were trained."""
    tests, seen = [], set()
    for comparison in COMPARISONS:
        for a, b in pairs(comparison, results):
            if (a.name, b.name) not in seen:
                seen.add((a.name, b.name))
                tests.append(PairTest(a.name, b.name, comparison.source, mcnemar(a.correct, b.correct)))
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


@dataclass(frozen=True)
class SourceTest:
    """Our model against the figure its source reports (registry entry's `reported`)."""
    result: ModelResult
    test: AgainstReported  # on the first seed's test predictions

    @property
    def difference(self) -> float:
        """Our mean test accuracy over the seeds minus the source's, in percentage points."""
        return 100 * (self.result.metrics["test_accuracy"] - self.test.reported_accuracy)

    @property
    def verdict(self) -> str:
        if self.test.significant:
            return "significantly above the source"
        return "not significantly above the source" + (" (below it)" if self.difference < 0 else "")


def source_tests(results: list[ModelResult]) -> list[SourceTest]:
    """A one-sided exact binomial test for each model whose source reports a figure on this dataset.

    The first seed's errors, not the seeds pooled: every seed scores the same test images, so
    pooling would count each image several times as if it were a fresh one.
    """
    tests = []
    for r in results:
        reported = r.spec.reported
        if reported is not None and reported.dataset == r.dataset:
            errors = int((~r.correct).sum())
            tests.append(SourceTest(r, beats_reported(errors, r.test_size, reported.accuracy)))
    return tests
