"""Wilson intervals against published values, and the accuracy cell built on them."""

import pytest

from evals.stats import accuracy_with_ci, binomial_ci


def _rounded(interval):
    return tuple(round(x, 4) for x in interval)


def test_wilson_intervals_match_known_values():
    assert _rounded(binomial_ci(8, 10)) == (0.4902, 0.9433)
    assert _rounded(binomial_ci(50, 100)) == (0.4038, 0.5962)
    # With no successes the upper bound is z²/(n + z²) = 3.8415 / 13.8415.
    assert _rounded(binomial_ci(0, 10)) == (0.0, 0.2775)
    assert _rounded(binomial_ci(10, 10)) == (0.7225, 1.0)


def test_a_higher_level_gives_a_wider_interval_and_no_trials_the_whole_range():
    low95, high95 = binomial_ci(8, 10)
    low99, high99 = binomial_ci(8, 10, level=0.99)
    assert low99 < low95 and high99 > high95
    assert binomial_ci(0, 0) == (0.0, 1.0)
    with pytest.raises(ValueError):
        binomial_ci(11, 10)


def test_the_accuracy_cell_counts_and_bounds():
    cell = accuracy_with_ci([True] * 8 + [False] * 2)
    assert cell["accuracy"] == 0.8 and cell["n"] == 10 and cell["correct"] == 8
    assert (round(cell["low"], 3), round(cell["high"], 3)) == (0.49, 0.943)
    assert accuracy_with_ci([]) == {"accuracy": None, "n": 0, "correct": 0, "low": 0.0, "high": 1.0}
