"""Elo of model versions: exact two-player fits, ties as half wins, known strengths recovered."""

import math

import numpy as np
import pytest

from evals.suites.elo import Outcome, elo_fit, elo_ratings, win_probability


def test_two_versions_get_the_rating_gap_of_their_win_ratio():
    # 3 wins to 1 without a prior: odds 3, a gap of 400·log10(3) = 190.85, centred on 1000.
    games = [("new", "old")] * 3 + [("old", "new")]
    ratings = elo_fit(games, prior=0)
    assert ratings["new"] == pytest.approx(1000 + 200 * math.log10(3))
    assert ratings["old"] == pytest.approx(1000 - 200 * math.log10(3))
    assert win_probability(ratings["new"], ratings["old"]) == pytest.approx(0.75)


def test_a_tie_is_half_a_win_each_way_and_an_anchor_sits_at_1000():
    # 2 wins, 1 loss, 2 ties: 3 to 2, odds 1.5.
    games = [("a", "b"), ("a", "b"), ("b", "a"), Outcome("a", "b", tie=True), ("b", "a", True)]
    ratings = elo_fit(games, prior=0, anchor="b")
    assert ratings["b"] == 1000.0
    assert ratings["a"] == pytest.approx(1000 + 400 * math.log10(1.5))


def test_bradley_terry_recovers_known_strengths_within_its_intervals():
    truth = {"v1": 800.0, "v2": 950.0, "v3": 1050.0, "v4": 1200.0}  # mean 1000
    rng = np.random.default_rng(7)
    games = []
    for a in truth:
        for b in truth:
            if a < b:
                for _ in range(150):
                    a_wins = rng.random() < win_probability(truth[a], truth[b])
                    games.append((a, b) if a_wins else (b, a))
    results = elo_ratings(games, resamples=100, seed=0)
    ratings = results["ratings"]
    assert list(ratings) == ["v4", "v3", "v2", "v1"]  # best first
    assert np.mean([r["elo"] for r in ratings.values()]) == pytest.approx(1000)
    for version, rating in ratings.items():
        assert rating["low"] <= truth[version] <= rating["high"], (version, rating)
        assert rating["low"] < rating["elo"] < rating["high"]
        assert abs(rating["elo"] - truth[version]) < 50
        assert rating["games"] == 450 and rating["wins"] + rating["losses"] == 450
    assert results["n_games"] == 900 and results["resamples"] == 100
    assert results == elo_ratings(games, resamples=100, seed=0)  # the seed fixes the intervals


def test_an_unbeaten_version_stays_finite_with_the_prior():
    ratings = elo_ratings([("a", "b")] * 5, resamples=20)["ratings"]
    assert math.isfinite(ratings["a"]["elo"]) and ratings["a"]["elo"] > ratings["b"]["elo"]
