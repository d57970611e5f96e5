"""Agreement math (collection/agreement.py) on hand-computed and published examples; no database."""

from collections import Counter
from itertools import permutations

import numpy as np
import pytest

from collection.agreement import (
    bradley_terry,
    bradley_terry_bootstrap,
    cohen_kappa,
    consensus_ranking,
    krippendorff_alpha,
    pairwise_preferences,
    top_choice_agreement,
)

# Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability", section C: 4 observers,
# 12 units, values 1–5, None = missing. Unit 12 has one value only and is not pairable.
# Published: nominal α = 0.743, ordinal α = 0.815.
KRIPPENDORFF_2011 = {
    "A": [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
    "B": [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
    "C": [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
    "D": [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
}


def krippendorff_units():
    return {unit: [coder[unit] for coder in KRIPPENDORFF_2011.values()] for unit in range(12)}


def alpha_by_pairs(units, level):
    """A second, independent α: sums δ² over every pair of pairable values, no matrices.

    D_o = 1/n Σ_u 1/(m_u − 1) Σ_{i≠j in u} δ²(v_i, v_j);  D_e = 1/(n(n−1)) Σ_{i≠j} δ²(v_i, v_j)
    over all n pairable values; ordinal δ²(c, k) = (Σ_{g between c and k} n_g − (n_c + n_k)/2)².
    """
    pairable = [[v for v in values if v is not None] for values in units.values()]
    pairable = [values for values in pairable if len(values) >= 2]
    everything = [v for values in pairable for v in values]
    n, counts = len(everything), Counter(everything)

    def delta(c, k):
        if level == "nominal":
            return float(c != k)
        low, high = min(c, k), max(c, k)
        between = sum(count for value, count in counts.items() if low <= value <= high)
        return (between - (counts[c] + counts[k]) / 2) ** 2

    observed = (
        sum(
            sum(delta(a, b) for a, b in permutations(values, 2)) / (len(values) - 1)
            for values in pairable
        )
        / n
    )
    expected = sum(delta(a, b) for a, b in permutations(everything, 2)) / (n * (n - 1))
    return 1 - observed / expected


# --- pairwise preferences and Cohen's κ ----------------------------------------------------------


def test_pairwise_preferences_lists_every_better_worse_pair():
    assert pairwise_preferences([30, 10, 20]) == [(30, 10), (30, 20), (10, 20)]
    assert pairwise_preferences([5, 6]) == [(5, 6)]
    assert pairwise_preferences([7]) == []


def test_cohen_kappa_on_a_hand_computed_table():
    # 10 items, two raters, yes/no:       B yes   B no
    #                              A yes    4       1      (A: 5 yes, 5 no)
    #                              A no     2       3      (B: 6 yes, 4 no)
    # p_o = (4 + 3) / 10 = 0.7;  p_e = 0.5·0.6 + 0.5·0.4 = 0.5;  κ = (0.7 − 0.5) / (1 − 0.5) = 0.4
    a = ["y"] * 5 + ["n"] * 5
    b = ["y", "y", "y", "y", "n"] + ["y", "y", "n", "n", "n"]
    assert cohen_kappa(a, b) == pytest.approx(0.4)


def test_cohen_kappa_with_three_labels():
    # p_o = 4/6;  A: x 2, y 2, z 2;  B: x 3, y 2, z 1  →  p_e = (2·3 + 2·2 + 2·1) / 36 = 1/3
    # κ = (2/3 − 1/3) / (1 − 1/3) = 0.5
    a = ["x", "x", "y", "y", "z", "z"]
    b = ["x", "x", "y", "x", "z", "y"]
    assert cohen_kappa(a, b) == pytest.approx(0.5)


def test_cohen_kappa_perfect_chance_and_degenerate():
    assert cohen_kappa([0, 1, 2, 0], [0, 1, 2, 0]) == 1.0
    # independent-looking raters: p_o = 0.5, p_e = 0.5 → 0
    assert cohen_kappa([0, 0, 1, 1], [0, 1, 0, 1]) == pytest.approx(0.0)
    # one label throughout: p_e = 1, defined as 1.0
    assert cohen_kappa(["A"] * 4, ["A"] * 4) == 1.0
    with pytest.raises(ValueError):
        cohen_kappa([0, 1], [0])
    with pytest.raises(ValueError):
        cohen_kappa([], [])


# --- Krippendorff's α -------------------------------------------------------------------------


def test_krippendorff_alpha_matches_the_published_example():
    units = krippendorff_units()
    assert krippendorff_alpha(units) == pytest.approx(0.743, abs=5e-4)
    assert krippendorff_alpha(units, level="ordinal") == pytest.approx(0.815, abs=5e-4)


def test_krippendorff_alpha_matches_a_pairwise_implementation():
    units = krippendorff_units()
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(units, level) == pytest.approx(alpha_by_pairs(units, level))
    # an 8-point-scale example with unequal numbers of coders per unit
    scale = {1: [1, 2], 2: [2, 3, 2], 3: [7, 6], 4: [8, 1], 5: [5, 5, 4, 6], 6: [3]}
    for level in ("nominal", "ordinal"):
        assert krippendorff_alpha(scale, level) == pytest.approx(alpha_by_pairs(scale, level))


def test_krippendorff_alpha_by_hand():
    # units (0,0) (0,0) (1,1) (1,0): o = [[4, 1], [1, 2]], n_0 = 5, n_1 = 3, n = 8
    # D_o = 2/8;  D_e = 2·5·3 / (8·7) = 30/56;  α = 1 − (2/8)/(30/56) = 1 − 7/15 = 8/15
    units = {"t1": [0, 0], "t2": [0, 0], "t3": [1, 1], "t4": [1, 0]}
    assert krippendorff_alpha(units) == pytest.approx(8 / 15)


def test_krippendorff_alpha_perfect_agreement_and_ignored_units():
    assert krippendorff_alpha({1: [1, 1, 1], 2: [2, 2], 3: [4, 4], 4: [3]}, "ordinal") == 1.0
    assert krippendorff_alpha({1: ["a", "a"], 2: ["a", "a", None]}) == 1.0  # one value only
    with pytest.raises(ValueError):
        krippendorff_alpha({1: [1], 2: [2, None]})
    with pytest.raises(ValueError):
        krippendorff_alpha({1: [1, 2]}, level="interval")


def test_ordinal_alpha_punishes_near_misses_less_than_nominal():
    near = {1: [1, 2], 2: [7, 8], 3: [1, 1], 4: [8, 8], 5: [2, 1], 6: [8, 7]}
    assert krippendorff_alpha(near, "ordinal") > krippendorff_alpha(near, "nominal")


# --- Bradley–Terry -----------------------------------------------------------------------------


def simulated_votes(true_log_strengths, votes, seed):
    rng = np.random.default_rng(seed)
    comparisons = []
    for _ in range(votes):
        i, j = rng.choice(len(true_log_strengths), size=2, replace=False)
        p_i_wins = 1 / (1 + np.exp(true_log_strengths[j] - true_log_strengths[i]))
        comparisons.append((int(i), int(j)) if rng.random() < p_i_wins else (int(j), int(i)))
    return comparisons


def test_bradley_terry_recovers_known_strengths():
    true = np.array([0.9, 0.3, -0.2, -1.0])
    true -= true.mean()
    comparisons = simulated_votes(true, votes=2000, seed=7)
    estimates = bradley_terry_bootstrap(comparisons, resamples=200, seed=0)
    assert sorted(estimates) == [0, 1, 2, 3]
    assert sum(estimate for estimate, _, _ in estimates.values()) == pytest.approx(0, abs=1e-9)
    for item, (estimate, low, high) in estimates.items():
        assert abs(estimate - true[item]) < 0.15
        assert low <= true[item] <= high
        assert low < estimate < high
    point = bradley_terry(comparisons)
    assert all(point[item] == pytest.approx(estimates[item][0]) for item in point)


def test_bradley_terry_two_items_match_the_closed_form():
    # 3 wins to 1, plus the prior's 0.1 each way: p = 3.1 / 1.1, log-strengths ±log(p)/2
    comparisons = [("a", "b")] * 3 + [("b", "a")]
    strengths = bradley_terry(comparisons)
    assert strengths["a"] == pytest.approx(np.log(3.1 / 1.1) / 2, abs=1e-8)
    assert strengths["b"] == pytest.approx(-strengths["a"])


def test_bradley_terry_stays_finite_for_an_item_that_never_loses():
    strengths = bradley_terry([("x", "y"), ("x", "z"), ("y", "z")] * 5)
    assert all(np.isfinite(list(strengths.values())))
    assert strengths["x"] > strengths["y"] > strengths["z"]
    with pytest.raises(ValueError):
        bradley_terry([("x", "y")], prior=0)
    assert bradley_terry([]) == {}


# --- consensus ---------------------------------------------------------------------------------


def test_consensus_of_unanimous_and_majority_rankings():
    assert consensus_ranking([[3, 1, 2], [3, 1, 2]]) == [3, 1, 2]
    assert consensus_ranking([[1, 2, 3], [1, 3, 2], [2, 1, 3]]) == [1, 2, 3]
    assert consensus_ranking([[11, 10], [11, 10], [10, 11]]) == [11, 10]
    assert consensus_ranking([[4, 5, 6]]) == [4, 5, 6]
    assert consensus_ranking([]) == []


def test_consensus_ties_go_to_mean_position_then_id():
    assert consensus_ranking([[2, 1], [1, 2]]) == [1, 2]  # equal strength and mean position
    # a cycle: every item is as strong as the others and has mean position 1
    assert consensus_ranking([[3, 1, 2], [1, 2, 3], [2, 3, 1]]) == [1, 2, 3]


def test_top_choice_agreement():
    assert top_choice_agreement([[1, 2], [1, 2], [2, 1]]) == pytest.approx(1 / 3)
    assert top_choice_agreement([[1, 2, 3], [1, 3, 2]]) == 1.0
    assert top_choice_agreement([[1, 2]]) is None
