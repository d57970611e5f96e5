"""Contractors judge what they see (issue 13): changing a judgement until the next message
(the page, the service, who may, snapshots, the PM's agreement record, the last turn)."""

import re

import pytest
from django.urls import reverse

from collection import exports, snapshots
from collection.conversations import conversation_start
from collection.errors import CollectionError
from collection.judgements import judgement_revise, judgement_submit
from collection.models import Conversation, Judgement, Response
from tests.collection.turn_builders import ids, make_campaign, ready_turn

# `lm`, `conversation` and `media_root` (snapshots write their frozen id lists under
# MEDIA_ROOT: it keeps them in the test's folder) are in tests/collection/conftest.py.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


# --- Changing a judgement until the next message --------------------------------------------


def test_a_judgement_changes_until_the_next_message_and_not_after(
    client, alice, conversation, django_capture_on_commit_callbacks
):
    turn = ready_turn(conversation)
    a, b = ids(turn)
    client.force_login(alice)
    judge = reverse("collection:judge", args=[turn.pk])
    client.post(judge, {"scale": "2", "note": "fine", "time_spent_ms": "1234"})
    judgement = Judgement.objects.get()
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    url = reverse("collection:revise", args=[turn.pk])
    assert url in page and "Change your judgement" in page

    form = client.get(url).content.decode()
    assert re.search(r'<input[^>]*name="scale" value="2"[^>]*checked', form)
    assert not re.search(r'<input[^>]*name="scale" value="tie"[^>]*checked', form)
    assert re.search(r"<textarea[^>]*>\s*fine</textarea>", form) and "Change judgement" in form

    changed = client.post(url, {"scale": "tie", "both_bad": "on", "note": "same"})
    assert changed.status_code == 302
    judgement.refresh_from_db()
    assert (judgement.tie, judgement.scale, judgement.both_bad, judgement.note) == (
        True,
        None,
        True,
        "same",
    )
    first_revision = judgement.revised_at
    assert first_revision is not None
    again = client.post(url, {"scale": "tie", "both_bad": "on", "note": "same"})
    assert again.status_code == 302
    judgement.refresh_from_db()
    assert judgement.revised_at == first_revision  # the same values: nothing changed

    client.post(url, {"scale": "7"})
    judgement.refresh_from_db()
    turn.refresh_from_db()
    assert (judgement.scale, judgement.strength, judgement.tie, judgement.both_bad) == (
        7,
        3,
        False,
        False,
    )
    assert judgement.submitted_ranking == [b, a] and turn.chosen_response_id == b
    assert judgement.revised_at > first_revision
    assert judgement.time_spent_ms == 1234  # the first judgement's time, kept

    with django_capture_on_commit_callbacks(execute=False):
        client.post(reverse("collection:message", args=[conversation.pk]), {"text": "Next?"})
    assert conversation.turns.count() == 2
    late = client.post(url, {"scale": "1"})
    assert late.status_code == 409
    assert "sent your next message since this judgement" in late.content.decode()
    assert "sent your next message" in client.get(url).content.decode()
    judgement.refresh_from_db()
    assert judgement.scale == 7
    with pytest.raises(CollectionError, match="next message"):
        judgement_revise(turn=turn, contractor=alice, scale=1)


def test_a_ranked_judgement_changes_too(lm, alice):
    ranked = conversation_start(
        campaign=make_campaign(lm, judgement_type="ranking", k=3), contractor=alice
    )
    turn = ready_turn(ranked, ("x", "y", "z"))
    x, y, z = ids(turn)
    judgement_submit(turn=turn, contractor=alice, ranking=[x, y, z])
    revised = judgement_revise(turn=turn, contractor=alice, ranking=[z, x, y])
    assert revised.submitted_ranking == revised.ranking == [z, x, y] and revised.revised_at
    turn.refresh_from_db()
    assert turn.chosen_response_id == z
    with pytest.raises(CollectionError, match="Rank all 3"):
        judgement_revise(turn=turn, contractor=alice, ranking=[z, z, y])


