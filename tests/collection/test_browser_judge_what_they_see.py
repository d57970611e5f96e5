"""In Chromium, a contractor uses the tie point with the keyboard, ticks "both are bad", changes
the judgement before the next message, and ends the conversation through its confirmation;
the instructions show as Markdown and a response cut by the token limit says so (issue 13).

No worker: the responses are written here, so the page shows them at once.
"""

import pytest

from collection.conversations import conversation_start
from collection.models import Conversation, Judgement, Response, Turn
from tests.browser import chromium_page, sign_in

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(120)
def test_tie_both_bad_revise_and_end_with_the_keyboard_and_the_confirmation(
    live_server, alice, make_campaign, artifacts_dir
):
    campaign = make_campaign(
        name="Helpful chat",
        instructions="Pick the **more helpful** one.\n\n<script>alert(1)</script>",
        max_turns=3,
    )
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hi!", status=Turn.Status.READY
    )
    a = Response.objects.create(turn=turn, index=0, text="Hello, how", finish_reason="length")
    b = Response.objects.create(turn=turn, index=1, text="Hello!", finish_reason="stop")
    url = f"{live_server.url}/collect/conversations/{conversation.pk}/"
    with chromium_page(viewport={"width": 1100, "height": 900}) as page:
        dialogs = []
        page.on("dialog", lambda dialog: (dialogs.append(dialog.message), dialog.dismiss()))
        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        page.goto(url)
        page.locator("details.instructions summary").click()
        assert page.locator(".instructions strong").inner_text() == "more helpful"
        assert "<script>alert(1)</script>" in page.locator(".instructions").inner_text()
        assert page.locator(".response .cut").count() == 1
        assert "cut at the token limit" in page.locator(".response").first.inner_text()

        # "=" picks "about the same"; the both-bad box; Enter submits.
        page.keyboard.press("=")
        assert page.locator("input[name=scale][value=tie]").is_checked()
        assert "About the same" in page.locator(".judge-status").inner_text()
        page.locator("input[name=both_bad]").check()
        page.screenshot(path=str(artifacts_dir / "collection-tie.png"), full_page=True)
        with page.expect_navigation():
            page.keyboard.press("Enter")
        judgement = Judgement.objects.get()
        assert (judgement.tie, judgement.both_bad, judgement.scale) == (True, True, None)

        # Changed before the next message: the form starts from the tie; "7" = B better.
        with page.expect_navigation():
            page.locator("a.revise-link").click()
        assert page.locator("input[name=scale][value=tie]").is_checked()
        assert page.locator("input[name=both_bad]").is_checked()
        page.locator("input[name=both_bad]").uncheck()
        page.keyboard.press("7")
        with page.expect_navigation():
            page.keyboard.press("Enter")
        assert "Your judgement is changed." in page.locator(".message").inner_text()
        judgement.refresh_from_db()
        assert (judgement.tie, judgement.both_bad, judgement.scale) == (False, False, 7)
        assert judgement.revised_at is not None
        assert "Hello!" in page.locator(".dialogue .assistant").inner_text()

        # Ending asks once, on its own page.
        with page.expect_navigation():
            page.locator("form.end-form button").click()
        assert Conversation.objects.get(pk=conversation.pk).status == "open"
        page.screenshot(path=str(artifacts_dir / "collection-end-confirm.png"), full_page=True)
        with page.expect_navigation():
            page.locator("form.end-confirm button[type=submit]").click()
        page.wait_for_url(live_server.url + "/collect/")
        assert not dialogs  # no JavaScript dialog: the server asked
    conversation = Conversation.objects.get()
    assert conversation.status == Conversation.Status.ENDED
    turn.refresh_from_db()
    assert turn.chosen_response_id == b.pk and a.pk in judgement.ranking
