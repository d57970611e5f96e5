"""Admins create, edit, pause, resume and close campaigns in AlignLab's own pages, and see
their progress; nobody else reaches these pages."""

from datetime import timedelta

import pytest
from django.core.exceptions import ValidationError
from django.urls import reverse
from django.utils import timezone

from assistant.services import model_version_register, prompt_template_create
from collection import campaigns
from collection.campaigns import campaign_create, campaign_update
from collection.conversations import conversation_start
from collection.errors import CollectionError
from collection.judgements import judgement_submit
from collection.models import Campaign, Conversation, Judgement, Response, Turn

pytestmark = pytest.mark.django_db


@pytest.fixture
def hhh2(adam):
    prompt_template_create(name="hhh", text="An older HHH prompt.", created_by=adam)
    return prompt_template_create(name="hhh", text="A newer HHH prompt.", created_by=adam)


def _form(active_lm, **changes):
    data = {
        "name": "Helpful chat",
        "instructions": "Be **kind**.",
        "mode": "helpful",
        "lm_version": active_lm.pk,
        "prompt": "",
        "k": 2,
        "judgement_type": "pairwise",
        "max_turns": 3,
        "quota_per_contractor": 5,
        "overlap_target": 1,
        "sampling": "",
        "sampling_variants": "",
    }
    data.update(changes)
    return {key: value for key, value in data.items() if value is not None}


def test_the_new_campaign_form_starts_on_the_active_lm_and_the_latest_hhh_prompt(
    client, adam, tmp_path, hhh2
):
    model_version_register(kind="lm", name="older-lm", path=str(tmp_path))
    active = model_version_register(kind="lm", name="active-lm", path=str(tmp_path), activate=True)
    model_version_register(kind="lm", name="newest-lm", path=str(tmp_path))
    client.force_login(adam)
    form = client.get(reverse("collection:campaign_new")).context["form"]
    assert form["lm_version"].value() == active.pk
    assert form["prompt"].value() == hhh2.pk and hhh2.version >= 2  # the latest version
    assert form["k"].value() == 2 and form["judgement_type"].value() == "pairwise"
    assert not form["no_prompt"].value()
    page = client.get(reverse("collection:campaign_new")).content.decode()
    assert '<details id="advanced">' in page  # sampling etc. folded away, empty
    assert 'id="id_sampling">\n</textarea>' in page
    assert f'<option value="{active.pk}" selected>' in page


def test_an_admin_creates_a_campaign_and_lands_on_its_page(client, adam, active_lm, hhh2):
    client.force_login(adam)
    response = client.post(reverse("collection:campaign_new"), _form(active_lm, prompt=hhh2.pk))
    campaign = Campaign.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("collection:campaign", args=[campaign.pk])
    assert (campaign.name, campaign.prompt, campaign.lm_version, campaign.created_by) == (
        "Helpful chat",
        hhh2,
        active_lm,
        adam,
    )
    assert campaign.is_active and campaign.closed_at is None and campaign.quota_per_contractor == 5
    page = client.get(response["Location"]).content.decode()
    assert hhh2.key in page and '<span class="status status-active"' in page
    assert "<p>Be <strong>kind</strong>.</p>" in page  # the instructions as contractors see them
    listing = client.get(reverse("collection:campaigns")).content.decode()
    assert "Helpful chat" in listing and "active" in listing


def test_no_prompt_must_be_chosen_explicitly(client, adam, active_lm, hhh2):
    client.force_login(adam)
    refused = client.post(reverse("collection:campaign_new"), _form(active_lm))
    assert refused.status_code == 400 and not Campaign.objects.exists()
    assert "Run without a prompt (ablation)" in refused.context["form"].errors["prompt"][0]
    both = client.post(
        reverse("collection:campaign_new"), _form(active_lm, prompt=hhh2.pk, no_prompt="on")
    )
    assert both.status_code == 400 and "not both" in both.context["form"].errors["no_prompt"][0]
    made = client.post(reverse("collection:campaign_new"), _form(active_lm, no_prompt="on"))
    assert made.status_code == 302 and Campaign.objects.get().prompt is None


def test_refusals_of_the_form_and_of_the_service_show_beside_their_fields(client, adam, active_lm):
    client.force_login(adam)
    url = reverse("collection:campaign_new")
    pairwise_k3 = client.post(url, _form(active_lm, no_prompt="on", k=3))
    assert "pairwise campaign offers k = 2" in pairwise_k3.context["form"].errors["k"][0]
    # Mixed with k = 2 and an unknown sampling key: refused by the model's clean(), via the
    # service the API uses too, and shown beside the field it names.
    mixed = client.post(url, _form(active_lm, no_prompt="on", judgement_type="mixed", k=2))
    assert mixed.status_code == 400
    assert "k >= 3" in mixed.context["form"].errors["k"][0]
    sampling = client.post(url, _form(active_lm, no_prompt="on", sampling='{"temprature": 0.3}'))
    errors = sampling.context["form"].errors["sampling"]
    assert "Unknown sampling settings: temprature" in errors[0]
    page = sampling.content.decode()
    assert '<details id="advanced" open>' in page and 'id="id_sampling_error"' in page
    assert client.post(url, _form(active_lm, no_prompt="on", name="  ")).status_code == 400
    assert not Campaign.objects.exists()