def test_nobody_else_sees_or_changes_a_contractors_judgement(client, alice, bob, conversation):
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=3, note="mine")
    url = reverse("collection:revise", args=[turn.pk])
    client.force_login(bob)
    assert client.get(url).status_code == 404
    assert client.post(url, {"scale": "8"}).status_code == 404
    with pytest.raises(PermissionError):
        judgement_revise(turn=turn, contractor=bob, scale=8)
    judgement = Judgement.objects.get()
    assert (judgement.scale, judgement.note, judgement.revised_at) == (3, "mine", None)


def test_review_judgements_are_final(client, alice, bob, conversation):
    conversation.campaign.overlap_target = 2
    conversation.campaign.save()
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=3)
    judgement_submit(turn=turn, contractor=bob, scale=6)  # bob reviews it
    with pytest.raises(PermissionError):
        judgement_revise(turn=turn, contractor=bob, scale=1)
    client.force_login(bob)
    assert (
        client.post(reverse("collection:revise", args=[turn.pk]), {"scale": "1"}).status_code == 404
    )
    assert Judgement.objects.get(contractor=bob).scale == 6


def test_a_judgement_in_a_snapshot_no_longer_changes(client, alice, conversation):
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=3)
    snapshot = snapshots.snapshot_create(filter={})
    client.force_login(alice)
    refused = client.post(reverse("collection:revise", args=[turn.pk]), {"scale": "6"})
    assert refused.status_code == 409
    assert "already part of a dataset snapshot" in refused.content.decode()
    assert Judgement.objects.get().scale == 3
    assert next(exports.export_rows(snapshot, "ranked"))["strength"] == 2


def test_there_is_nothing_to_change_before_judging(client, alice, conversation):
    turn = ready_turn(conversation)
    client.force_login(alice)
    assert client.get(reverse("collection:revise", args=[turn.pk])).status_code == 404
    with pytest.raises(CollectionError, match="judge them first"):
        judgement_revise(turn=turn, contractor=alice, scale=1)


def test_a_revision_updates_the_pms_agreement_record(alice, conversation):
    from assistant.models import ModelVersion
    from collection.models import PMAgreement

    pm = ModelVersion.objects.create(kind="pm", name="pm", path="/models/pm")
    turn = ready_turn(conversation)
    a, b = ids(turn)
    Response.objects.filter(pk=a).update(pm_score=2.0, pm_version=pm)
    Response.objects.filter(pk=b).update(pm_score=1.0, pm_version=pm)
    judgement = judgement_submit(turn=turn, contractor=alice, scale=1)
    assert PMAgreement.objects.get(judgement=judgement).agrees
    judgement_revise(turn=turn, contractor=alice, scale=8)
    assert not PMAgreement.objects.get(judgement=judgement).agrees
    judgement_revise(turn=turn, contractor=alice, tie=True)
    assert not PMAgreement.objects.filter(judgement=judgement).exists()  # a tie predicts nothing


def test_the_last_turn_of_an_ended_conversation_can_still_be_changed(client, lm, alice):
    conversation = conversation_start(campaign=make_campaign(lm, max_turns=1), contractor=alice)
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ENDED  # its last turn is judged
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    url = reverse("collection:revise", args=[turn.pk])
    assert url in page and "until you send your next message" not in page
    assert client.post(url, {"scale": "6"}).status_code == 302
    assert Judgement.objects.get().scale == 6


def test_the_judged_fragment_offers_the_change_only_before_the_next_message(
    client, alice, conversation
):
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    client.force_login(alice)
    url, revise = (
        reverse("collection:turn", args=[turn.pk]),
        reverse("collection:revise", args=[turn.pk]),
    )
    assert revise in client.get(url, HTTP_HX_REQUEST="true").content.decode()
    ready_turn(conversation)  # the next message, answered
    assert revise not in client.get(url, HTTP_HX_REQUEST="true").content.decode()
