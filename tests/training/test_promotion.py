"""PM promotion: a minimum held-out size, then a paired test against the active PM on the same
held-out pairs (training/promotion.py)."""

import math
import re

import pytest

from assistant.models import ModelVersion
from assistant.services import model_version_register
from collection.imports import dataset_import_create
from collection.snapshots import snapshot_create
from tests.tinymodels import save_tiny_lm
from tests.training.test_runs import TINY_CONFIG, toy_trl_file
from training import services
from training.promotion import (
    binomial_tail,
    decide,
    mcnemar_exact_p,
    newcombe_paired_interval,
    wilson,
)

RULES = {"min_held_out": 200, "alpha": 0.05, "tolerance": 0.01}


def paired(both: int, new_only: int, active_only: int, neither: int):
    """Per-pair outcomes (new, active) for a 2x2 table, in a mixed order."""
    rows = (
        [(True, True)] * both
        + [(True, False)] * new_only
        + [(False, True)] * active_only
        + [(False, False)] * neither
    )
    rows = rows[1::2] + rows[::2]
    return [new for new, _ in rows], [active for _, active in rows]


# --- the statistics ------------------------------------------------------------------------------


def test_the_exact_binomial_and_mcnemar_p_values():
    assert binomial_tail(0, 4) == 1 / 16 and binomial_tail(4, 4) == 1.0
    # 12 vs 2 discordant pairs: 2 * P(X <= 2), X ~ Bin(14, 1/2) = 2 * (1 + 14 + 91) / 2**14.
    assert mcnemar_exact_p(12, 2) == pytest.approx(2 * 106 / 2**14)
    assert mcnemar_exact_p(2, 12) == mcnemar_exact_p(12, 2)
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0
    assert mcnemar_exact_p(0, 6) == pytest.approx(2 / 64)


def test_wilson_and_the_newcombe_paired_interval():
    low, high = wilson(48, 50)
    assert low == pytest.approx(0.8654, abs=1e-4) and high == pytest.approx(0.9890, abs=1e-4)
    # Fagerland, Lydersen & Laake's square-and-add example (Bentur et al. 2009: 1, 1, 7, 12).
    low, high = newcombe_paired_interval(1, 1, 7, 12)
    assert low == pytest.approx(-0.507, abs=1e-3) and high == pytest.approx(-0.026, abs=1e-3)
    # It holds the difference, stays within [-1, 1], is symmetric for a symmetric table, and
    # narrows as n grows.
    for table in [(36, 12, 2, 0), (0, 0, 0, 5), (5, 0, 0, 0), (0, 9, 0, 0), (3, 4, 4, 3)]:
        low, high = newcombe_paired_interval(*table)
        d = (table[1] - table[2]) / sum(table)
        assert -1 <= low <= d <= high <= 1
    low, high = newcombe_paired_interval(50, 10, 10, 30)
    assert low == pytest.approx(-high)
    wide = newcombe_paired_interval(50, 10, 10, 30)
    narrow = newcombe_paired_interval(500, 100, 100, 300)
    assert narrow[1] - narrow[0] < wide[1] - wide[0]


# --- the decision ------------------------------------------------------------------------------


def test_a_held_out_set_below_the_minimum_is_never_promoted_and_says_why():
    new, active = paired(150, 30, 0, 19)  # 199 pairs; clearly better, but too few
    for against in (None, active):
        decision = decide(new, against, **RULES)
        assert decision["decision"] == "kept"
        assert decision["held_out"] == 199 and decision["min_held_out"] == 200
        assert "199 comparisons, fewer than the 200 needed" in decision["reason"]
        assert "not promoted" in decision["reason"]


def test_a_first_pm_is_promoted_only_above_chance():
    promoted = decide([True] * 130 + [False] * 70, None, **RULES)
    assert promoted["decision"] == "promoted", promoted
    assert promoted["p_value"] < 0.05 and promoted["new_accuracy"] == 0.65
    low, high = promoted["interval"]
    assert low < 0.65 < high and "above chance" in promoted["reason"]
    chance = decide([True] * 105 + [False] * 95, None, **RULES)
    assert chance["decision"] == "kept" and "not above chance" in chance["reason"], chance


