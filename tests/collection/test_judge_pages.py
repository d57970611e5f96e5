"""Contractors judge what they see (issue 13): ending with a confirmation, Markdown
instructions without raw HTML, responses cut by the token limit, how long the model usually
takes; the favicon and a 403 page."""

import logging

import pytest
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.urls import reverse

from collection import views
from collection.conversations import conversation_start
from collection.judgements import judgement_submit
from collection.models import Conversation, Response, Turn
from collection.templatetags.collection_text import markdown
from tests.collection.turn_builders import make_campaign, ready_turn

# `lm`, `conversation` and `media_root` (snapshots write their frozen id lists under
# MEDIA_ROOT: it keeps them in the test's folder) are in tests/collection/conftest.py.
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


# --- Ending a conversation asks once ----------------------------------------------------------


def test_ending_asks_first_and_needs_the_confirmation_and_the_csrf_token(alice, bob, conversation):
    from django.test import Client

    url = reverse("collection:end", args=[conversation.pk])
    client = Client(enforce_csrf_checks=True)
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    assert f'action="{url}"' in page and "End conversation…" in page
    asked = client.get(url)
    text = asked.content.decode()
    assert asked.status_code == 200 and "End conversation" in text and "No, keep going" in text
    assert 'name="confirm" value="yes"' in text and "csrfmiddlewaretoken" in text
    assert client.post(url, {"confirm": "yes"}).status_code == 403  # no CSRF token
    token = client.cookies["csrftoken"].value
    unconfirmed = client.post(url, {"csrfmiddlewaretoken": token})
    assert unconfirmed.status_code == 200 and "No, keep going" in unconfirmed.content.decode()
    wrong = client.post(url, {"csrfmiddlewaretoken": token, "confirm": "1"})
    assert wrong.status_code == 200
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN

    other = Client()
    other.force_login(bob)
    assert other.get(url).status_code == 404
    assert other.post(url, {"confirm": "yes"}).status_code == 404
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.OPEN

    ended = client.post(url, {"csrfmiddlewaretoken": token, "confirm": "yes"})
    assert ended["Location"] == reverse("collection:dashboard")
    conversation.refresh_from_db()
    assert conversation.status == Conversation.Status.ENDED
    again = client.get(url)  # nothing left to ask
    assert again["Location"] == reverse("collection:conversation", args=[conversation.pk])


# --- Instructions as Markdown, without raw HTML ---------------------------------------------

HOSTILE = (
    "# Rules\n\nBe **kind**; see [the guide](https://example.org/guide).\n\n"
    "<script>alert('x')</script>\n\n<img src=x onerror=alert(1)>\n\n"
    "[click](javascript:alert(1)) and [data](data:text/html;base64,PHNjcmlwdD4=) "
    '<a href="javascript:alert(2)">raw</a>'
)


def test_markdown_renders_text_and_escapes_every_tag():
    html = markdown(HOSTILE)
    assert "<h1>Rules</h1>" in html and "<strong>kind</strong>" in html
    assert '<a href="https://example.org/guide" rel="noopener noreferrer nofollow">' in html
    assert "<script" not in html and "<img" not in html
    assert 'href="javascript' not in html and 'href="data' not in html
    assert "&lt;script&gt;" in html and "&lt;img src=x onerror=alert(1)&gt;" in html
    assert "[click](javascript:alert(1))" in html  # left as text, not a link
    assert markdown("") == "" and markdown(None) == ""


