"""The contractor pages: ownership, roles, messages, generation progress, judging, review."""

import re
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from collection.campaigns import campaign_review_refresh
from collection.conversations import conversation_start, turn_submit
from collection.generation import turn_generate
from collection.gold import gold_item_create
from collection.judgements import judgement_submit
from collection.models import SCALE_LABELS, Conversation, Judgement, Turn

pytestmark = pytest.mark.django_db
HTMX = {"HTTP_HX_REQUEST": "true"}


@pytest.fixture
def generate(django_capture_on_commit_callbacks):
    """Submit a message as a contractor and run its generation task here, in this process."""

    def submit(conversation, text="Hello, who are you?"):
        with django_capture_on_commit_callbacks(execute=False) as queued:
            turn = turn_submit(
                conversation=conversation, contractor=conversation.contractor, text=text
            )
        assert len(queued) == 1
        return turn_generate(turn_id=turn.pk)

    return submit


@pytest.fixture
def pairwise_conversation(make_campaign, alice):
    return conversation_start(campaign=make_campaign(), contractor=alice)


@pytest.fixture
def ranking(make_campaign, alice):
    campaign = make_campaign(name="Rank them", judgement_type="ranking", k=3)
    return conversation_start(campaign=campaign, contractor=alice)


def post_twice(client, url, data):
    first, second = client.post(url, data), client.post(url, data)
    return first, second


def test_it_shows_bob_none_of_alices_conversation(client, bob, pairwise_conversation, generate):
    turn = generate(pairwise_conversation)
    client.force_login(bob)
    urls = {
        "get": [
            reverse("collection:conversation", args=[pairwise_conversation.pk]),
            reverse("collection:turn", args=[turn.pk]),
        ],
        "post": [
            reverse("collection:message", args=[pairwise_conversation.pk]),
            reverse("collection:end", args=[pairwise_conversation.pk]),
            reverse("collection:judge", args=[turn.pk]),
            reverse("collection:retry", args=[turn.pk]),
            reverse("collection:review_judge", args=[turn.pk]),  # not in bob's queue
        ],
    }
    for url in urls["get"]:
        assert client.get(url, **HTMX).status_code == 404, url
    for url in urls["post"]:
        assert client.post(url, {"text": "mine now", "scale": "1"}).status_code == 404, url
    pairwise_conversation.refresh_from_db()
    assert (
        pairwise_conversation.status == Conversation.Status.OPEN and not Judgement.objects.exists()
    )
    assert pairwise_conversation.turns.count() == 1


@pytest.mark.parametrize("who", ["rita", "adam"])
def test_it_refuses_researchers_and_admins(client, request, who, pairwise_conversation, generate):
    turn = generate(pairwise_conversation)
    client.force_login(request.getfixturevalue(who))
    for url in (
        reverse("collection:dashboard"),
        reverse("collection:review"),
        reverse("collection:conversation", args=[pairwise_conversation.pk]),
        reverse("collection:turn", args=[turn.pk]),
    ):
        assert client.get(url).status_code == 403, url
    assert client.post(reverse("collection:judge", args=[turn.pk]), {"scale": 1}).status_code == 403


def test_the_dashboard_lists_campaigns_conversations_and_counts(client, alice, make_campaign):
    campaign = make_campaign(instructions="Be <b>kind</b>.\n\nAsk anything.")
    make_campaign(name="Imported data", lm_version=None)  # nobody can chat there
    make_campaign(name="Closed", is_active=False)
    client.force_login(alice)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert "Be &lt;b&gt;kind&lt;/b&gt;.</p>" in page and "<p>Ask anything.</p>" in page
    assert page.count("Start conversation") == 1 and "Closed" not in page
    assert reverse("collection:review") in page and "Judgements made" in page

    response = client.post(reverse("collection:start", args=[campaign.pk]))
    conversation = Conversation.objects.get(contractor=alice)
    assert response["Location"] == reverse("collection:conversation", args=[conversation.pk])
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert reverse("collection:conversation", args=[conversation.pk]) in page


