"""Contractors judge what they see (issue 13): the tie point and "both are bad" (on the page,
in exports, the consensus, training, Elo, gold items and the API). Changing a judgement:
test_judge_revise.py; ending, Markdown instructions, cut responses and the waiting time:
test_judge_pages.py."""

import pytest
from django.urls import reverse

from collection import exports, quality, snapshots
from collection.conversations import conversation_start
from collection.errors import CollectionError
from collection.gold import gold_item_create
from collection.judgements import judgement_revise, judgement_submit
from collection.models import Conversation, Judgement, Response, Turn
from evals.arm_elo import arm_games
from tests.collection.turn_builders import ids, make_campaign, ready_turn
from training.snapshots import snapshot_rankings

# `lm`, `conversation` and `media_root` (snapshots write their frozen id lists under
# MEDIA_ROOT: it keeps them in the test's folder) are in tests/collection/conftest.py.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


# --- The tie point and "both are bad" -------------------------------------------------------


def test_a_tie_is_stored_as_no_preference_and_continues_with_a(conversation, alice):
    turn = ready_turn(conversation)
    a, b = ids(turn)
    judgement = judgement_submit(turn=turn, contractor=alice, tie=True, both_bad=True)
    assert (judgement.tie, judgement.both_bad) == (True, True)
    assert judgement.scale is None and judgement.strength is None
    assert judgement.ranking == judgement.submitted_ranking == [a, b]  # display order
    turn.refresh_from_db()
    assert turn.status == Turn.Status.JUDGED and turn.chosen_response_id == a


def test_a_red_teamers_tie_is_not_reversed_and_both_bad_goes_with_a_preference(lm, alice):
    red = conversation_start(campaign=make_campaign(lm, mode="red_team"), contractor=alice)
    turn = ready_turn(red)
    a, b = ids(turn)
    tie = judgement_submit(turn=turn, contractor=alice, tie=True)
    assert tie.ranking == tie.submitted_ranking == [a, b]
    second = ready_turn(red)
    a2, b2 = ids(second)
    picked = judgement_submit(turn=second, contractor=alice, scale=2, both_bad=True)
    assert picked.submitted_ranking == [a2, b2] and picked.ranking == [b2, a2]  # harmless first
    assert (picked.tie, picked.both_bad, picked.scale, picked.strength) == (False, True, 2, 3)


def test_a_tie_is_refused_on_a_ranked_turn_and_with_a_scale_point(lm, alice, conversation):
    turn = ready_turn(conversation)
    with pytest.raises(CollectionError, match="not both") as refused:
        judgement_submit(turn=turn, contractor=alice, tie=True, scale=3)
    assert refused.value.field == "scale"
    ranked = conversation_start(
        campaign=make_campaign(lm, judgement_type="ranking", k=3), contractor=alice
    )
    three = ready_turn(ranked, ("x", "y", "z"))
    with pytest.raises(CollectionError, match="rank the responses instead"):
        judgement_submit(turn=three, contractor=alice, tie=True)
    judgement = judgement_submit(
        turn=three, contractor=alice, ranking=ids(three)[::-1], both_bad=True
    )
    assert judgement.both_bad and not judgement.tie
    assert not Judgement.objects.filter(turn=turn).exists()


def test_the_page_offers_the_tie_between_4_and_5_and_the_both_bad_box(client, alice, conversation):
    turn = ready_turn(conversation)
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    values = [
        page[i + len('name="scale" value="') :].split('"', 1)[0]
        for i in range(len(page))
        if page.startswith('name="scale" value="', i)
    ]
    assert values == ["1", "2", "3", "4", "tie", "5", "6", "7", "8"]
    assert "About the same" in page and 'name="both_bad"' in page and "Both are bad" in page

    url = reverse("collection:judge", args=[turn.pk])
    refused = client.post(url, {"scale": "9"})
    assert "9 is not a point of the scale" in refused.content.decode()
    missing = client.post(url, {"both_bad": "on"})
    assert "Choose a point on the scale, or about the same." in missing.content.decode()
    assert not Judgement.objects.exists()

    done = client.post(url, {"scale": "tie", "both_bad": "on", "time_spent_ms": "900"})
    assert done.status_code == 302
    judgement = Judgement.objects.get()
    assert (judgement.tie, judgement.both_bad, judgement.scale) == (True, True, None)


def test_red_team_pages_call_the_tie_about_as_harmful(client, lm, alice):
    red = conversation_start(campaign=make_campaign(lm, mode="red_team"), contractor=alice)
    ready_turn(red)
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[red.pk])).content.decode()
    assert "About as harmful" in page


# --- Ties and both-bad in exports, consensus, training, Elo and quality ---------------------


@pytest.fixture
def tie_snapshot(lm, alice, bob, conversation):
    """Turn 1: alice ties and says both are bad, bob prefers B (review). Turn 2: alice prefers
    A. A third conversation's turn: alice and bob both tie."""
    campaign = conversation.campaign
    campaign.overlap_target = 2
    campaign.save()
    first = ready_turn(conversation)
    judgement_submit(turn=first, contractor=alice, tie=True, both_bad=True)
    judgement_submit(turn=first, contractor=bob, scale=7)
    second = ready_turn(conversation, ("Yes.", "No."))
    judgement_submit(turn=second, contractor=alice, scale=1)
    other = conversation_start(campaign=campaign, contractor=alice)
    third = ready_turn(other, ("One.", "Two."))
    judgement_submit(turn=third, contractor=alice, tie=True)
    judgement_submit(turn=third, contractor=bob, tie=True)
    return snapshots.snapshot_create(filter={}), first, second, third


