"""Agreement and aggregation math for preference judgements: pure Python and numpy, no Django.

Labels and items may be any hashable values (response ids, display indices, scale points).
`collection/quality.py` reads the database and calls these.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Hashable, Iterable, Mapping, Sequence
from itertools import combinations

import numpy as np


def pairwise_preferences(ranking: Sequence[int]) -> list[tuple[int, int]]:
    """Every ordered (better, worse) pair of a better-first ranking: k·(k−1)/2 pairs."""
    return [(better, worse) for i, better in enumerate(ranking) for worse in ranking[i + 1 :]]


def cohen_kappa(labels_a: Sequence[Hashable], labels_b: Sequence[Hashable]) -> float:
    """Cohen's κ of two raters' nominal labels of the same items (position i = item i).

    κ = (p_o − p_e) / (1 − p_e). When expected agreement p_e is 1 both raters gave one and the
    same label to every item, so p_o is 1 too and κ (0/0) is defined here as 1.0.
    """
    if len(labels_a) != len(labels_b):
        raise ValueError("both raters must label the same items")
    n = len(labels_a)
    if n == 0:
        raise ValueError("no items to compare")
    observed = sum(a == b for a, b in zip(labels_a, labels_b, strict=True)) / n
    count_a, count_b = Counter(labels_a), Counter(labels_b)
    expected = sum(count_a[label] * count_b[label] for label in count_a) / (n * n)
    if expected >= 1.0:
        return 1.0  # one label throughout: perfect (and trivial) agreement
    return (observed - expected) / (1.0 - expected)


def _coincidences(units: Mapping[Hashable, Iterable[Hashable]]) -> tuple[list, np.ndarray]:
    """Krippendorff's coincidence matrix o[c, k] over the pairable values, and its labels."""
    pairable = []
    for labels in units.values():
        values = [label for label in labels if label is not None]
        if len(values) >= 2:
            pairable.append(values)
    # Numbers in their order (the ordinal level needs it), then any other labels (a nominal
    # "tie" beside display positions 0, 1, …), which cannot be compared with numbers.
    labels = sorted(
        {value for values in pairable for value in values},
        key=lambda value: (0, value, "") if isinstance(value, int | float) else (1, 0, str(value)),
    )
    position = {label: i for i, label in enumerate(labels)}
    o = np.zeros((len(labels), len(labels)))
    for values in pairable:
        m = len(values)
        counts = Counter(position[value] for value in values)
        for c, n_c in counts.items():
            for k, n_k in counts.items():
                # ordered pairs of different coders within the unit, each weighted 1/(m−1)
                o[c, k] += (n_c * (n_k - (c == k))) / (m - 1)
    return labels, o


def _ordinal_distances(marginals: np.ndarray) -> np.ndarray:
    """δ²(c, k) = (Σ_{g=c..k} n_g − (n_c + n_k)/2)² for ranks c ≤ k (Krippendorff 2011)."""
    cumulative = np.concatenate([[0.0], np.cumsum(marginals)])
    size = len(marginals)
    delta = np.zeros((size, size))
    for c in range(size):
        for k in range(c, size):
            between = cumulative[k + 1] - cumulative[c] - (marginals[c] + marginals[k]) / 2
            delta[c, k] = delta[k, c] = between**2
    return delta


def krippendorff_alpha(
    units: Mapping[Hashable, Iterable[Hashable]], level: str = "nominal"
) -> float:
    """Krippendorff's α over units → labels from any number of coders, missing data allowed.

    `units` maps each item to the labels coders gave it (None entries count as missing; units
    with fewer than two labels are not pairable and are ignored). `level` is "nominal" or
    "ordinal" (labels must sort in their natural order, e.g. the 8-point scale). Built from the
    coincidence matrix: α = 1 − D_o / D_e. With a single value throughout D_e is 0; α is then
    defined here as 1.0 (D_o is necessarily 0 as well).
    """
    if level not in ("nominal", "ordinal"):
        raise ValueError(f"unknown level {level!r}: use 'nominal' or 'ordinal'")
    labels, o = _coincidences(units)
    marginals = o.sum(axis=1)
    n = marginals.sum()
    if n == 0:
        raise ValueError("no unit has two or more labels")
    if level == "nominal":
        delta = 1.0 - np.eye(len(labels))
    else:
        delta = _ordinal_distances(marginals)
    observed = (o * delta).sum() / n
    expected = (np.outer(marginals, marginals) * delta).sum() / (n * (n - 1))
    if expected == 0:
        return 1.0
    return float(1.0 - observed / expected)


def _win_matrix(
    comparisons: Sequence[tuple[Hashable, Hashable]],
    position: dict,
    weights: Sequence[float] | None = None,
) -> np.ndarray:
    wins = np.zeros((len(position), len(position)))
    for i, (winner, loser) in enumerate(comparisons):
        wins[position[winner], position[loser]] += 1 if weights is None else weights[i]
    return wins


