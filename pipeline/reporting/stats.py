"""The statistics the report rests on: how sure an accuracy is, whether two models really differ,
and whether we beat a source's figure. scipy and statsmodels do the maths.

They are imported by the functions that use them: the evaluate stage needs mean_and_spread only,
and spends no time on scipy.stats' import (BENCHMARKS.md, "Stage overheads")."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# Below this many discordant pairs the chi-square approximation is poor, so the exact binomial
# test is used (the usual rule, e.g. Fagerland, Lydersen & Laake 2013, BMC Med Res Methodol 13:91).
EXACT_BELOW = 25


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for a proportion (Newcombe 1998, method 3).

    Unlike the normal-approximation interval it stays inside [0, 1] and does not collapse to a
    point at 0% or 100%, which matters for a model that gets all but a handful of images right.
    """
    if n <= 0 or not 0 <= successes <= n:
        raise ValueError(f"need 0 <= successes <= n and n > 0, got {successes} of {n}")
    from scipy import stats as sps

    ci = sps.binomtest(int(successes), int(n)).proportion_ci(confidence_level=confidence, method="wilson")
    return float(ci.low), float(ci.high)


@dataclass(frozen=True)
class McNemarResult:
    only_a: int  # test images A classifies right and B wrong
    only_b: int  # ... B right and A wrong
    p_value: float
    method: str  # "exact binomial" or "chi-square, continuity corrected"
    statistic: float | None = None  # chi-square statistic, when that method is used


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemarResult:
    """McNemar's test on paired per-image correctness of two classifiers on the same test set.

    Only the discordant images (one right, the other wrong) carry information; under "equal
    accuracy" each is equally likely to favour either model.
    """
    a_correct, b_correct = np.asarray(a_correct, bool), np.asarray(b_correct, bool)
    if a_correct.shape != b_correct.shape:
        raise ValueError(f"paired predictions differ in length: {a_correct.shape} vs {b_correct.shape}")
    b = int((a_correct & ~b_correct).sum())
    c = int((~a_correct & b_correct).sum())
    return mcnemar_from_counts(b, c)


def mcnemar_from_counts(b: int, c: int) -> McNemarResult:
    from statsmodels.stats.contingency_tables import mcnemar as sm_mcnemar

    # The concordant cells do not enter the test: zeros stand for them.
    table = [[0, b], [c, 0]]
    if b + c < EXACT_BELOW:
        result = sm_mcnemar(table, exact=True)
        return McNemarResult(b, c, float(result.pvalue), "exact binomial")
    result = sm_mcnemar(table, exact=False, correction=True)
    return McNemarResult(b, c, float(result.pvalue), "chi-square, continuity corrected", float(result.statistic))


@dataclass(frozen=True)
class AgainstReported:
    errors: int  # our test errors (one run)
    n: int  # test images
    reported_accuracy: float
    p_value: float  # one-sided: P(this few errors or fewer | our error rate were the source's)

    @property
    def significant(self) -> bool:
        return self.p_value < 0.05


def beats_reported(errors: int, n: int, reported_accuracy: float) -> AgainstReported:
    """One-sided exact binomial test of H1 "our error rate is below the source's 1 - accuracy".

    The source's figure is taken as exact (it gives no test-set size or spread of its own).
    """
    if n <= 0 or not 0 <= errors <= n:
        raise ValueError(f"need 0 <= errors <= n and n > 0, got {errors} of {n}")
    if not 0 < reported_accuracy < 1:
        raise ValueError(f"a reported accuracy lies in (0, 1), got {reported_accuracy}")
    from scipy import stats as sps

    result = sps.binomtest(int(errors), int(n), 1 - reported_accuracy, alternative="less")
    return AgainstReported(int(errors), int(n), reported_accuracy, float(result.pvalue))


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation across runs (seeds); spread 0 for a single run."""
    if not values:
        raise ValueError("no values")
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
