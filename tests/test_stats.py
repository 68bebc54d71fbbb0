"""The report's statistics against published worked examples."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.reporting.stats import beats_reported, mcnemar, mcnemar_from_counts, mean_and_spread, wilson_interval


@pytest.mark.parametrize("successes, n, low, high", [
    # Newcombe (1998), Stat Med 17:857, Table I, method 3 (Wilson score, no continuity correction).
    (81, 263, 0.2553, 0.3662),
    (15, 148, 0.0624, 0.1605),
    (0, 20, 0.0, 0.1611),
    (1, 29, 0.0061, 0.1718),
])
def test_wilson_interval_matches_newcombe(successes, n, low, high):
    assert wilson_interval(successes, n) == pytest.approx((low, high), abs=5e-5)


def test_wilson_interval_stays_inside_0_1_and_narrows_with_n():
    low, high = wilson_interval(10_000, 10_000)
    assert high == 1.0 and 0.999 < low < 1.0  # not the degenerate [1, 1] of the normal interval
    assert np.diff(wilson_interval(990, 1000)) > np.diff(wilson_interval(9900, 10_000))
    with pytest.raises(ValueError, match="successes"):
        wilson_interval(11, 10)


def test_mcnemar_exact_for_few_discordant_pairs():
    # Fagerland, Lydersen & Laake (2013), BMC Med Res Methodol 13:91: b = 1, c = 7, exact
    # conditional p = 0.070 (= 2 * 9 / 256).
    result = mcnemar_from_counts(1, 7)
    assert result.method == "exact binomial"
    assert result.p_value == pytest.approx(18 / 256)


def test_mcnemar_chi_square_for_many_discordant_pairs():
    # Agresti, Categorical Data Analysis (2002), 10.1.1, presidential approval: b = 150, c = 86.
    # Continuity-corrected statistic (|150 - 86| - 1)^2 / 236 = 16.82 (Agresti's 17.36 is uncorrected).
    result = mcnemar_from_counts(150, 86)
    assert result.method == "chi-square, continuity corrected"
    assert result.statistic == pytest.approx(16.818, abs=1e-3)
    assert result.p_value == pytest.approx(4.11e-5, rel=1e-2)


def test_mcnemar_counts_only_the_discordant_images():
    a = np.array([1, 1, 1, 0, 0, 1, 1, 1], bool)
    b = np.array([1, 0, 0, 1, 0, 1, 1, 1], bool)
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b) == (2, 1)
    assert mcnemar(a, a).p_value == 1.0  # identical predictions: no evidence of a difference
    with pytest.raises(ValueError, match="length"):
        mcnemar(a, b[:-1])


def test_mean_and_spread():
    assert mean_and_spread([0.98]) == (0.98, 0.0)
    mean, spread = mean_and_spread([0.97, 0.99])
    assert mean == pytest.approx(0.98) and spread == pytest.approx(0.0141421, rel=1e-5)


def test_beating_the_source_is_a_one_sided_exact_binomial_test_on_our_errors():
    # By hand: 100 images, source at 95% (error 0.05). 1 error: P(X <= 1) = 0.95^100 + 100 * 0.05 * 0.95^99
    # = 0.0059205 + 0.0311606 = 0.0370811, significant at 5%; 2 errors adds 4950 * 0.05^2 * 0.95^98
    # = 0.0811817: 0.1182628, not significant.
    one = beats_reported(1, 100, 0.95)
    assert one.p_value == pytest.approx(0.0370811, abs=1e-6) and one.significant
    two = beats_reported(2, 100, 0.95)
    assert two.p_value == pytest.approx(0.1182628, abs=1e-6) and not two.significant
    # No error in 20 against a 90% source: 0.9^20 = 0.1215767; as many errors as the source: p > 0.5.
    assert beats_reported(0, 20, 0.90).p_value == pytest.approx(0.1215767, abs=1e-6)
    assert beats_reported(110, 10_000, 0.989).p_value > 0.5
    with pytest.raises(ValueError, match="errors"):
        beats_reported(11, 10, 0.9)
    with pytest.raises(ValueError, match="reported accuracy"):
        beats_reported(1, 10, 98.9)  # a percentage, not a fraction
