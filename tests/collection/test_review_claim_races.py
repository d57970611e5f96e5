"""The review queue hands reviewers who open it at the same instant different turns: 40
reviewers at once, each in its own thread on its own connection, take 40 different open
turns, each held by the one it was handed to, and with fewer turns than reviewers nobody is
handed a turn another holds.

SQLite serialises every write, so only PostgreSQL shows the race.
"""

import pytest
from django.db import connection

from assistant.models import ModelVersion
from collection import selectors
from collection.models import Campaign, Conversation, Turn
from tests.collection.concurrency import AT_ONCE, at_once

pytestmark = [
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        connection.vendor != "postgresql", reason="races need concurrent writers (PostgreSQL)"
    ),
]


def open_turns(author, count: int) -> list[Turn]:
    """`count` turns the author judged that want a second judgement."""
    lm = ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
    campaign = Campaign.objects.create(name="c", lm_version=lm, overlap_target=2, max_turns=99)
    conversation = Conversation.objects.create(campaign=campaign, contractor=author)
    return Turn.objects.bulk_create(
        Turn(
            conversation=conversation,
            index=i,
            human_text=f"q{i}",
            status=Turn.Status.JUDGED,
            judgement_count=1,
            needs_review=True,
        )  # fmt: skip
        for i in range(count)
    )


def reviewers(django_user_model, count: int) -> list:
    return [django_user_model.objects.create_user(f"r{i}") for i in range(count)]  # no hashing


def test_reviewers_at_once_take_different_turns(alice, django_user_model):
    turns = open_turns(alice, AT_ONCE)
    people = reviewers(django_user_model, AT_ONCE)
    handed = at_once(lambda i: selectors.review_claim_next(contractor=people[i]))
    assert all(isinstance(turn, Turn) for turn in handed), handed
    assert sorted(turn.pk for turn in handed) == sorted(turn.pk for turn in turns)
    held = dict(Turn.objects.values_list("pk", "review_claimed_by_id"))
    assert all(held[turn.pk] == people[i].pk for i, turn in enumerate(handed))


def test_with_fewer_turns_than_reviewers_none_is_handed_out_twice_held(alice, django_user_model):
    open_turns(alice, 10)
    people = reviewers(django_user_model, AT_ONCE)
    handed = at_once(lambda i: selectors.review_claim_next(contractor=people[i]))
    assert not any(isinstance(turn, Exception) for turn in handed), handed
    held_by = dict(Turn.objects.values_list("pk", "review_claimed_by_id"))
    owners = [(turn.pk, people[i].pk) for i, turn in enumerate(handed) if turn is not None]
    # Every turn is held by exactly one reviewer; whoever else was shown it (after losing
    # CLAIM_TRIES races) or found nothing free holds nothing.
    assert len({pk for pk, _ in owners}) <= 10 and all(held_by.values())
    holders = [(pk, who) for pk, who in owners if held_by[pk] == who]
    assert sorted(pk for pk, _ in holders) == sorted(held_by)
