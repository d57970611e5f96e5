"""Contractors judge what they see (issue 13): the tie point and "both are bad", changing a
judgement until the next message, ending with a confirmation, Markdown instructions without
raw HTML, responses cut by the token limit, how long the model usually takes; a 403 page."""

import logging
import re

import pytest
from django.contrib.staticfiles import finders
from django.core.cache import cache
from django.urls import reverse

from collection import exports, quality, snapshots, views
from collection.conversations import conversation_start
from collection.errors import CollectionError
from collection.gold import gold_item_create
from collection.judgements import judgement_revise, judgement_submit
from collection.models import Campaign, Conversation, Judgement, Response, Turn
from collection.templatetags.collection_text import markdown
from evals.selectors import arm_games
from training.snapshots import snapshot_rankings

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Snapshots write their frozen id lists under MEDIA_ROOT: keep them in the test's folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def lm(db):
    from assistant.models import ModelVersion

    # A row, not a registration: nothing here generates.
    return ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")


def make_campaign(lm, **fields):
    defaults = {"name": "Be helpful", "lm_version": lm, "max_turns": 3}
    return Campaign.objects.create(**{**defaults, **fields})


def ready_turn(conversation, texts=("Paris.", "Lyon."), *, finish=("stop", "stop"), lm=None):
    """The conversation's next turn with its responses written, ready to judge."""
    index = conversation.turns.count()
    turn = Turn.objects.create(
        conversation=conversation, index=index, human_text=f"question {index}", status="ready"
    )
    for i, text in enumerate(texts):
        Response.objects.create(
            turn=turn,
            index=i,
            text=text,
            finish_reason=finish[i] if i < len(finish) else "stop",
            model_version=lm or conversation.campaign.lm_version,
            latency_s=1.0,
        )
    return turn


def ids(turn):
    return list(turn.responses.order_by("index").values_list("pk", flat=True))


@pytest.fixture
def conversation(lm, alice):
    return conversation_start(campaign=make_campaign(lm), contractor=alice)


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
    assert arm_games().outcomes == []


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
