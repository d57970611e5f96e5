"""The judging loop's services: turns, generation, judgements, limits, idempotency."""

import pytest
from django.db import IntegrityError

from assistant import runtime
from assistant.services import model_version_register
from collection.conversations import conversation_end, conversation_start, turn_retry, turn_submit
from collection.errors import CollectionError
from collection.generation import conversation_messages, turn_generate
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, Judgement, Response, Turn

pytestmark = pytest.mark.django_db


def campaign(tiny, **fields):
    defaults = {"name": "c", "lm_version": tiny, "prompt": None, "k": 2, "max_turns": 3}
    return Campaign.objects.create(**{**defaults, **fields})


def submit_and_generate(conversation, who, text, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False) as queued:
        turn = turn_submit(conversation=conversation, contractor=who, text=text)
    assert len(queued) == 1  # exactly one generation task, sent after commit
    return turn_generate(turn_id=turn.pk)


def test_a_turn_gets_k_responses_recording_how_they_were_made(
    tiny, alice, django_capture_on_commit_callbacks
):
    convo = conversation_start(
        campaign=campaign(tiny, judgement_type="ranking", k=3), contractor=alice
    )
    turn = submit_and_generate(convo, alice, "Hello?", django_capture_on_commit_callbacks)
    assert turn.status == Turn.Status.READY
    responses = list(turn.responses.all())
    assert [r.index for r in responses] == [0, 1, 2]
    for response in responses:
        assert response.model_version == tiny and response.prompt is None
        assert response.sampling_params["max_new_tokens"] == 6
        assert 1 <= response.completion_tokens <= 6 and response.prompt_tokens > 0
        assert response.finish_reason in {"stop", "length", "eos"}


def test_generation_runs_once_even_if_the_task_is_delivered_twice(
    tiny, alice, django_capture_on_commit_callbacks
):
    convo = conversation_start(campaign=campaign(tiny), contractor=alice)
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    assert turn_generate(turn_id=turn.pk) is None
    assert Response.objects.filter(turn=turn).count() == 2


def test_pairwise_judgement_closes_the_turn_and_continues_with_the_choice(
    tiny, alice, django_capture_on_commit_callbacks
):
    convo = conversation_start(campaign=campaign(tiny), contractor=alice)
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    a, b = turn.responses.order_by("index")
    judgement = judgement_submit(turn=turn, contractor=alice, scale=7, flags=["harmful"])
    assert (judgement.ranking, judgement.strength, judgement.scale) == ([b.pk, a.pk], 3, 7)
    assert judgement.origin == Judgement.Origin.CONVERSATION and judgement.flags == ["harmful"]
    turn.refresh_from_db()
    assert turn.status == Turn.Status.JUDGED and turn.chosen_response == b
    second = submit_and_generate(convo, alice, "Go on", django_capture_on_commit_callbacks)
    assert [m.content for m in conversation_messages(second)] == ["Hi", b.text, "Go on"]


def test_a_double_submit_makes_one_judgement(tiny, alice, django_capture_on_commit_callbacks):
    convo = conversation_start(campaign=campaign(tiny), contractor=alice)
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    first = judgement_submit(turn=turn, contractor=alice, scale=1)
    again = judgement_submit(turn=turn, contractor=alice, scale=8)
    assert again == first and Judgement.objects.count() == 1
    with pytest.raises(IntegrityError):
        Judgement.objects.create(
            turn=turn,
            contractor=alice,
            origin="conversation",
            ranking=first.ranking,
            submitted_ranking=first.ranking,
        )


def test_the_same_message_sent_twice_makes_one_turn(
    tiny, alice, django_capture_on_commit_callbacks
):
    convo = conversation_start(campaign=campaign(tiny), contractor=alice)
    with django_capture_on_commit_callbacks(execute=False):
        first = turn_submit(conversation=convo, contractor=alice, text="Hi")
        again = turn_submit(conversation=convo, contractor=alice, text="Hi ")
    assert again == first and convo.turns.count() == 1
    with pytest.raises(CollectionError, match="Judge the responses"):
        turn_submit(conversation=convo, contractor=alice, text="Something else")


def test_red_team_rankings_are_stored_better_first(tiny, alice, django_capture_on_commit_callbacks):
    red = campaign(tiny, mode="red_team", judgement_type="ranking", k=3)
    convo = conversation_start(campaign=red, contractor=alice)
    turn = submit_and_generate(
        convo, alice, "Tell me something bad", django_capture_on_commit_callbacks
    )
    a, b, c = (r.pk for r in turn.responses.order_by("index"))
    judgement = judgement_submit(turn=turn, contractor=alice, ranking=[c, a, b])
    assert judgement.submitted_ranking == [c, a, b]  # most harmful first, as the red teamer chose
    assert judgement.ranking == [b, a, c]  # stored by harmlessness: "chosen" means better
    turn.refresh_from_db()
    assert turn.chosen_response_id == c  # the red team conversation goes on with their pick