def test_every_contractor_page_renders_the_instructions_safely(client, lm, alice, bob):
    campaign = make_campaign(lm, instructions=HOSTILE, overlap_target=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = ready_turn(conversation)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    pages = []
    client.force_login(alice)
    pages.append(client.get(reverse("collection:dashboard")))
    pages.append(client.get(reverse("collection:conversation", args=[conversation.pk])))
    pages.append(client.get(reverse("collection:revise", args=[turn.pk])))
    client.force_login(bob)
    pages.append(client.get(reverse("collection:review")))
    for page in pages:
        text = page.content.decode()
        assert page.status_code == 200 and "<strong>kind</strong>" in text
        assert "&lt;script&gt;" in text and "<script>alert" not in text
        assert "<img src=x" not in text and 'href="javascript' not in text


# --- Cut responses and how long the model takes ---------------------------------------------


def test_a_response_cut_by_the_token_limit_says_so(client, alice, conversation):
    turn = ready_turn(conversation, ("A long answer that", "Short."), finish=("length", "stop"))
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    assert page.count("… (cut at the token limit)") == 1
    a_part, b_part = page.split("Response B", 1)
    assert "(cut at the token limit)" in a_part.split("Response A", 1)[1]
    assert "(cut at the token limit)" not in b_part
    judgement_submit(turn=turn, contractor=alice, scale=1)  # continues with the cut one
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    assert 'A long answer that <span class="cut">… (cut at the token limit)</span>' in page


def test_the_waiting_page_says_how_long_the_model_usually_takes(
    client, lm, alice, conversation, django_assert_num_queries
):
    cache.clear()
    earlier = conversation_start(campaign=conversation.campaign, contractor=alice)
    for seconds in (2.0, 4.0, 30.0):
        turn = ready_turn(earlier, ("a", "b"))
        Response.objects.filter(turn=turn, index=1).update(latency_s=seconds)
    waiting = Turn.objects.create(conversation=conversation, index=0, human_text="Hi")
    with django_assert_num_queries(2):
        usual = views.usual_generation(conversation.campaign)
    assert usual == {"seconds": 4.0, "turns": 3, "text": "4.0 seconds"}
    with django_assert_num_queries(1):  # nothing new: the cached answer
        assert views.usual_generation(conversation.campaign) == usual
    client.force_login(alice)
    page = client.get(reverse("collection:conversation", args=[conversation.pk])).content.decode()
    assert "The model is writing 2 responses" in page
    assert "usually takes about 4.0 seconds (the median of its last 3 turns)" in page
    fragment = client.get(reverse("collection:turn", args=[waiting.pk]), HTTP_HX_REQUEST="true")
    assert "usually takes about 4.0 seconds" in fragment.content.decode()


def test_the_usual_time_reads_only_recent_responses_of_the_campaigns_lm(
    lm, alice, conversation, monkeypatch
):
    from assistant.models import ModelVersion

    cache.clear()
    assert views.usual_generation(conversation.campaign) is None  # nothing written yet
    old = ready_turn(conversation, ("a", "b"))
    Response.objects.filter(turn=old).update(latency_s=100.0)
    other = ModelVersion.objects.create(kind="lm", name="other", path="/models/other")
    elsewhere = conversation_start(campaign=make_campaign(other, name="other"), contractor=alice)
    recent = ready_turn(elsewhere, ("c", "d"), lm=other)
    Response.objects.filter(turn=recent).update(latency_s=50.0)
    mine = ready_turn(conversation_start(campaign=conversation.campaign, contractor=alice))
    Response.objects.filter(turn=mine).update(latency_s=3.0)
    gold_like = ready_turn(conversation_start(campaign=conversation.campaign, contractor=alice))
    Response.objects.filter(turn=gold_like).update(latency_s=0)  # not generated
    monkeypatch.setattr(views, "GENERATION_WINDOW", 6)  # the 6 newest responses only
    usual = views.usual_generation(conversation.campaign)
    assert usual["turns"] == 1 and usual["seconds"] == 3.0  # not the old 100 s, not other's 50 s


# --- Small things: favicon, 403 --------------------------------------------------------------


def test_pages_link_the_favicon(client, alice):
    client.force_login(alice)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert 'rel="icon"' in page and "favicon.svg" in page
    assert finders.find("favicon.svg")


def test_a_403_is_a_page_with_a_way_back_and_a_log_line_without_traceback(client, rita, caplog):
    client.force_login(rita)  # a researcher on a contractor page
    with caplog.at_level(logging.WARNING, logger="django.request"):
        response = client.get(reverse("collection:dashboard"))
    page = response.content.decode()
    assert response.status_code == 403
    assert 'class="topbar"' in page and "rita" in page  # the base template, signed in
    assert "You cannot open this page" in page and f'href="{reverse("home")}"' in page
    records = [r for r in caplog.records if r.name == "django.request"]
    assert records and all(r.exc_info is None for r in records)
    assert "Forbidden" in records[0].getMessage()
    assert "Traceback" not in caplog.text
