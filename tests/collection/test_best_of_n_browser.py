"""Issue 14, must-show 4: a contractor judges a best-of-n turn in Chromium exactly as any other
turn, and nothing on the page (text, attributes, scripts) reveals the PM's scores or ranks.

A real Celery worker samples 4 candidates from a tiny random LM, scores them with a tiny PM and
shows 2; the contractor judges with the keyboard, as in test_browser.py.
"""

import pytest

from collection.models import Candidate, PMAgreement, Response, Turn
from tests.browser import chromium_page, sign_in
from tests.collection.test_browser import press_then_enter, say

pytestmark = pytest.mark.browser


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(150)
def test_a_contractor_judges_a_best_of_n_turn_and_the_page_gives_the_pm_away_nowhere(
    live_server, alice, make_campaign, active_pm, celery_worker_process, artifacts_dir
):
    campaign = make_campaign(
        name="Best of four", instructions="Ask anything.", best_of_n=4, selection_rule="top_k"
    )
    with chromium_page(viewport={"width": 1100, "height": 900}) as page:
        sign_in(page, live_server.url, "alice", "pw-alice")
        page.wait_for_url(live_server.url + "/collect/")
        page.locator(f"#campaign-{campaign.pk} button").click()
        page.wait_for_url("**/collect/conversations/*/")
        say(page, "Hello! What is a good first book to read?")
        turn = Turn.objects.get(conversation__campaign=campaign)
        shown = list(Response.objects.filter(turn=turn).order_by("index"))
        kept = list(Candidate.objects.filter(turn=turn))
        assert len(shown) == 2 and len(kept) == 2
        assert all(r.pm_score is not None for r in shown)

        html = page.content()
        scripts = " ".join(page.locator("script").evaluate_all("s => s.map(x => x.src + x.text)"))
        for row in shown + kept:
            for text in (repr(row.pm_score), f"{row.pm_score:.4f}", f"{row.pm_score:.3f}"):
                assert text not in html and text not in scripts
        for word in (
            "pm_score",
            "pm_rank",
            "pm-score",
            "pm-rank",
            "best_of_n",
            "best-of",
            "rank 1",
        ):
            assert word not in html.lower(), word
        main_text = page.locator("main").inner_text()
        for candidate in kept:  # the unshown candidates are not on the page either
            # (a tiny random LM's text can be a few characters that occur anywhere: only
            # candidates long enough to be told apart, and not inside a shown response)
            text = candidate.text.strip()
            if len(text) >= 8 and not any(text in r.text for r in shown):
                assert text not in main_text, text
        # The same judging controls as any pairwise turn: the 1–8 scale, by keyboard.
        assert "1–8" in page.locator("form[data-judge] .hint").inner_text()
        press_then_enter(page, ["2"], artifacts_dir / "collection-best-of-n.png")
        page.locator("textarea[name=text]").wait_for()
    turn.refresh_from_db()
    assert turn.status == Turn.Status.JUDGED and turn.chosen_response_id == shown[0].pk
    agreement = PMAgreement.objects.get(judgement__turn=turn)
    assert agreement.agrees is (shown[0].pm_rank == 1)
