"""The comparisons the sources make, McNemar's test on them, and which model to deploy.

The comparisons are computed from the test predictions, after every choice; which model to deploy
is chosen on validation only (pipeline.selection), as the register stage chooses. Which models a
comparison takes is read from their registry entries (source, family), never from a list of
names: a new model joins the comparisons its entry qualifies it for.
"""
from __future__ import annotations

from dataclasses import dataclass

from pipeline.models.registry import ModelSpec
from pipeline.reporting.results import ModelResult
from pipeline.reporting.stats import AgainstReported, McNemarResult, beats_reported, mcnemar, wilson_interval
from pipeline.selection import rank_by_validation

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
    """The report's answer to "which model should I deploy?", from validation only."""
    ranked: list[ModelResult]  # by pipeline.selection's rule, best (the champion) first
    measure: str  # what "cheaper" counts: flops_per_image or params
    # The cheapest model cheaper than the champion whose mean validation accuracy lies inside the
    # champion's 95% Wilson interval on its validation images; None: no cheaper model does (or
    # older metrics files lack the validation size).
    cheaper: ModelResult | None
    # The highest score on the other source's images (robustness(): report-only, it selects
    # nothing, not even this recommendation); None where no model was scored there.
    most_robust: ModelResult | None

    @property
    def best(self) -> ModelResult:
        return self.ranked[0]


def validation_interval(result: ModelResult) -> tuple[float, float] | None:
    """95% Wilson interval of the model's mean validation accuracy on its validation images."""
    n = result.metrics.get("val_size")
    return wilson_interval(round(result.metrics["val_accuracy"] * n), n) if n else None


def robustness(result: ModelResult) -> float | None:
    """A model's score on the other source: balanced accuracy for a binary model (at its
    validation threshold, whatever the other source's mix of classes), accuracy otherwise."""
    m = result.metrics
    return m.get("other_balanced_accuracy", m.get("other_accuracy"))


def recommend(results: list[ModelResult]) -> Recommendation:
    """The register stage's champion (validation only), a cheaper model as good on validation, and
    the most robust model on the other source. Test and other-source scores choose nothing here."""
    ranked = rank_by_validation(results, lambda r: (r.metrics["val_accuracy"], r.metrics["params"],
                                                    r.metrics["val_loss"]))
    best, measure = ranked[0], cost_measure(results)
    interval = validation_interval(best)
    cheaper = [r for r in ranked[1:] if interval and cost(r, measure) < cost(best, measure)
               and r.metrics["val_accuracy"] >= interval[0]]
    scored = [r for r in ranked if robustness(r) is not None]
    return Recommendation(ranked, measure, min(cheaper, key=lambda r: cost(r, measure), default=None),
                          max(scored, key=robustness, default=None))


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