def bradley_terry_fit(wins: np.ndarray, iterations: int, prior: float, tol: float) -> np.ndarray:
    """Hunter's (2004) MM iterations on a win matrix; returns log-strengths with mean 0."""
    size = len(wins)
    # The symmetric prior: `prior` virtual wins each way between every two items, which keeps
    # every strength finite (an item that never lost) and links items never compared.
    wins = wins + prior * (1.0 - np.eye(size))
    total_wins = wins.sum(axis=1)
    if np.any(total_wins == 0):
        raise ValueError("an item never wins: use prior > 0 for finite strengths")
    games = wins + wins.T
    log_p = np.zeros(size)
    for _ in range(iterations):
        p = np.exp(log_p)
        denominator = (games / (p[:, None] + p[None, :])).sum(axis=1)
        updated = np.log(total_wins) - np.log(denominator)
        updated -= updated.mean()
        converged = np.max(np.abs(updated - log_p)) < tol
        log_p = updated
        if converged:
            break
    return log_p


def _items(comparisons: Iterable[tuple[Hashable, Hashable]]) -> list:
    """The items of the comparisons, in order of first appearance."""
    return list(dict.fromkeys(item for pair in comparisons for item in pair))


def bradley_terry(
    comparisons: Sequence[tuple[Hashable, Hashable]],
    iterations: int = 10_000,
    prior: float = 0.1,
    tol: float = 1e-10,
) -> dict[Hashable, float]:
    """Bradley–Terry log-strengths (mean 0) from (winner, loser) pairs, by Hunter's MM algorithm.

    P(i beats j) = 1 / (1 + exp(s_j − s_i)). `prior` is a symmetric pseudo-count of virtual wins
    each way between every two items; with 0 (plain maximum likelihood) an item that never won
    raises ValueError and one that never lost grows until `iterations` run out.
    """
    items = _items(comparisons)
    if not items:
        return {}
    position = {item: i for i, item in enumerate(items)}
    log_p = bradley_terry_fit(_win_matrix(comparisons, position), iterations, prior, tol)
    return {item: float(log_p[i]) for i, item in enumerate(items)}


def bradley_terry_bootstrap(
    comparisons: Sequence[tuple[Hashable, Hashable]],
    resamples: int = 100,
    seed: int = 0,
    ci: float = 0.95,
    prior: float = 0.1,
) -> dict[Hashable, tuple[float, float, float]]:
    """Bradley–Terry log-strengths with bootstrap intervals: item → (estimate, low, high).

    Comparisons are resampled with replacement `resamples` times; the estimate is the fit on
    all comparisons, the interval the central `ci` share of the resampled fits.
    """
    items = _items(comparisons)
    if not items:
        return {}
    position = {item: i for i, item in enumerate(items)}
    estimate = bradley_terry_fit(_win_matrix(comparisons, position), 10_000, prior, 1e-10)
    pairs = np.array([(position[winner], position[loser]) for winner, loser in comparisons])
    rng = np.random.default_rng(seed)
    fits = np.empty((resamples, len(items)))
    for r in range(resamples):
        sample = pairs[rng.integers(0, len(pairs), size=len(pairs))]
        wins = np.zeros((len(items), len(items)))
        np.add.at(wins, (sample[:, 0], sample[:, 1]), 1)
        fits[r] = bradley_terry_fit(wins, 10_000, prior, 1e-8)
    low, high = np.quantile(fits, [(1 - ci) / 2, 1 - (1 - ci) / 2], axis=0)
    return {
        item: (float(estimate[i]), float(low[i]), float(high[i])) for i, item in enumerate(items)
    }


def consensus_ranking(
    rankings: Sequence[Sequence[int]], weights: Sequence[float] | None = None
) -> list[int]:
    """One better-first ranking from several judges' rankings of the same responses: the one
    consensus rule of exports, snapshots and the quality page.

    Orders responses by Bradley–Terry strength fitted to every judge's pairwise preferences,
    each judge's counted `weights[i]` times (default 1: a reliability weight, see
    collection/reliability.py; a judge of weight 0 counts for nothing); ties (to 1e-9) go to
    the lower mean position across the rankings, then the lower id.
    """
    items = sorted({item for ranking in rankings for item in ranking})
    if not items:
        return []
    weights = [1.0] * len(rankings) if weights is None else list(weights)
    if len(weights) != len(rankings):
        raise ValueError("one weight per ranking")
    comparisons, pair_weights = [], []
    for ranking, weight in zip(rankings, weights, strict=True):
        for pair in pairwise_preferences(ranking):
            comparisons.append(pair)
            pair_weights.append(weight)
    strengths = {}
    if comparisons and sum(pair_weights) > 0:
        position = {item: i for i, item in enumerate(items)}
        log_p = bradley_terry_fit(
            _win_matrix(comparisons, position, pair_weights), 10_000, 0.1, 1e-10
        )
        strengths = {item: float(log_p[i]) for i, item in enumerate(items)}
    positions = defaultdict(list)
    for ranking in rankings:
        for position, item in enumerate(ranking):
            positions[item].append(position)

    def order(item):
        mean_position = sum(positions[item]) / len(positions[item])
        return (-round(strengths.get(item, 0.0), 9), mean_position, item)

    return sorted(items, key=order)


def top_choice_agreement(rankings: Sequence[Sequence[int]]) -> float | None:
    """Share of pairs of judges whose rankings put the same response first; None below 2 judges."""
    tops = [ranking[0] for ranking in rankings if ranking]
    pairs = list(combinations(tops, 2))
    if not pairs:
        return None
    return sum(a == b for a, b in pairs) / len(pairs)
