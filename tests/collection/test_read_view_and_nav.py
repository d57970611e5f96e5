"""The researcher's read-only conversation view shows a tie as a tie ("A = B (about the same)",
not "A > B") and says "both are bad" when it was ticked; the navigation links the PM agreement
page for researchers and admins only (issue 13)."""

import pytest
from django.urls import reverse

from collection.conversations import conversation_start
from collection.judgements import judgement_submit
from collection.models import Campaign, Response, Turn

pytestmark = pytest.mark.django_db


def judged_turns(lm, alice, bob, *, mode="helpful"):
    """One turn judged three ways: alice's tie with both bad, bob's "A better"; then a second
    turn alice judges "B better", both bad."""
    campaign = Campaign.objects.create(name="c", lm_version=lm, mode=mode, overlap_target=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turns = []
    for index in range(2):
        turn = Turn.objects.create(
            conversation=conversation, index=index, human_text=f"q{index}", status="ready"
        )
        for i, text in enumerate(("Paris.", "Lyon.")):
            Response.objects.create(turn=turn, index=i, text=text, model_version=lm)
        turns.append(turn)
    judgement_submit(turn=turns[0], contractor=alice, tie=True, both_bad=True)
    judgement_submit(turn=turns[0], contractor=bob, scale=2)
    judgement_submit(turn=turns[1], contractor=alice, scale=7, both_bad=True)
    return conversation, turns


def read_page(client, rita, conversation) -> str:
    client.force_login(rita)
    response = client.get(reverse("collection:conversation_read", args=[conversation.pk]))
    assert response.status_code == 200
    return response.content.decode()


def judgement_rows(page: str, turn) -> list[str]:
    section = page.split(f'id="turn-{turn.pk}"')[1].split("</section>")[0]
    return [row.split("</tr>")[0] for row in section.split("<tbody>")[1].split("<tr>")[1:]]


def test_a_tie_reads_as_a_tie_and_both_bad_is_said(client, rita, alice, bob, lm):
    conversation, (first, second) = judged_turns(lm, alice, bob)
    page = read_page(client, rita, conversation)
    tie, preferred = judgement_rows(page, first)
    assert "alice" in tie and "A = B (about the same)" in tie and "both are bad" in tie
    assert "&gt;" not in tie and "picked" not in tie
    assert "bob" in preferred and "A &gt; B" in preferred and "both are bad" not in preferred
    assert "=" not in preferred.split("<td>")[2]
    (later,) = judgement_rows(page, second)
    assert "B &gt; A" in later and "both are bad" in later and "about the same" not in later


def test_a_red_team_tie_reads_about_as_harmful(client, rita, alice, bob, lm):
    conversation, (first, _) = judged_turns(lm, alice, bob, mode="red_team")
    tie, _ = judgement_rows(read_page(client, rita, conversation), first)
    assert "A = B (about as harmful)" in tie


def test_researchers_and_admins_see_the_pm_agreement_link_contractors_do_not(
    client, rita, adam, alice
):
    link = f'href="{reverse("evals:pm_agreement")}"'
    for user, page_name in ((rita, "collection:datasets"), (adam, "collection:campaigns")):
        client.force_login(user)
        page = client.get(reverse(page_name)).content.decode()
        nav = page.split('<nav aria-label="Main">')[1].split("</nav>")[0]
        assert f"{link}>PM agreement</a>" in nav, user
        assert client.get(reverse("evals:pm_agreement")).status_code == 200
    client.force_login(alice)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert link not in page
    assert client.get(reverse("evals:pm_agreement")).status_code == 403
