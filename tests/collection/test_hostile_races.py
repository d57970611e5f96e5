"""Limits that hold under concurrency (issue 18), written as the attack: 40 requests at once, each
in its own thread on its own database connection, released together by a barrier.

SQLite serialises every write, so only PostgreSQL (what CI runs) can show these races.
"""

import pytest
from django.contrib.auth import get_user_model
from django.db import connection

from collection.conversations import turn_submit
from collection.errors import CollectionError
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, Judgement, Response, Turn
from tests.collection.concurrency import AT_ONCE, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),  # each thread sees what the others committed
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="races need concurrent writers (PostgreSQL)"
    ),
]


def refusals(outcomes, words: str) -> int:
    unexpected = [o for o in outcomes if isinstance(o, Exception) and words not in str(o)]
    assert not unexpected, unexpected[:3]
    return sum(isinstance(o, CollectionError) for o in outcomes)


def test_40_messages_at_once_from_one_contractor_store_at_most_the_per_minute_limit(
    alice, lm, settings
):
    limit = settings.COLLECTION_MESSAGES_PER_MINUTE
    campaign = Campaign.objects.create(name="c", lm_version=lm, quota_per_contractor=AT_ONCE)
    # One conversation each: the per-conversation lock cannot serialise them, only the
    # contractor's can.
    conversations = Conversation.objects.bulk_create(
        Conversation(campaign=campaign, contractor=alice) for _ in range(AT_ONCE)
    )

    outcomes = at_once(
        lambda i: turn_submit(conversation=conversations[i], contractor=alice, text=f"message {i}")
    )

    stored = Turn.objects.filter(conversation__contractor=alice).count()
    assert stored == limit
    assert refusals(outcomes, "very fast") == AT_ONCE - limit


def test_40_reviewers_at_once_never_exceed_the_overlap_target(alice, lm):
    campaign = Campaign.objects.create(name="c", lm_version=lm, overlap_target=2)
    conversation = Conversation.objects.create(campaign=campaign, contractor=alice)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hi", status=Turn.Status.READY
    )
    Response.objects.bulk_create(
        Response(turn=turn, index=i, text=f"answer {i}", model_version=lm) for i in range(2)
    )
    judgement_submit(turn=turn, contractor=alice, scale=2)  # 1 of 2: open for review
    # Made without passwords: hashing 40 would take longer than the test.
    reviewers = get_user_model().objects.bulk_create(
        get_user_model()(username=f"reviewer{i}") for i in range(AT_ONCE)
    )

    outcomes = at_once(lambda i: judgement_submit(turn=turn, contractor=reviewers[i], scale=7))

    assert Judgement.objects.filter(turn=turn, origin=Judgement.Origin.REVIEW).count() == 1
    assert refusals(outcomes, "all the judgements it needs") == AT_ONCE - 1
    turn.refresh_from_db()
    assert (turn.judgement_count, turn.needs_review) == (2, False)


def test_gold_items_stay_open_to_every_reviewer_at_once(adam, lm):
    campaign = Campaign.objects.create(name="c", lm_version=lm, overlap_target=1)
    gold = gold_item_create(
        campaign=campaign, admin=adam, human_text="2+2?", responses=["4", "5"], best_index=0
    )
    reviewers = get_user_model().objects.bulk_create(
        get_user_model()(username=f"reviewer{i}") for i in range(AT_ONCE)
    )

    outcomes = at_once(lambda i: judgement_submit(turn=gold, contractor=reviewers[i], scale=1))

    assert not [o for o in outcomes if isinstance(o, Exception)]
    gold.refresh_from_db()
    assert gold.judgement_count == Judgement.objects.filter(turn=gold).count() == AT_ONCE