def test_a_clearly_better_pm_is_promoted():
    new, active = paired(120, 40, 10, 30)  # 160 vs 130 right on the same 200 pairs
    decision = decide(new, active, **RULES)
    assert (decision["decision"], decision["outcome"]) == ("promoted", "better"), decision
    assert (decision["new_only_right"], decision["active_only_right"]) == (40, 10)
    assert decision["new_accuracy"] == 0.8 and decision["active_accuracy"] == 0.65
    assert decision["p_value"] == pytest.approx(mcnemar_exact_p(40, 10))
    assert decision["p_value"] < 0.001
    low, high = decision["interval"]
    assert 0 < low < 0.15 < high
    assert "significantly better" in decision["reason"] and "40 (new right)" in decision["reason"]


def test_a_clearly_worse_pm_is_kept_whatever_the_tolerance():
    new, active = paired(120, 10, 40, 30)
    for tolerance in (0.01, 0.5):
        decision = decide(new, active, **{**RULES, "tolerance": tolerance})
        assert (decision["decision"], decision["outcome"]) == ("kept", "worse"), decision
        assert decision["interval"][1] < 0
        assert "significantly worse" in decision["reason"]


def test_a_tie_is_promoted_only_when_the_interval_rules_out_a_loss_beyond_the_tolerance():
    # 12 vs 10 discordant pairs of 200: no significant difference, interval about ±0.05.
    new, active = paired(140, 12, 10, 38)
    kept = decide(new, active, **RULES)
    assert (kept["decision"], kept["outcome"]) == ("kept", "tie"), kept
    assert kept["p_value"] > 0.05 and kept["interval"][0] < -0.01
    assert "not ruled out" in kept["reason"]
    promoted = decide(new, active, **{**RULES, "tolerance": 0.1})
    assert (promoted["decision"], promoted["outcome"]) == ("promoted", "tie"), promoted
    # The same ranking of every pair by both PMs: a tie whose interval hugs zero.
    same = decide([True] * 600 + [False] * 400, [True] * 600 + [False] * 400, **RULES)
    assert same["outcome"] == "tie" and same["p_value"] == 1.0
    assert same["decision"] == "promoted" and same["interval"][0] >= -0.01, same


def test_the_decision_refuses_outcomes_of_different_pairs():
    with pytest.raises(ValueError, match="outcomes"):
        decide([True] * 200, [True] * 199, **RULES)


# --- a real run -----------------------------------------------------------------------------


@pytest.mark.django_db
def test_a_first_pm_on_a_tiny_held_out_set_is_registered_but_not_promoted(tmp_path, adam):
    backbone = model_version_register(
        kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path / "lm"))
    )
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl"), format="trl")
    snapshot = snapshot_create(
        filter={"sources": ["imported"], "imports": [imported.pk]}, created_by=adam
    )
    held_out_pairs = snapshot.counts["held_out_pairs"]
    assert 0 < held_out_pairs < 200
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config=TINY_CONFIG
    )
    run = services.training_run_execute(run=services.training_run_claim(run_id=run.pk))
    assert run.status == "succeeded", run.error + run.log_tail
    assert run.result_version is not None and run.result_version.kind == "pm"
    run.result_version.refresh_from_db()
    assert not run.result_version.is_active
    assert not ModelVersion.objects.filter(kind="pm", is_active=True).exists()
    promotion = run.promotion
    assert promotion["decision"] == "kept" and promotion["held_out"] == held_out_pairs
    assert "fewer than the 200 needed" in promotion["reason"]
    # The per-pair outcomes agree with the loop's held-out accuracy (no reward ties here).
    assert math.isclose(promotion["new_accuracy"], promotion["eval_accuracy"])
    # The log writes learning rates in scientific notation (the warmup-free schedule decays
    # 3e-3 to 2.5e-4 by the last step), never "lr=0.0000".
    assert re.search(r"lr=\d\.\d\de-0\d", run.log_tail), run.log_tail
    assert "lr=0.0" not in run.log_tail