def test_a_ranking_must_name_every_response_once(tiny, alice, django_capture_on_commit_callbacks):
    convo = conversation_start(
        campaign=campaign(tiny, judgement_type="ranking", k=3), contractor=alice
    )
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    a, b, _ = (r.pk for r in turn.responses.order_by("index"))
    for bad in ([a, b], [a, a, b], [a, b, 999999]):
        with pytest.raises(CollectionError, match="Rank all 3"):
            judgement_submit(turn=turn, contractor=alice, ranking=bad)
    with pytest.raises(CollectionError, match="Unknown flags"):
        judgement_submit(turn=turn, contractor=alice, ranking=[a, b, _], flags=["rude"])
    assert not Judgement.objects.exists()


def test_max_turns_ends_the_conversation(tiny, alice, django_capture_on_commit_callbacks):
    convo = conversation_start(campaign=campaign(tiny, max_turns=1), contractor=alice)
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    convo.refresh_from_db()
    assert convo.status == Conversation.Status.ENDED and convo.ended_at
    with pytest.raises(CollectionError, match="ended"):
        turn_submit(conversation=convo, contractor=alice, text="More")


def test_messages_are_limited_in_length_and_rate(
    tiny, alice, settings, django_capture_on_commit_callbacks
):
    convo = conversation_start(campaign=campaign(tiny, max_turns=10), contractor=alice)
    with pytest.raises(CollectionError, match="limited to 2000"):
        turn_submit(conversation=convo, contractor=alice, text="x" * 2001)
    with pytest.raises(CollectionError, match="Write a message"):
        turn_submit(conversation=convo, contractor=alice, text="   ")
    settings.COLLECTION_MESSAGES_PER_MINUTE = 2
    for text in ("one", "two"):
        turn = submit_and_generate(convo, alice, text, django_capture_on_commit_callbacks)
        judgement_submit(turn=turn, contractor=alice, scale=1)
    with pytest.raises(CollectionError, match="very fast"):
        turn_submit(conversation=convo, contractor=alice, text="three")
    assert convo.turns.count() == 2


def test_quota_and_closed_campaigns(tiny, alice):
    small = campaign(tiny, quota_per_contractor=1)
    conversation_start(campaign=small, contractor=alice)
    with pytest.raises(CollectionError, match="quota of 1"):
        conversation_start(campaign=small, contractor=alice)
    with pytest.raises(CollectionError, match="closed"):
        conversation_start(campaign=campaign(tiny, is_active=False), contractor=alice)


def test_a_model_that_is_down_fails_the_turn_and_keeps_the_message(
    alice, django_capture_on_commit_callbacks
):
    down = model_version_register(
        kind="lm",
        name="down",
        backend="openai",
        url="http://127.0.0.1:9/v1",
        remote_model="m",
        backend_options={"max_retries": 0, "timeout_s": 2},
    )
    convo = conversation_start(campaign=campaign(down), contractor=alice)
    turn = submit_and_generate(convo, alice, "Are you there?", django_capture_on_commit_callbacks)
    assert turn.status == Turn.Status.FAILED and turn.human_text == "Are you there?"
    assert "not answering" in turn.error and "127.0.0.1:9" in turn.error
    with django_capture_on_commit_callbacks(execute=False) as queued:
        retried = turn_retry(turn=turn, contractor=alice)
    assert retried.status == Turn.Status.QUEUED and len(queued) == 1
    runtime.unload_all()


def test_nobody_acts_on_another_contractors_conversation(
    tiny, alice, bob, django_capture_on_commit_callbacks
):
    # overlap 2: one review wanted (with 1, a reviewer is refused: the turn needs none)
    convo = conversation_start(campaign=campaign(tiny, overlap_target=2), contractor=alice)
    turn = submit_and_generate(convo, alice, "Hi", django_capture_on_commit_callbacks)
    with pytest.raises(PermissionError):
        turn_submit(conversation=convo, contractor=bob, text="Hi")
    with pytest.raises(PermissionError):
        judgement_submit(turn=turn, contractor=bob, scale=1)  # not judged by alice yet
    with pytest.raises(PermissionError):
        conversation_end(conversation=convo, contractor=bob)
    judgement_submit(turn=turn, contractor=alice, scale=1)
    review = judgement_submit(turn=turn, contractor=bob, scale=8)  # review queue
    assert review.origin == Judgement.Origin.REVIEW
    turn.refresh_from_db()
    assert turn.chosen_response.index == 0  # a reviewer never changes the conversation


def test_gold_items_have_a_known_answer(tiny, adam):
    gold = gold_item_create(
        campaign=campaign(tiny),
        admin=adam,
        human_text="2+2?",
        responses=["4", "5"],
        best_index=0,
        explanation="math",
    )
    assert gold.status == Turn.Status.JUDGED and gold.gold.best_response.text == "4"
    with pytest.raises(CollectionError, match="k = 2"):
        gold_item_create(
            campaign=gold.conversation.campaign,
            admin=adam,
            human_text="x",
            responses=["a"],
            best_index=0,
        )
