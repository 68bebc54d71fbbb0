"""The statistics the report rests on: how sure an accuracy is, and whether two models really differ."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

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
    z = float(sps.norm.ppf(0.5 + confidence / 2))
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


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
    n = b + c
    if n == 0:
        return McNemarResult(b, c, 1.0, "exact binomial")
    if n < EXACT_BELOW:
        p = min(1.0, 2 * sps.binom.cdf(min(b, c), n, 0.5))
        return McNemarResult(b, c, float(p), "exact binomial")
    statistic = (abs(b - c) - 1) ** 2 / n
    return McNemarResult(b, c, float(sps.chi2.sf(statistic, 1)), "chi-square, continuity corrected",
                         statistic)


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """Mean and sample standard deviation across runs (seeds); spread 0 for a single run."""
    if not values:
        raise ValueError("no values")
    arr = np.asarray(values, float)
    return float(arr.mean()), float(arr.std(ddof=1)) if len(arr) > 1 else 0.0
