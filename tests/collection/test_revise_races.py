"""Changing a judgement races the next message (issue 13): 20 revisions and the next message at
once, each in its own thread on its own connection. The contractor's row lock, which both
take first, orders them: every revision that succeeded committed before the next turn was
made, the others were refused, and the conversation continues with the judgement's choice.

SQLite serialises every write, so only PostgreSQL shows the race.
"""

import threading

import pytest
from django.db import connection

from assistant.models import ModelVersion
from collection import judgements
from collection.conversations import conversation_start, turn_submit
from collection.errors import CollectionError
from collection.judgements import judgement_revise, judgement_submit
from collection.models import Campaign, Judgement, Response, Turn
from tests.collection.concurrency import at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="races need concurrent writers (PostgreSQL)"
    ),
]

REVISIONS = 20


def judged_turn(alice):
    lm = ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
    campaign = Campaign.objects.create(name="c", lm_version=lm, max_turns=3)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hi", status=Turn.Status.READY
    )
    for i, text in enumerate(["Hello.", "Hey."]):
        Response.objects.create(turn=turn, index=i, text=text, model_version=lm)
    judgement_submit(turn=turn, contractor=alice, scale=4)
    return turn


def test_the_next_message_waits_for_a_revision_in_progress(alice, monkeypatch):
    """A revision paused after its checks holds the locks the next message needs: it waits
    for it, so the conversation never continues from a choice that changes afterwards."""
    turn = judged_turn(alice)
    checked, go = threading.Event(), threading.Event()

    def paused(judgement):
        checked.set()
        assert go.wait(timeout=10)
        return False

    monkeypatch.setattr(judgements, "_in_a_snapshot", paused)
    outcomes = {}

    def revise():
        try:
            outcomes["revision"] = judgement_revise(turn=turn, contractor=alice, scale=8)
        finally:
            connection.close()

    def send():
        try:
            outcomes["next"] = turn_submit(
                conversation=turn.conversation, contractor=alice, text="Next"
            )
        finally:
            connection.close()

    reviser = threading.Thread(target=revise)
    reviser.start()
    assert checked.wait(timeout=10)
    sender = threading.Thread(target=send)
    sender.start()
    sender.join(timeout=1.5)
    waited = sender.is_alive()  # blocked on the contractor's row while the revision runs
    go.set()
    reviser.join(timeout=10)
    sender.join(timeout=10)
    assert not reviser.is_alive() and not sender.is_alive()
    assert waited, "the next message did not wait for the revision in progress"
    revision, next_turn = outcomes["revision"], outcomes["next"]
    assert revision.scale == 8 and revision.revised_at < next_turn.created_at
    turn.refresh_from_db()
    assert turn.chosen_response_id == revision.submitted_ranking[0]


def test_revisions_racing_the_next_message_land_before_it_or_are_refused(alice):
    turn = judged_turn(alice)

    def work(i):
        if i == REVISIONS:
            return turn_submit(conversation=turn.conversation, contractor=alice, text="Next")
        # Alternate sides so that every successful revision changes something.
        return judgement_revise(turn=turn, contractor=alice, scale=1 if i % 2 else 8)

    outcomes = at_once(work, REVISIONS + 1)
    next_turn = outcomes[REVISIONS]
    assert isinstance(next_turn, Turn), next_turn
    revised = [o for o in outcomes[:REVISIONS] if isinstance(o, Judgement)]
    refused = [o for o in outcomes[:REVISIONS] if isinstance(o, CollectionError)]
    assert len(revised) + len(refused) == REVISIONS, outcomes  # no deadlock, no other error
    assert all("next message" in str(error) for error in refused)
    judgement = Judgement.objects.get()
    turn.refresh_from_db()
    assert judgement.revised_at is None or judgement.revised_at < next_turn.created_at
    assert turn.chosen_response_id == judgement.submitted_ranking[0]
    with pytest.raises(CollectionError, match="next message"):
        judgement_revise(turn=turn, contractor=alice, scale=2)