def test_editing_goes_through_the_service_and_refreshes_the_review_queue(
    client, adam, active_lm, hhh2
):
    campaign = campaign_create(name="c", lm_version=active_lm, prompt=hhh2, overlap_target=1)
    client.force_login(adam)
    url = reverse("collection:campaign_edit", args=[campaign.pk])
    form = client.get(url).context["form"]
    assert form["name"].value() == "c" and form["prompt"].value() == hhh2.pk
    other = model_version_register(kind="lm", name="other", path=str(active_lm.path))
    saved = client.post(
        url,
        _form(
            active_lm,
            name="renamed",
            prompt=hhh2.pk,
            overlap_target=2,
            compare_versions=[other.pk],
            sampling='{"temperature": 0.7}',
            sampling_variants='[{"name": "hot", "temperature": 1.2}]',
        ),
    )
    assert saved.status_code == 302
    campaign.refresh_from_db()
    assert campaign.name == "renamed" and campaign.overlap_target == 2
    assert list(campaign.compare_versions.all()) == [other]
    assert campaign.sampling == {"temperature": 0.7}
    assert campaign.sampling_variants == [{"name": "hot", "temperature": 1.2}]
    refused = client.post(url, _form(active_lm, name="renamed again", no_prompt="on", max_turns=0))
    assert refused.status_code == 400 and "max_turns" in refused.context["form"].errors
    campaign.refresh_from_db()
    assert campaign.name == "renamed" and campaign.prompt == hhh2


def _campaign(active_lm, **fields):
    return campaign_create(name=fields.pop("name", "c"), lm_version=active_lm, **fields)


def test_pause_resume_and_close_with_a_confirmation(client, adam, alice, active_lm):
    campaign = _campaign(active_lm)
    client.force_login(adam)
    pause = reverse("collection:campaign_pause", args=[campaign.pk])
    resume = reverse("collection:campaign_resume", args=[campaign.pk])
    close = reverse("collection:campaign_close", args=[campaign.pk])
    assert client.get(pause).status_code == 405  # a state change is a POST
    assert client.post(pause).status_code == 302
    campaign.refresh_from_db()
    assert campaign_status(campaign) == "paused"
    assert client.post(pause).status_code == 302  # twice: harmless
    client.post(resume)
    campaign.refresh_from_db()
    assert campaign_status(campaign) == "active"
    ask = client.get(close)
    assert ask.status_code == 200 and "Closing is for good" in ask.content.decode()
    campaign.refresh_from_db()
    assert campaign.closed_at is None  # asking changes nothing
    assert client.post(close).status_code == 400  # no confirmation: asked again
    campaign.refresh_from_db()
    assert campaign.closed_at is None
    assert client.post(close, {"confirm": "yes"}).status_code == 302
    campaign.refresh_from_db()
    closed_at = campaign.closed_at
    assert campaign_status(campaign) == "closed" and not campaign.is_active
    client.post(close, {"confirm": "yes"})
    campaign.refresh_from_db()
    assert campaign.closed_at == closed_at  # closing twice keeps the first time
    page = client.post(resume, follow=True).content.decode()
    assert "closed for good" in page
    campaign.refresh_from_db()
    assert campaign_status(campaign) == "closed"
    # The contractor can no longer start a conversation in it.
    client.force_login(alice)
    assert client.post(reverse("collection:start", args=[campaign.pk])).status_code == 404
    assert not Conversation.objects.exists()
    assert (
        f"campaign-{campaign.pk}"
        not in client.get(reverse("collection:dashboard")).content.decode()
    )


def campaign_status(campaign):
    return campaigns.campaign_status(campaign)


def test_the_services_refuse_closed_and_paused_campaigns_whatever_the_caller(alice, active_lm):
    campaign = _campaign(active_lm)
    campaigns.campaign_close(campaign=campaign)
    with pytest.raises(CollectionError, match="closed"):
        conversation_start(campaign=campaign, contractor=alice)
    # A row made active again behind the services' back still refuses new conversations…
    Campaign.objects.filter(pk=campaign.pk).update(is_active=True)
    with pytest.raises(CollectionError, match="closed"):
        conversation_start(campaign=campaign, contractor=alice)
    # …and the API's path (campaign_update) cannot reopen a closed campaign.
    campaign.refresh_from_db()
    with pytest.raises(ValidationError, match="closed"):
        campaign_update(campaign=campaign, is_active=True)
    paused = campaigns.campaign_pause(campaign=_campaign(active_lm, name="p"))
    with pytest.raises(CollectionError, match="paused"):
        conversation_start(campaign=paused, contractor=alice)
    with pytest.raises(CollectionError, match="closed"):
        campaigns.campaign_pause(campaign=campaign)


