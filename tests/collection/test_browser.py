"""A contractor chats with a tiny model through a real worker and judges with the keyboard only.

Chromium against the live server; a real Celery worker process samples the responses from a
tiny random language model. Two conversations: a pairwise one of two turns and a ranking
(k = 3) one of one turn, so both judgement types are judged with keys alone.
"""

import pytest

from collection import services
from collection.models import Conversation, Judgement, Turn
from tests.browser import chromium_page, sign_in


def say(page, text: str) -> bool:
    """Type a message into the (focused) box and send it with Enter; wait for the responses.

    Returns whether the page showed the model's progress before the responses arrived.
    """
    assert page.evaluate("document.activeElement.name") == "text"  # autofocused
    page.keyboard.type(text)
    with page.expect_navigation():
        page.keyboard.press("Enter")
    saw_progress = page.locator(".progress").count() > 0
    page.locator("form[data-judge]").wait_for(timeout=30_000)  # swapped in by htmx polling
    return saw_progress


def press_then_enter(page, keys: list[str], screenshot=None) -> None:
    for key in keys:
        page.keyboard.press(key)
    if screenshot:
        page.screenshot(path=str(screenshot), full_page=True)
    with page.expect_navigation():
        page.keyboard.press("Enter")


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_a_contractor_judges_three_turns_with_the_keyboard_only(
    live_server, alice, make_campaign, celery_worker_process, artifacts_dir
):
    # make_campaign registers the tiny LM before the worker starts: the worker fixture purges
    # the eval runs that registering a model queues, so they don't hold up generation.
    chat = make_campaign(name="Helpful chat", instructions="Ask for help with anything.")
    rank = make_campaign(name="Rank three", judgement_type="ranking", k=3, max_turns=2)
    progress = []
    with chromium_page(viewport={"width": 1100, "height": 900}) as page:
        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        assert "Ask for help with anything." in page.locator(f"#campaign-{chat.pk}").inner_text()

        # Conversation 1, pairwise: "2" = A better, then "7" = B better.
        page.locator(f"#campaign-{chat.pk} button").click()
        page.wait_for_url("**/collect/conversations/*/")
        progress.append(say(page, "Hello! Can you help me plan a trip?"))
        assert "1–8" in page.locator("form[data-judge] .hint").inner_text()
        press_then_enter(page, ["2"], artifacts_dir / "collection-pairwise.png")
        progress.append(say(page, "What should I pack?"))
        assert "Hello! Can you help me plan a trip?" in page.locator(".dialogue").inner_text()
        press_then_enter(page, ["7"])
        page.get_by_role("button", name="End conversation").click()
        page.wait_for_url(live_server.url + "/collect/")

        # Conversation 2, ranking of k = 3: 2, Backspace (undo), 1 2 3, then move C up twice.
        page.locator(f"#campaign-{rank.pk} button").click()
        page.wait_for_url("**/collect/conversations/*/")
        progress.append(say(page, "Tell me a fun fact."))
        for key in ["2", "Backspace", "1", "2", "3", "ArrowUp", "ArrowUp"]:
            page.keyboard.press(key)
        order = page.locator(".rank-order li").all_inner_texts()
        assert [item.split()[1] for item in order] == ["C", "A", "B"]
        assert "press Enter" in page.locator(".judge-status").inner_text()
        page.screenshot(path=str(artifacts_dir / "collection-ranking.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})  # a phone: responses stack
        page.screenshot(path=str(artifacts_dir / "collection-ranking-narrow.png"), full_page=True)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        page.get_by_role("button", name="End conversation").click()
        page.wait_for_url(live_server.url + "/collect/")
        assert page.locator("#judgement-count").inner_text() == "3"

    # The worker needs a second to pick up the first task, so the page polled at least once.
    assert any(progress), progress
    first, second, ranked = Judgement.objects.order_by("created_at")
    a1, b1 = first.turn.responses.order_by("index")
    a2, b2 = second.turn.responses.order_by("index")
    a3, b3, c3 = ranked.turn.responses.order_by("index")
    assert (first.scale, first.strength, first.submitted_ranking) == (2, 3, [a1.pk, b1.pk])
    assert (second.scale, second.strength, second.submitted_ranking) == (7, 3, [b2.pk, a2.pk])
    assert ranked.submitted_ranking == ranked.ranking == [c3.pk, a3.pk, b3.pk]
    assert ranked.scale is None and ranked.strength is None
    for judgement in (first, second, ranked):
        assert (judgement.contractor, judgement.origin) == (alice, "conversation")
        assert judgement.time_spent_ms > 0  # measured by the page
    conversations = Conversation.objects.order_by("created_at")
    assert [(c.campaign_id, c.status, c.turns.count()) for c in conversations] == [
        (chat.pk, "ended", 2),
        (rank.pk, "ended", 1),
    ]
    assert first.turn.conversation == second.turn.conversation
    assert [t.chosen_response_id for t in (first.turn, second.turn, ranked.turn)] == [
        a1.pk,
        b2.pk,
        c3.pk,
    ]


@pytest.mark.django_db(transaction=True)
def test_without_javascript_a_ranking_is_made_with_one_select_per_place(
    live_server, alice, make_campaign
):
    campaign = make_campaign(name="Rank three", judgement_type="ranking", k=3)
    conversation = services.conversation_start(campaign=campaign, contractor=alice)
    # Generated here, in this process: this test needs no worker.
    turn = Turn.objects.create(conversation=conversation, index=0, human_text="Hi!")
    a, b, c = services.turn_generate(turn_id=turn.pk).responses.order_by("index")
    with chromium_page(java_script_enabled=False) as page:
        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        page.goto(f"{live_server.url}/collect/conversations/{conversation.pk}/")
        assert page.locator(".rank-live").is_hidden()
        for place, response in ((1, b), (2, c), (3, a)):
            page.select_option(f"select[name=rank_{place}]", str(response.pk))
        page.get_by_role("button", name="Submit judgement").click()
        page.locator("textarea[name=text]").wait_for()
    assert Judgement.objects.get().submitted_ranking == [b.pk, c.pk, a.pk]
