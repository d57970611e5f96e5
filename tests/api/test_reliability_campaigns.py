"""Campaigns written through the API are validated as in the admin (issue 12): one service,
`full_clean()`, and the review queue refreshed when the overlap target changes."""

import pytest

from collection.models import Campaign, Conversation, Turn

pytestmark = pytest.mark.django_db


def test_it_refuses_sampling_settings_that_would_break_generation(api, lm):
    body = {"name": "c", "lm_version": lm.pk, "k": 2, "sampling": {"temprature": 0.7}}
    response = api.post("/api/campaigns/", body, format="json")
    assert response.status_code == 400
    assert "temprature" in " ".join(response.json()["sampling"])
    assert not Campaign.objects.exists()
    mixed = {"name": "m", "lm_version": lm.pk, "k": 2, "judgement_type": "mixed"}
    response = api.post("/api/campaigns/", mixed, format="json")
    assert response.status_code == 400 and "k" in response.json()

    created = api.post("/api/campaigns/", {**body, "sampling": {"temperature": 0.7}}, format="json")
    assert created.status_code == 201, created.json()
    url = f"/api/campaigns/{created.json()['id']}/"
    response = api.patch(url, {"sampling": {"top_k": 3}}, format="json")
    assert response.status_code == 400 and "top_k" in " ".join(response.json()["sampling"])
    assert Campaign.objects.get().sampling == {"temperature": 0.7}


def test_raising_the_overlap_target_opens_judged_turns_for_review(api, lm, alice):
    campaign = Campaign.objects.create(name="c", lm_version=lm, k=2)
    conversation = Conversation.objects.create(campaign=campaign, contractor=alice)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="hi", status="judged", judgement_count=1
    )
    response = api.patch(f"/api/campaigns/{campaign.pk}/", {"overlap_target": 2}, format="json")
    assert response.status_code == 200, response.json()
    turn.refresh_from_db()
    assert turn.needs_review
