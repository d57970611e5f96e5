"""Small statistics for eval reports: binomial intervals around accuracies. Plain Python."""

from __future__ import annotations

import math
from collections.abc import Sequence
from statistics import NormalDist


def binomial_ci(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """The Wilson score interval of a binomial proportion; (0, 1) when there are no trials.

    Wilson rather than the normal approximation: it stays inside [0, 1] and keeps its coverage
    at the small n of one HHH category (43–61 items) and at accuracies near 0 or 1.
    """
    if not 0 <= successes <= n:
        raise ValueError(f"successes must be in [0, n], got {successes} of {n}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n == 0:
        return 0.0, 1.0
    z = NormalDist().inv_cdf(0.5 + level / 2)
    p = successes / n
    denominator = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / denominator
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denominator
    return max(0.0, centre - half), min(1.0, centre + half)


def accuracy_with_ci(correct: Sequence[bool], level: float = 0.95) -> dict:
    """{"accuracy", "n", "correct", "low", "high"} of a list of right/wrong outcomes.

    `accuracy` is None when the list is empty (the interval is then the uninformative (0, 1)).
    """
    n, hits = len(correct), sum(bool(ok) for ok in correct)
    low, high = binomial_ci(hits, n, level)
    return {"accuracy": hits / n if n else None, "n": n, "correct": hits, "low": low, "high": high}


def newcombe_difference_ci(
    correct_a: int, n_a: int, correct_b: int, n_b: int, level: float = 0.95
) -> tuple[float, float]:
    """Newcombe's (1998, method 10) hybrid score interval for p_a − p_b of two independent
    proportions: each side's Wilson interval, combined. Keeps its coverage at small n and near
    0 or 1, where the Wald interval of a difference does not; (−1, 1) when a side is empty."""
    if not (n_a and n_b):
        return -1.0, 1.0
    p_a, p_b = correct_a / n_a, correct_b / n_b
    low_a, high_a = binomial_ci(correct_a, n_a, level)
    low_b, high_b = binomial_ci(correct_b, n_b, level)
    d = p_a - p_b
    low = d - math.sqrt((p_a - low_a) ** 2 + (high_b - p_b) ** 2)
    high = d + math.sqrt((high_a - p_a) ** 2 + (p_b - low_b) ** 2)
    return max(-1.0, low), min(1.0, high)
