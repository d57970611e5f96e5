"""The review queue's boosted form: htmx posts the judgement and the answer is the next turn,
one request per judgement (without JavaScript: a plain POST, its redirect, a GET)."""

import re

import pytest
from django.urls import reverse

from collection.judgements import judgement_submit
from collection.models import Judgement, Turn
from tests.browser import chromium_page, sign_in
from tests.collection.turn_builders import make_campaign, ready_turn

BOOSTED = {"HTTP_HX_REQUEST": "true", "HTTP_HX_BOOSTED": "true"}
FORM_ACTION = re.compile(r'action="/collect/review/(\d+)/judge/"')
RECORDED = "Thank you: your judgement is recorded."


def reviewed_conversation(lm, author, **fields):
    """`author`'s conversation in a campaign that wants a second judgement of each turn."""
    from collection.conversations import conversation_start

    campaign = make_campaign(lm, overlap_target=2, **fields)
    return conversation_start(campaign=campaign, contractor=author)


def judged_turns(conversation, author, how_many: int) -> list[Turn]:
    """`how_many` turns of `conversation` its author has judged: each waits for a review."""
    turns = []
    for _ in range(how_many):
        turn = ready_turn(conversation)
        judgement_submit(turn=turn, contractor=author, scale=2)
        turns.append(turn)
    return turns


@pytest.mark.django_db
def test_a_boosted_submit_answers_with_the_next_turn_held_and_a_plain_one_redirects(
    client, alice, bob, lm, django_assert_max_num_queries
):
    conversation = reviewed_conversation(lm, alice, max_turns=4)
    first, second, third = judged_turns(conversation, alice, 3)
    client.force_login(bob)
    page = client.get(reverse("collection:review")).content.decode()
    assert FORM_ACTION.search(page).group(1) == str(first.pk)
    assert 'hx-boost="true"' in page

    # Session, user and roles; the turn; its form's responses; the judgement under the turn's
    # lock (5 statements and the transaction's two); the next turn found and held (4 and two);
    # its form's responses and the conversation so far. Without the boost it is 2 requests.
    with django_assert_max_num_queries(20):
        answer = client.post(
            reverse("collection:review_judge", args=[first.pk]),
            {"scale": "3", "time_spent_ms": "1500"},
            **BOOSTED,
        )
    assert answer.status_code == 200
    body = answer.content.decode()
    assert RECORDED in body and FORM_ACTION.search(body).group(1) == str(second.pk)
    assert "question 0" in body  # the conversation so far, above the second turn
    mine = Judgement.objects.get(turn=first, contractor=bob)
    assert (mine.scale, mine.time_spent_ms, mine.origin) == (3, 1500, "review")
    assert Turn.objects.get(pk=second.pk).review_claimed_by == bob  # shown, so held for bob
    assert Turn.objects.get(pk=first.pk).review_claimed_by is None  # judged: the hold ended

    # The same submit again (a double click that got through) changes nothing.
    again = client.post(
        reverse("collection:review_judge", args=[first.pk]), {"scale": "8"}, **BOOSTED
    )
    assert again["HX-Push-Url"] == "false"  # the page keeps the queue's address
    assert again.status_code == 200 and Judgement.objects.filter(contractor=bob).count() == 1
    assert Judgement.objects.get(turn=first, contractor=bob).scale == 3

    # A refused form comes back with the same turn and says why; nothing is stored.
    refused = client.post(reverse("collection:review_judge", args=[second.pk]), {}, **BOOSTED)
    text = refused.content.decode()
    assert refused.status_code == 200 and RECORDED not in text
    assert FORM_ACTION.search(text).group(1) == str(second.pk)
    assert "Choose a point on the scale" in text
    assert not Judgement.objects.filter(turn=second, contractor=bob).exists()

    # Without JavaScript: the redirect to the queue, which then shows the next turn.
    plain = client.post(reverse("collection:review_judge", args=[second.pk]), {"scale": "6"})
    assert plain.status_code == 302 and plain["Location"] == reverse("collection:review")
    page = client.get(reverse("collection:review")).content.decode()
    assert RECORDED in page and FORM_ACTION.search(page).group(1) == str(third.pk)


@pytest.mark.django_db
def test_a_boosted_submit_of_the_last_turn_says_the_queue_is_empty(client, alice, bob, lm):
    conversation = reviewed_conversation(lm, alice)
    (only,) = judged_turns(conversation, alice, 1)
    client.force_login(bob)
    client.get(reverse("collection:review"))
    answer = client.post(
        reverse("collection:review_judge", args=[only.pk]), {"scale": "5"}, **BOOSTED
    )
    body = answer.content.decode()
    assert answer.status_code == 200 and RECORDED in body and "Nothing to review" in body


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_reviewer_judges_two_turns_with_the_keyboard_and_the_page_never_reloads(
    live_server, alice, bob, lm
):
    conversation = reviewed_conversation(lm, alice, max_turns=4)
    first, second = judged_turns(conversation, alice, 2)
    with chromium_page(viewport={"width": 1100, "height": 900}) as page:
        sign_in(page, live_server.url, "bob", "pw-bob")
        page.goto(live_server.url + reverse("collection:review"))
        page.evaluate("window.stillThisPage = true")  # gone if the page were loaded again
        sent = []
        page.on("request", lambda r: sent.append(r.post_data) if r.method == "POST" else None)
        assert (
            page.locator("form[data-judge]").get_attribute("action").endswith(f"/{first.pk}/judge/")
        )
        page.wait_for_timeout(300)  # the time spent is measured from when the form was shown
        page.keyboard.press("3")
        page.keyboard.press("Enter")
        page.locator(f'form[action$="/{second.pk}/judge/"]').wait_for()
        assert RECORDED in page.locator("main").inner_text()
        page.wait_for_timeout(300)
        page.keyboard.press("=")  # the keys work on the turn htmx swapped in
        page.keyboard.press("Enter")
        page.get_by_text("Nothing to review right now").wait_for()
        assert page.evaluate("window.stillThisPage") is True
        assert page.url.endswith(reverse("collection:review"))
    reviews = Judgement.objects.filter(contractor=bob).order_by("turn__index")
    assert [(j.turn_id, j.scale, j.tie) for j in reviews] == [
        (first.pk, 3, False),
        (second.pk, None, True),
    ]
    # The time spent was measured by the page and sent (its listener runs before htmx reads
    # the form), not left to the server's guess.
    spent = [int(re.search(r"time_spent_ms=(\d+)", body).group(1)) for body in sent]
    assert len(spent) == 2 and all(ms >= 250 for ms in spent), sent
    assert [j.time_spent_ms for j in reviews] == spent
