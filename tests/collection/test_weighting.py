"""Issue 14: reliability weights carried by snapshots, used by the one consensus rule and by the
PM loss (a config flag, off by default)."""

import pytest
import torch

from collection import exports, snapshot_filters, snapshots
from collection.dataset_errors import SnapshotFilterError
from collection.models import Conversation, GoldAnswer, Judgement, Response, Turn
from collection.reliability import contractor_reliability
from tests.collection.dataset_builders import collected, judgement_write
from training.losses import ranked_preference_loss

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


def gold_answers(campaign, adam, answers: dict, n: int = 6):
    """n gold items; answers[user] = how many of them the user gets right."""
    conversation = Conversation.objects.create(campaign=campaign, contractor=adam, source="gold")
    for i in range(n):
        turn = Turn.objects.create(
            conversation=conversation, index=i, human_text=f"gold {i}?", status="judged"
        )
        best = Response.objects.create(turn=turn, index=0, text=f"right {i}")
        worst = Response.objects.create(turn=turn, index=1, text=f"wrong {i}")
        GoldAnswer.objects.create(turn=turn, best_response=best, created_by=adam)
        for user, right in answers.items():
            ranking = [best.pk, worst.pk] if i < right else [worst.pk, best.pk]
            judgement_write(turn, user, ranking, origin="review")


def test_a_weighted_snapshot_freezes_each_judgements_reliability_and_weighs_consensus(
    alice, bob, adam, pairwise
):
    gold_answers(pairwise, adam, {alice: 6, bob: 1})  # alice reliable, bob mostly wrong
    # One turn both judged, in opposite orders: alice says A, bob says B.
    collected(pairwise, alice, [("Which?", ["first", "second"], [0, 1], 2)], judges=[(bob, [1, 0])])
    reliability = contractor_reliability()
    assert reliability[alice.pk].weight > reliability[bob.pk].weight

    base = {"campaigns": [pairwise.pk], "sources": ["collected"], "consensus_only": True}
    plain = snapshots.snapshot_create(filter=base)
    weighted = snapshots.snapshot_create(filter={**base, "weighting": "reliability"})
    assert weighted.filter["weighting"] == "reliability" and "weighting" not in plain.filter
    assert snapshots.snapshot_frozen(plain)[1] is None
    frozen = snapshots.snapshot_frozen(weighted)[1]
    by_user = dict(Judgement.objects.filter(pk__in=frozen).values_list("contractor_id", "pk"))
    assert frozen[by_user[alice.pk]] == pytest.approx(reliability[alice.pk].weight)
    assert frozen[by_user[bob.pk]] == pytest.approx(reliability[bob.pk].weight)
    assert weighted.content_hash != plain.content_hash

    (plain_row,) = list(exports.export_rows(plain, "ranked"))
    (weighted_row,) = list(exports.export_rows(weighted, "ranked"))
    # Unweighted: one vote each way, the display order breaks the tie (A first).
    assert plain_row["ranking"] == [0, 1] and plain_row["weight"] == 1.0
    # Weighted: alice (A) outweighs bob (B): A first as well.
    assert weighted_row["ranking"] == [0, 1]
    # Flip who says what: now the reliable contractor prefers B and wins only when weighted.
    Judgement.objects.filter(contractor=alice, origin="conversation").update(
        ranking=list(
            reversed(Judgement.objects.get(contractor=alice, origin="conversation").ranking)
        )
    )
    Judgement.objects.filter(contractor=bob, origin="review", turn__gold__isnull=True).update(
        ranking=list(
            reversed(Judgement.objects.get(contractor=bob, turn__gold__isnull=True).ranking)
        )
    )
    (plain_row,) = list(exports.export_rows(plain, "ranked"))
    (weighted_row,) = list(exports.export_rows(weighted, "ranked"))
    assert plain_row["ranking"] == [0, 1]  # still a tie broken by display order
    assert weighted_row["ranking"] == [1, 0]  # alice's B wins on weight
    raw = [row for row in exports.export_rows(weighted, "raw") if row["kind"] == "judgement"]
    assert sorted(row["weight"] for row in raw) == sorted(frozen.values())


def test_the_weighting_key_is_validated(rita):
    with pytest.raises(SnapshotFilterError, match="weighting must be one of none, reliability"):
        snapshot_filters.snapshot_filter_clean({"weighting": "votes"})
    assert snapshot_filters.snapshot_filter_clean(
        {"weighting": "none"}
    ) == snapshot_filters.snapshot_filter_clean({})


def test_the_dataset_form_builds_a_weighted_filter():
    from collection.dataset_forms import SnapshotBuildForm

    form = SnapshotBuildForm({"name": "w", "reliability_weights": "on"})
    assert form.is_valid(), form.errors
    assert form.filter_dict()["weighting"] == "reliability"


def test_the_weighted_loss_is_a_weighted_mean_over_rankings():
    rewards = torch.tensor([2.0, 0.0, 0.0, 1.0])  # ranking 0 right by 2, ranking 1 wrong by 1
    ranks = torch.tensor([0, 1, 0, 1])
    group = torch.tensor([0, 0, 1, 1])
    per = torch.nn.functional.softplus(torch.tensor([-2.0, 1.0]))
    plain = ranked_preference_loss(rewards, ranks, group)
    assert plain == pytest.approx(per.mean().item())
    ones = ranked_preference_loss(rewards, ranks, group, weight=torch.tensor([1.0, 1.0]))
    assert ones == pytest.approx(plain.item())
    weighted = ranked_preference_loss(rewards, ranks, group, weight=torch.tensor([3.0, 1.0]))
    assert weighted == pytest.approx(((3 * per[0] + per[1]) / 4).item())
    only_first = ranked_preference_loss(rewards, ranks, group, weight=torch.tensor([1.0, 0.0]))
    assert only_first == pytest.approx(per[0].item())


def test_a_weighted_pm_run_reads_the_snapshots_weights(alice, bob, adam, pairwise, tmp_path):
    """The training service passes each ranking's frozen weight to the loss (config.weighted)."""
    from assistant.services import model_version_register
    from tests.tinymodels import save_tiny_lm
    from tests.training.test_runs import TINY_CONFIG
    from training import services as training
    from training.snapshots import snapshot_rankings

    gold_answers(pairwise, adam, {alice: 6, bob: 0})
    for i in range(8):
        collected(pairwise, alice, [(f"q{i}", [f"good {i}", f"bad {i}"], [0, 1], 2)])
        collected(pairwise, bob, [(f"r{i}", [f"good {i}", f"bad {i}"], [1, 0], 2)])
    snapshot = snapshots.snapshot_create(
        filter={"campaigns": [pairwise.pk], "weighting": "reliability"}
    )
    weights = {round(r.weight, 6) for r in snapshot_rankings(snapshot, "all")}
    assert len(weights) == 2  # alice's and bob's
    backbone = model_version_register(kind="lm", name="tiny", path=str(save_tiny_lm(tmp_path)))
    run = training.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone,
        config={**TINY_CONFIG, "max_steps": 2, "weighted": True},
    )  # fmt: skip
    assert run.config["weighted"] is True
    run = training.training_run_execute(run=training.training_run_claim(run_id=run.pk))
    assert run.status == "succeeded", run.error + run.log_tail
