"""A contractor chats with a tiny model through a real worker and judges with the keyboard only.

Chromium against the live server; a real Celery worker process samples the responses from a
tiny random language model. One conversation of three turns in a mixed campaign: the first and
last judged pairwise on the 8-point scale, the second by ranking k = 3 responses, each picked
and judged with keys alone.
"""

import pytest

from collection.conversations import conversation_start
from collection.generation import turn_generate
from collection.models import Conversation, Judgement, Turn
from tests.browser import chromium_page, sign_in

pytestmark = pytest.mark.browser


def say(page, text: str, *, rank: bool = False) -> bool:
    """Type a message into the (focused) box, pick how to judge it with Tab and the arrow keys
    (pairwise is preselected), and send it with Enter; wait for the responses.

    Returns whether the page showed the model's progress before the responses arrived.
    """
    assert page.evaluate("document.activeElement.name") == "text"  # autofocused
    page.keyboard.type(text)
    if rank:
        page.keyboard.press("Tab")  # to the checked radio: "compare 2 on the scale"
        page.keyboard.press("ArrowRight")  # "rank all 3"
        assert page.evaluate("document.activeElement.value") == "ranking"
    with page.expect_navigation():
        page.keyboard.press("Enter")  # from the radio, Enter sends the message too
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
    chat = make_campaign(
        name="Helpful chat",
        instructions="Ask for help with anything.",
        judgement_type="mixed",
        k=3,
        max_turns=3,
    )
    progress = []
    with chromium_page(viewport={"width": 1100, "height": 900}) as page:
        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        assert "Ask for help with anything." in page.locator(f"#campaign-{chat.pk}").inner_text()
        page.locator(f"#campaign-{chat.pk} button").click()
        page.wait_for_url("**/collect/conversations/*/")

        # Turn 1, pairwise: "2" = A better.
        progress.append(say(page, "Hello! Can you help me plan a trip?"))
        assert "1–8" in page.locator("form[data-judge] .hint").inner_text()
        press_then_enter(page, ["2"], artifacts_dir / "collection-pairwise.png")

        # Turn 2, ranking of k = 3: 2, Backspace (undo), 1 2 3, then move C up twice.
        progress.append(say(page, "Tell me a fun fact.", rank=True))
        assert "Hello! Can you help me plan a trip?" in page.locator(".dialogue").inner_text()
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
        page.set_viewport_size({"width": 1100, "height": 900})

        # Turn 3, pairwise again: "7" = B better. The third turn is the campaign's last.
        progress.append(say(page, "What should I pack?"))
        press_then_enter(page, ["7"])
        assert "maximum of 3 turns" in page.locator(".notice").inner_text()
        page.screenshot(path=str(artifacts_dir / "collection-conversation.png"), full_page=True)
        page.get_by_role("link", name="← Campaigns and conversations").focus()
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert page.locator("#judgement-count").inner_text() == "3"

    # The worker needs a second to pick up the first task, so the page polled at least once.
    assert any(progress), progress
    first, ranked, third = Judgement.objects.order_by("created_at")
    a1, b1 = first.turn.responses.order_by("index")
    a2, b2, c2 = ranked.turn.responses.order_by("index")
    a3, b3 = third.turn.responses.order_by("index")
    assert (first.scale, first.strength, first.submitted_ranking) == (2, 3, [a1.pk, b1.pk])
    assert ranked.submitted_ranking == ranked.ranking == [c2.pk, a2.pk, b2.pk]
    assert ranked.scale is None and ranked.strength is None
    assert (third.scale, third.strength, third.submitted_ranking) == (7, 3, [b3.pk, a3.pk])
    for judgement in (first, ranked, third):
        assert (judgement.contractor, judgement.origin) == (alice, "conversation")
        assert judgement.time_spent_ms > 0  # measured by the page
    conversation = Conversation.objects.get()
    assert (conversation.campaign, conversation.status) == (chat, "ended")
    turns = list(conversation.turns.order_by("index"))
    assert [t.judgement_type for t in turns] == ["pairwise", "ranking", "pairwise"]
    assert [t.pk for t in turns] == [first.turn_id, ranked.turn_id, third.turn_id]
    assert [t.chosen_response_id for t in turns] == [a1.pk, c2.pk, b3.pk]


@pytest.mark.django_db(transaction=True)
def test_without_javascript_a_ranking_is_made_with_one_select_per_place(
    live_server, alice, make_campaign
):
    campaign = make_campaign(name="Rank three", judgement_type="ranking", k=3)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    # Generated here, in this process: this test needs no worker.
    turn = Turn.objects.create(conversation=conversation, index=0, human_text="Hi!")
    a, b, c = turn_generate(turn_id=turn.pk).responses.order_by("index")
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