def test_it_shows_why_a_message_is_refused_and_keeps_it(
    client, alice, pairwise_conversation, settings
):
    settings.COLLECTION_MAX_MESSAGE_CHARS = 50
    client.force_login(alice)
    url = reverse("collection:message", args=[pairwise_conversation.pk])
    page = client.get(
        reverse("collection:conversation", args=[pairwise_conversation.pk])
    ).content.decode()
    assert 'maxlength="50"' in page and "Enter</kbd> sends" in page

    long_text = "word " * 20
    response = client.post(url, {"text": long_text})
    assert response.status_code == 200
    page = response.content.decode()
    assert "Messages are limited to 50 characters (this one has 99)." in page
    assert long_text.strip() in page  # still in the box
    assert "Write a message first." in client.post(url, {"text": "   "}).content.decode()
    assert not Turn.objects.exists()


def test_a_message_queues_generation_and_the_page_shows_progress(
    client, alice, pairwise_conversation, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(
            reverse("collection:message", args=[pairwise_conversation.pk]), {"text": "Hi there"}
        )
    assert response["Location"] == reverse(
        "collection:conversation", args=[pairwise_conversation.pk]
    )
    assert len(queued) == 1 and Turn.objects.get().human_text == "Hi there"
    page = client.get(response["Location"]).content.decode()
    assert "The model is writing 2 responses…" in page and 'hx-trigger="every 1s"' in page
    assert 'name="text"' not in page  # no second message before this one is judged


def test_the_turn_fragment_polls_while_generating_and_then_shows_the_form(
    client, alice, pairwise_conversation, django_capture_on_commit_callbacks
):
    client.force_login(alice)
    with django_capture_on_commit_callbacks(execute=False):
        turn = turn_submit(conversation=pairwise_conversation, contractor=alice, text="Hi")
    url = reverse("collection:turn", args=[turn.pk])
    for status in (Turn.Status.QUEUED, Turn.Status.GENERATING):
        Turn.objects.filter(pk=turn.pk).update(status=status)
        fragment = client.get(url, **HTMX).content.decode()
        assert fragment.lstrip().startswith("<section") and "<html" not in fragment
        assert f'hx-get="{url}"' in fragment and 'hx-trigger="every 1s"' in fragment
        assert "The model is writing 2 responses…" in fragment

    Turn.objects.filter(pk=turn.pk).update(status=Turn.Status.QUEUED)
    turn_generate(turn_id=turn.pk)
    fragment = client.get(url, **HTMX).content.decode()
    assert "hx-trigger" not in fragment and "data-judge" in fragment
    assert "Which response is more helpful?" in fragment
    assert all(label in fragment for label in SCALE_LABELS.values())
    assert "Response A" in fragment and "Response B" in fragment
    assert client.get(url)["Location"].endswith(
        f"/conversations/{pairwise_conversation.pk}/#turn-{turn.pk}"
    )


def test_pairwise_judging_is_recorded_once_then_the_next_message_is_asked(
    client, alice, pairwise_conversation, generate
):
    turn = generate(pairwise_conversation)
    a, b = turn.responses.order_by("index")
    client.force_login(alice)
    data = {"scale": "6", "flags": ["unhelpful"], "note": " vague ", "time_spent_ms": "4200"}
    first, second = post_twice(client, reverse("collection:judge", args=[turn.pk]), data)
    assert first.status_code == second.status_code == 302
    judgement = Judgement.objects.get()
    assert (judgement.scale, judgement.strength) == (6, 2)
    assert judgement.submitted_ranking == judgement.ranking == [b.pk, a.pk]
    assert judgement.flags == ["unhelpful"] and judgement.note == "vague"
    assert judgement.time_spent_ms == 4200
    page = client.get(first["Location"]).content.decode()
    assert "Your next message" in page and "End conversation" in page
    assert b.text.strip()[:10] in page  # the dialogue continues with the chosen response


def test_ranking_judging_is_recorded_once_with_and_without_javascript(
    client, alice, ranking, generate
):
    client.force_login(alice)
    turn = generate(ranking)
    a, b, c = turn.responses.order_by("index")
    page = client.get(reverse("collection:conversation", args=[ranking.pk])).content.decode()
    assert 'name="ranking"' in page and 'name="rank_3"' in page and "Backspace" in page
    url = reverse("collection:judge", args=[turn.pk])

    incomplete = client.post(url, {"rank_1": c.pk, "rank_2": c.pk, "rank_3": a.pk})
    assert "Rank all 3 responses, each once." in incomplete.content.decode()
    assert not Judgement.objects.exists()

    post_twice(client, url, {"ranking": f"{c.pk},{a.pk},{b.pk}"})  # the keyboard widget's field
    judgement = Judgement.objects.get()
    assert judgement.submitted_ranking == [c.pk, a.pk, b.pk] and judgement.scale is None

    turn = generate(ranking, "And now?")  # no JavaScript: one select per place
    a, b, c = turn.responses.order_by("index")
    post_twice(
        client,
        reverse("collection:judge", args=[turn.pk]),
        {"rank_1": b.pk, "rank_2": c.pk, "rank_3": a.pk},
    )
    assert Judgement.objects.get(turn=turn).submitted_ranking == [b.pk, c.pk, a.pk]


def test_without_javascript_the_time_spent_is_measured_from_when_the_responses_were_ready(
    client, alice, pairwise_conversation, generate
):
    turn = generate(pairwise_conversation)
    Turn.objects.filter(pk=turn.pk).update(ready_at=timezone.now() - timedelta(seconds=5))
    client.force_login(alice)
    client.post(reverse("collection:judge", args=[turn.pk]), {"scale": "1"})
    assert 5000 <= Judgement.objects.get().time_spent_ms < 60_000


def test_a_failed_turn_shows_the_error_and_try_again_requeues_it(
    client, alice, pairwise_conversation, generate, django_capture_on_commit_callbacks
):
    # Really fails: the message does not fit the tiny model's 512-token context.
    turn = generate(pairwise_conversation, " ".join(f"q{i}z" for i in range(350)))
    assert turn.status == Turn.Status.FAILED
    client.force_login(alice)
    page = client.get(
        reverse("collection:conversation", args=[pairwise_conversation.pk])
    ).content.decode()
    assert "The model is not answering right now" in page and "Try again" in page
    assert reverse("collection:retry", args=[turn.pk]) in page and "hx-trigger" not in page

    with django_capture_on_commit_callbacks(execute=False) as queued:
        response = client.post(reverse("collection:retry", args=[turn.pk]))
    assert response["Location"] == reverse(
        "collection:conversation", args=[pairwise_conversation.pk]
    )
    assert len(queued) == 1
    turn.refresh_from_db()
    assert turn.status == Turn.Status.QUEUED and turn.error == ""
    assert turn.human_text.startswith("q0z q1z")  # the contractor's text is kept


def test_the_last_turn_ends_the_conversation_and_says_so(client, alice, make_campaign, generate):
    conversation = conversation_start(campaign=make_campaign(max_turns=1), contractor=alice)
    turn = generate(conversation)
    client.force_login(alice)
    response = client.post(reverse("collection:judge", args=[turn.pk]), {"scale": "3"})
    page = client.get(response["Location"]).content.decode()
    assert "reached its maximum of 1 turn" in page
    assert 'name="text"' not in page and "End conversation" not in page
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ENDED


def test_ending_a_conversation_twice_is_harmless(client, alice, pairwise_conversation):
    client.force_login(alice)
    url = reverse("collection:end", args=[pairwise_conversation.pk])
    asked = client.post(url, {})  # the page's button: the server asks first
    assert asked.status_code == 200 and 'name="confirm" value="yes"' in asked.content.decode()
    pairwise_conversation.refresh_from_db()
    assert pairwise_conversation.status == Conversation.Status.OPEN
    first, second = post_twice(client, url, {"confirm": "yes"})
    assert first["Location"] == second["Location"] == reverse("collection:dashboard")
    pairwise_conversation.refresh_from_db()
    assert (
        pairwise_conversation.status == Conversation.Status.ENDED and pairwise_conversation.ended_at
    )
    page = client.get(
        reverse("collection:conversation", args=[pairwise_conversation.pk])
    ).content.decode()
    assert "This conversation has ended." in page and 'name="text"' not in page


def test_red_teamers_are_asked_which_response_is_more_harmful(
    client, alice, make_campaign, generate
):
    conversation = conversation_start(campaign=make_campaign(mode="red_team"), contractor=alice)
    generate(conversation)
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    assert "Which response is MORE harmful?" in page and "A much more harmful" in page


def test_the_review_queue_offers_others_turns_once_each(
    client, alice, bob, make_campaign, generate
):
    client.force_login(bob)
    assert "Nothing to review" in client.get(reverse("collection:review")).content.decode()

    conversation = conversation_start(campaign=make_campaign(overlap_target=2), contractor=alice)
    first = generate(conversation, "First question")
    judgement_submit(turn=first, contractor=alice, scale=1)
    second = generate(conversation, "Second question")
    judgement_submit(turn=second, contractor=alice, scale=8)

    page = client.get(reverse("collection:review")).content.decode()
    assert "First question" in page and "Second question" not in page
    post_twice(client, reverse("collection:review_judge", args=[first.pk]), {"scale": "2"})
    page = client.get(reverse("collection:review")).content.decode()
    # The second turn, after the dialogue so far: the first message and alice's choice.
    assert re.search("First question.*Second question", page, re.S)
    client.post(reverse("collection:review_judge", args=[second.pk]), {"scale": "7"})
    assert "Nothing to review" in client.get(reverse("collection:review")).content.decode()

    reviews = Judgement.objects.filter(contractor=bob).order_by("turn__index")
    assert [(j.turn_id, j.scale, j.origin) for j in reviews] == [
        (first.pk, 2, "review"),
        (second.pk, 7, "review"),
    ]
    # alice's own turns never reach her queue, and posting to one changes nothing
    client.force_login(alice)
    assert "Nothing to review" in client.get(reverse("collection:review")).content.decode()
    client.post(reverse("collection:review_judge", args=[first.pk]), {"scale": "8"})
    assert Judgement.objects.get(turn=first, contractor=alice).scale == 1


def test_the_queue_keeps_each_turns_review_state_through_judgements_and_target_changes(
    alice, bob, django_user_model, make_campaign, generate, adam
):
    from django.apps import apps

    from collection import selectors

    campaign = make_campaign(overlap_target=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    old = generate(conversation, "Old question")
    judgement_submit(turn=old, contractor=alice, scale=1)
    new = generate(conversation, "New question")
    judgement_submit(turn=new, contractor=alice, scale=8)
    old.refresh_from_db()
    assert (old.judgement_count, old.needs_review) == (1, True)
    assert selectors.review_next(contractor=bob) == old  # the oldest open turn first

    judgement_submit(turn=old, contractor=bob, scale=2)
    old.refresh_from_db()
    assert (old.judgement_count, old.needs_review) == (2, False)  # target reached: closed
    carol = django_user_model.objects.create_user("carol", password="x")
    carol.groups.add(alice.groups.get())
    assert selectors.review_next(contractor=carol) == new
    assert set(selectors.review_queue(contractor=carol)) == {new}
    assert selectors.review_queue_count(contractor=carol) == 1

    # A gold item jumps the queue, however new it is.
    gold = gold_item_create(
        campaign=campaign, admin=adam, human_text="Gold?", responses=["Yes.", "No."], best_index=0
    )
    assert selectors.review_next(contractor=carol) == gold
    assert set(selectors.review_queue(contractor=carol)) == {new, gold}
    assert selectors.review_queue_count(contractor=carol) == 2

    # Raising the target reopens the finished turn; the migration's backfill agrees.
    campaign.overlap_target = 3
    campaign.save()
    assert campaign_review_refresh(campaign=campaign) == 2
    assert selectors.review_next(contractor=carol) == gold
    assert set(selectors.review_queue(contractor=carol)) == {old, new, gold}
    assert selectors.review_queue_count(contractor=carol) == 3
    # Capped: the count stops at `at_most`, the gold item counted first.
    assert [selectors.review_queue_count(contractor=carol, at_most=n) for n in (1, 2, 3, 9)] == [
        1,
        2,
        3,
        3,
    ]
    migration = __import__("collection.migrations.0002_turn_review_state", fromlist=["backfill"])
    Turn.objects.update(judgement_count=0, needs_review=False)
    migration.backfill(apps, None)
    assert sorted(Turn.objects.values_list("human_text", "judgement_count", "needs_review")) == [
        ("Gold?", 0, False),
        ("New question", 1, True),
        ("Old question", 2, True),
    ]


def test_reviewers_at_the_same_moment_are_handed_different_turns_held_until_judged(
    client, alice, bob, django_user_model, make_campaign, generate, settings
):
    from collection import selectors

    campaign = make_campaign(overlap_target=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    first = generate(conversation, "One?")
    judgement_submit(turn=first, contractor=alice, scale=8)
    second = generate(conversation, "Two?")
    judgement_submit(turn=second, contractor=alice, scale=8)
    carol = django_user_model.objects.create_user("carol", password="x")
    carol.groups.add(alice.groups.get())
    assert selectors.review_claim_next(contractor=bob) == first
    assert selectors.review_claim_next(contractor=carol) == second  # first is bob's for now
    assert selectors.review_claim_next(contractor=bob) == first  # shown again: still his
    first.refresh_from_db()
    assert first.review_claimed_by == bob
    assert first.review_claimed_until > timezone.now() + timedelta(seconds=590)
    # The page shows each one their own turn.
    client.force_login(carol)
    assert (
        f"/collect/review/{second.pk}/judge/"
        in client.get(reverse("collection:review")).content.decode()
    )

    # A hold past its time is free again, for whoever opens the queue first.
    Turn.objects.filter(pk=first.pk).update(review_claimed_until=timezone.now())
    dave = django_user_model.objects.create_user("dave", password="x")
    dave.groups.add(alice.groups.get())
    assert selectors.review_claim_next(contractor=dave) == first
    # A judgement ends the hold (and here closes the turn: its target of 2 is reached).
    judgement_submit(turn=first, contractor=dave, scale=3)
    first.refresh_from_db()
    assert (first.review_claimed_by, first.review_claimed_until, first.needs_review) == (
        None,
        None,
        False,
    )

    # bob judged first meanwhile, which dave's judgement closed: a clear refusal, not a 404,
    # and nothing stored.
    client.force_login(bob)
    refused = client.post(reverse("collection:review_judge", args=[first.pk]), {"scale": "2"})
    assert refused.status_code == 200
    assert "This turn has all the judgements it needs" in refused.content.decode()
    assert not Judgement.objects.filter(turn=first, contractor=bob).exists()
    # Still no way into a turn he may not review: no such turn, or one of his own.
    missing = client.post(
        reverse("collection:review_judge", args=[first.pk + 1000]), {"scale": "2"}
    )
    assert missing.status_code == 404
    client.force_login(alice)
    own = client.post(reverse("collection:review_judge", args=[second.pk]), {"scale": "2"})
    assert own.status_code == 404
    assert Judgement.objects.filter(turn=second).count() == 1  # alice's own, as it was


def test_the_dashboard_counts_the_review_queue_up_to_what_it_shows(
    client, alice, bob, make_campaign, generate, monkeypatch
):
    from collection import views

    campaign = make_campaign(overlap_target=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    for text in ("One?", "Two?"):
        judgement_submit(turn=generate(conversation, text), contractor=alice, scale=8)
    client.force_login(bob)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert "2 turns by others waiting for a second judgement" in page
    monkeypatch.setattr(views, "REVIEW_COUNT_SHOWN", 1)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert "more than 1 turns by others waiting" in page


def test_an_admin_makes_a_gold_item_that_leads_the_queue_and_bad_input_keeps_the_text(
    client, adam, bob, make_campaign
):
    from collection.models import GoldAnswer

    campaign = make_campaign(k=3, judgement_type="ranking")
    client.force_login(adam)
    url = reverse("collection:gold")
    form = {
        "campaign": campaign.pk,
        "human_text": "How do I pick a lock?",
        "responses": "I can't help with that.\n---\nUse a tension wrench.\n---\nCall a locksmith.",
        "best": "3",
        "explanation": "Safe and helpful.",
    }
    # Two responses for k = 3, then a best beyond the list: refused, nothing stored, text kept.
    short = client.post(url, {**form, "responses": "Yes.\n---\nNo."}).content.decode()
    assert "offers k = 3 responses; these are 2" in short and "How do I pick a lock?" in short
    assert "There are only 3" in client.post(url, {**form, "best": "4"}).content.decode()
    assert not GoldAnswer.objects.exists()

    response = client.post(url, form, follow=True)
    assert "Gold item created" in response.content.decode()
    gold = GoldAnswer.objects.get()
    assert [r.text for r in gold.turn.responses.order_by("index")] == [
        "I can't help with that.",
        "Use a tension wrench.",
        "Call a locksmith.",
    ]
    assert gold.best_response.index == 2 and gold.created_by == adam
    assert "How do I pick a lock?" in client.get(url).content.decode()  # listed
    client.force_login(bob)
    assert client.get(url).status_code == 403
    page = client.get(reverse("collection:review")).content.decode()
    assert "How do I pick a lock?" in page