def test_every_export_row_carries_tie_and_both_bad(tie_snapshot):
    snapshot, first, second, third = tie_snapshot
    hh = list(exports.export_rows(snapshot, "hh-rlhf"))
    assert len(hh) == exports.export_row_count(snapshot, "hh-rlhf") == 5
    marks = sorted((row["tie"], row["both_bad"]) for row in hh)
    assert marks == [(False, False), (False, False), (True, False), (True, False), (True, True)]
    trl = list(exports.export_rows(snapshot, "trl", margin=True))
    tie_rows = [row for row in trl if row["tie"]]
    assert len(tie_rows) == 3 and all(row["margin"] == 0.0 for row in tie_rows)
    ranked = {row["judgement_id"]: row for row in exports.export_rows(snapshot, "ranked")}
    alice_first = first.judgements.get(tie=True)
    assert ranked[alice_first.pk]["ranks"] == [0, 0] and ranked[alice_first.pk]["both_bad"]
    bob_first = first.judgements.get(tie=False)
    assert ranked[bob_first.pk]["ranks"] == [1, 0] and not ranked[bob_first.pk]["tie"]


def test_the_consensus_leaves_ties_out(tie_snapshot):
    snapshot, first, second, third = tie_snapshot
    raw = [row for row in exports.export_rows(snapshot, "raw") if row["kind"] == "consensus"]
    by_turn = {row["turn_id"]: row for row in raw}
    # alice's tie gives no points: bob's B > A decides; alice said both are bad.
    assert by_turn[first.pk]["ranking"] == [1, 0] and not by_turn[first.pk]["tie"]
    assert by_turn[first.pk]["both_bad"]
    # Two ties: the consensus is a tie.
    assert by_turn[third.pk]["tie"] and by_turn[third.pk]["ranks"] == [0, 0]
    b = first.responses.get(index=1)
    assert quality.turn_consensus(turn=first)["ranking"][0] == b.pk
    assert quality.turn_consensus(turn=third)["judgements"] == 0


def test_parquet_exports_hold_the_tie_columns(tie_snapshot, tmp_path):
    import pyarrow.parquet as pq

    snapshot = tie_snapshot[0]
    for fmt in ("hh-rlhf", "trl", "ranked", "raw"):
        path = tmp_path / f"{fmt}.parquet"
        exports.export_write(snapshot=snapshot, fmt=fmt, file_format="parquet", path=path)
        table = pq.read_table(path)
        assert {"tie", "both_bad"} <= set(table.column_names)
        assert str(table.schema.field("tie").type) == "bool"
        assert sum(table.column("tie").to_pylist()) >= 2


def test_training_and_elo_treat_no_tie_as_a_preference(tie_snapshot, lm):
    snapshot, first, second, third = tie_snapshot
    rankings = snapshot_rankings(snapshot, "all")
    assert len(rankings) == 2  # bob's B > A and alice's A > B; the three ties are left out
    assert all(sorted(r.ranks) == [0, 1] for r in rankings)
    from assistant.models import ModelVersion

    other = ModelVersion.objects.create(kind="lm", name="other", path="/models/other")
    turn = ready_turn(Conversation.objects.get(pk=third.conversation_id), ("p", "q"))
    Response.objects.filter(turn=turn, index=1).update(model_version=other)
    judgement_submit(turn=turn, contractor=turn.conversation.contractor, tie=True)
    assert not arm_games().games


def test_a_tie_on_a_gold_item_is_not_its_answer(lm, alice, adam):
    campaign = make_campaign(lm)
    gold = gold_item_create(
        campaign=campaign,
        admin=adam,
        human_text="Capital?",
        responses=["Paris", "Rome"],
        best_index=0,
    )
    judgement_submit(turn=gold, contractor=alice, tie=True)
    (stats,) = quality.contractor_stats(campaign=campaign)
    assert (stats["gold_judged"], stats["gold_correct"]) == (1, 0)


def test_the_api_shows_tie_both_bad_and_revised_at_read_only(alice, rita, adam, conversation):
    from rest_framework.test import APIClient

    turn = ready_turn(conversation)
    judgement = judgement_submit(turn=turn, contractor=alice, tie=True, both_bad=True)
    api = APIClient()
    api.force_authenticate(rita)
    (row,) = api.get("/api/judgements/").json()["results"]
    assert (row["tie"], row["both_bad"], row["scale"], row["strength"]) == (True, True, None, None)
    assert row["revised_at"] is None
    judgement_revise(turn=turn, contractor=alice, scale=5)
    row = api.get(f"/api/judgements/{judgement.pk}/").json()
    assert (row["tie"], row["scale"], row["strength"]) == (False, 5, 1) and row["revised_at"]
    api.force_authenticate(adam)  # even an admin cannot write judgements through the API
    changed = api.patch(f"/api/judgements/{judgement.pk}/", {"tie": True}, format="json")
    assert changed.status_code == 405
    api.force_authenticate(alice)  # contractors have no API access to judgements
    assert api.get("/api/judgements/").status_code == 403
    assert Judgement.objects.get().tie is False
