"""Verdicts from numbers only: the same finding on made-up numbers both ways."""

import pytest

from evals.stats import newcombe_difference_ci
from experiments.verdicts import difference, verdict

FINDING = {
    "claim": "ranked preference modeling beats imitation learning",
    "test": "better",
    "a": {"condition": "ranked", "eval": "held_out"},
    "b": {"condition": "imitation", "eval": "held_out"},
}


def counts(correct, n):
    return {"correct": correct, "n": n}


def test_a_clear_win_reproduces_with_its_interval():
    result = verdict(FINDING, {"a": counts(700, 1000), "b": counts(600, 1000)})
    assert result["reproduced"] is True
    assert result["estimate"] == pytest.approx(0.1)
    assert 0 < result["low"] < 0.1 < result["high"]
    assert result["text"].startswith(
        "ranked (held_out) > imitation (held_out): yes, +10.0 points ["
    )
    assert result["claim"] == FINDING["claim"]


def test_the_same_finding_fails_on_reversed_or_too_few_numbers():
    reversed_ = verdict(FINDING, {"a": counts(600, 1000), "b": counts(700, 1000)})
    assert reversed_["reproduced"] is False and "no (reversed), −10.0 points" in reversed_["text"]
    small = verdict(FINDING, {"a": counts(14, 20), "b": counts(12, 20)})
    assert small["reproduced"] is False and "not significant at this scale" in small["text"]
    missing = verdict(FINDING, {"a": counts(14, 20), "b": None})
    assert missing["reproduced"] is None and "not measured" in missing["text"]


def test_not_worse_uses_the_margin_both_ways():
    finding = {**FINDING, "test": "not_worse", "margin": 0.05}
    assert verdict(finding, {"a": counts(3450, 5000), "b": counts(3500, 5000)})["reproduced"]
    worse = verdict(finding, {"a": counts(550, 1000), "b": counts(700, 1000)})
    assert worse["reproduced"] is False and "worse by more than the margin" in worse["text"]


def test_gain_shrinks_both_ways():
    finding = {**FINDING, "test": "gain_shrinks"}
    shrinking = {
        "a_small": counts(700, 1000),
        "b_small": counts(550, 1000),  # +15 at the small size
        "a_large": counts(720, 1000),
        "b_large": counts(715, 1000),  # +0.5 at the large one
    }
    assert verdict(finding, shrinking)["reproduced"] is True
    growing = {**shrinking, "a_small": counts(560, 1000), "a_large": counts(800, 1000)}
    assert verdict(finding, growing)["reproduced"] is False


def test_same_items_are_compared_paired():
    # 40 items: both right on 30, a alone on 8, b alone on 0, neither on 2.
    a = {f"i{k}": k < 38 for k in range(40)}
    b = {f"i{k}": k < 30 for k in range(40)}
    paired = difference({**counts(38, 40), "items": a}, {**counts(30, 40), "items": b})
    assert paired["method"].startswith("Newcombe paired")
    unpaired = newcombe_difference_ci(38, 40, 30, 40)
    assert paired["low"] > 0 and paired["low"] > unpaired[0]  # pairing removes shared noise
    assert paired["estimate"] == pytest.approx(0.2)


def test_the_independent_interval_matches_newcombe_1998():
    # Newcombe (1998), table II example (e): 56/70 vs 48/80, method 10: 0.0524 to 0.3339.
    low, high = newcombe_difference_ci(56, 70, 48, 80)
    assert (round(low, 4), round(high, 4)) == (0.0524, 0.3339)
