"""Reliability diagram, ECE and held-out accuracy on pairs whose probabilities are exact."""

import math

import pytest

from evals.suites.calibration import (
    HeldOutPair,
    calibration_eval,
    pm_calibration_eval,
    reliability_diagram,
)

# Reward margins ln 3, ln 3, −ln 3 and ln 19 predict that the chosen response wins with
# probability 0.75, 0.75, 0.25 and 0.95.
CHOSEN = [math.log(3), math.log(3), 0.0, math.log(19)]
REJECTED = [0.0, 0.0, math.log(3), 0.0]
MODES = ["helpful", "helpful", "harmless", "harmless"]


def test_both_orientations_give_the_hand_computed_diagram_and_ece():
    results = calibration_eval(CHOSEN, REJECTED, MODES)
    bins = results["bins"]
    assert len(bins) == 10 and sum(b["count"] for b in bins) == 8
    # Bin 0.7–0.8: 0.75 three times (two chosen-first wins, one rejected-first loss): 2/3 won.
    assert bins[7]["count"] == 3
    assert bins[7]["mean_predicted"] == pytest.approx(0.75)
    assert bins[7]["observed"] == pytest.approx(2 / 3)
    # Bin 0.2–0.3 mirrors it; bins 0.9–1 and 0–0.1 hold 0.95 (won) and 0.05 (lost).
    assert (bins[2]["count"], bins[2]["observed"]) == (3, pytest.approx(1 / 3))
    assert (bins[9]["count"], bins[9]["observed"], bins[0]["observed"]) == (1, 1.0, 0.0)
    assert bins[5]["count"] == 0 and bins[5]["observed"] is None
    # ECE = 2 · (3/8 · |2/3 − 3/4|) + 2 · (1/8 · |1 − 0.95|) = 0.0625 + 0.0125.
    assert results["ece"] == pytest.approx(0.075)
    assert results["accuracy"]["correct"] == 3 and results["accuracy"]["n"] == 4
    assert results["modes"]["helpful"]["accuracy"] == 1.0
    assert results["modes"]["harmless"]["accuracy"] == 0.5


def test_random_orientation_counts_each_pair_once_and_repeats_with_its_seed():
    first = calibration_eval(CHOSEN, REJECTED, orient="random", seed=3)
    assert sum(b["count"] for b in first["bins"]) == 4
    assert first == calibration_eval(CHOSEN, REJECTED, orient="random", seed=3)
    assert first["accuracy"] == calibration_eval(CHOSEN, REJECTED)["accuracy"]


def test_a_perfectly_calibrated_bin_has_no_error_and_certainty_lands_in_the_last_bin():
    diagram, ece = reliability_diagram([0.25] * 4 + [1.0], [1, 0, 0, 0, 1])
    assert ece == pytest.approx(0.0)
    assert diagram[9]["count"] == 1 and diagram[2]["count"] == 4


def test_a_pm_scores_chosen_and_rejected_in_one_call():
    texts = {"c1": math.log(3), "r1": 0.0, "c2": 0.0, "r2": math.log(3)}

    class TablePM:
        calls = 0

        def score(self, batch):
            TablePM.calls += 1
            return [texts[t] for t in batch]

    pairs = [HeldOutPair("c1", "r1", "helpful"), HeldOutPair("c2", "r2", "harmless")]
    results = pm_calibration_eval(TablePM(), pairs)
    assert TablePM.calls == 1
    assert results["n_pairs"] == 2 and results["accuracy"]["accuracy"] == 0.5
    assert results["bins"][7]["observed"] == pytest.approx(0.5)  # 0.75 once won, once lost