def _judged_turn(campaign, contractor, *, index=0, conversation=None, days_ago=0, scale=2):
    conversation = conversation or Conversation.objects.create(
        campaign=campaign, contractor=contractor
    )
    turn = Turn.objects.create(
        conversation=conversation, index=index, human_text="hi", status=Turn.Status.READY
    )
    Response.objects.bulk_create(
        [
            Response(turn=turn, index=i, text=f"r{i}", model_version=campaign.lm_version)
            for i in (0, 1)
        ]
    )
    judgement = judgement_submit(turn=turn, contractor=contractor, scale=scale)
    Judgement.objects.filter(pk=judgement.pk).update(
        created_at=timezone.now() - timedelta(days=days_ago)
    )
    return conversation


def test_the_progress_page_shows_judgements_per_day_per_contractor_and_quota(
    client, adam, alice, bob, active_lm
):
    campaign = _campaign(active_lm, name="progress", quota_per_contractor=4, max_turns=5)
    first = _judged_turn(campaign, alice, days_ago=3)
    _judged_turn(campaign, alice, index=1, conversation=first, days_ago=3)
    _judged_turn(campaign, alice, days_ago=1)
    _judged_turn(campaign, bob, days_ago=0)
    progress = campaigns.campaign_progress(campaign=campaign)
    assert progress["totals"]["judgements"] == 4 and progress["totals"]["conversations"] == 3
    assert [n for _, n in progress["per_day"]] == [2, 1, 1]
    # One bar per day from the first to the last, the day without judgements included.
    assert [bar.judgements for bar in progress["bars"]] == [2, 0, 1, 1]
    tallest = max(progress["bars"], key=lambda bar: bar.height)
    assert tallest.judgements == 2 and tallest.height == 120 and tallest.y == 0
    rows = {row["username"]: row for row in progress["contractors"]}
    assert (rows["alice"]["conversations"], rows["alice"]["judgements"]) == (2, 3)
    assert rows["alice"]["quota_used"] == 0.5 and rows["bob"]["quota_left"] == 3
    client.force_login(adam)
    page = client.get(reverse("collection:campaign", args=[campaign.pk])).content.decode()
    assert page.count("<rect ") == 4 and "max 2/day" in page
    assert "2 / 4 (50 %)" in page and "1 / 4 (25 %)" in page
    assert '<table class="table" id="per-day-table">' in page


def test_campaign_text_is_escaped(client, adam, active_lm):
    _campaign(
        active_lm, name="<script>alert(1)</script>", instructions="<img src=x onerror=alert(1)>"
    )
    client.force_login(adam)
    campaign = Campaign.objects.get()
    for url in (
        reverse("collection:campaigns"),
        reverse("collection:campaign", args=[campaign.pk]),
        reverse("collection:campaign_edit", args=[campaign.pk]),
    ):
        page = client.get(url).content.decode()
        assert "<script>alert" not in page and "<img src=x" not in page
        assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


@pytest.mark.parametrize("who", ["alice", "rita"])
def test_contractors_and_researchers_get_403_on_every_campaign_page(
    client, request, who, active_lm
):
    campaign = _campaign(active_lm)
    client.force_login(request.getfixturevalue(who))
    for name in ("campaigns", "campaign_new"):
        assert client.get(reverse(f"collection:{name}")).status_code == 403
    assert (
        client.post(
            reverse("collection:campaign_new"), _form(active_lm, no_prompt="on")
        ).status_code
        == 403
    )
    for name in ("campaign", "campaign_edit", "campaign_close"):
        assert client.get(reverse(f"collection:{name}", args=[campaign.pk])).status_code == 403
    for name in ("campaign_pause", "campaign_resume", "campaign_close"):
        url = reverse(f"collection:{name}", args=[campaign.pk])
        assert client.post(url, {"confirm": "yes"}).status_code == 403
    campaign.refresh_from_db()
    assert campaign.is_active and campaign.closed_at is None and Campaign.objects.count() == 1


def test_state_changes_need_the_csrf_token(adam, active_lm):
    from django.test import Client

    campaign = _campaign(active_lm)
    client = Client(enforce_csrf_checks=True)
    client.force_login(adam)
    assert client.post(reverse("collection:campaign_pause", args=[campaign.pk])).status_code == 403
    campaign.refresh_from_db()
    assert campaign.is_active


def test_progress_takes_a_fixed_number_of_queries_whatever_the_volume(
    alice, bob, active_lm, django_assert_num_queries
):
    campaign = _campaign(active_lm, name="volume", max_turns=8)
    for contractor in (alice, bob):
        conversation = _judged_turn(campaign, contractor, days_ago=2)
        for index in range(1, 6):
            _judged_turn(campaign, contractor, index=index, conversation=conversation)
    with django_assert_num_queries(7):
        progress = campaigns.campaign_progress(campaign=campaign)
    assert progress["totals"]["judgements"] == 12
