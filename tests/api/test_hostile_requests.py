"""Single requests that were server errors (issue 18), written as the attack: each is now a 4xx
that names the field it is about, and changes nothing."""

import pytest
from django.test import Client

from assistant.models import ModelVersion
from collection.models import Campaign, Conversation, DatasetSnapshot, Response, Turn
from evals.models import EvalRun
from tests.api.refusals import refused
from training.models import TrainingRun

pytestmark = pytest.mark.django_db


@pytest.mark.parametrize(
    "body, field",
    [
        ({"k": 0}, "k"),
        ({"k": 9}, "k"),
        ({"k": 3}, "k"),  # a pairwise campaign offers 2
        ({"k": 2, "judgement_type": "mixed"}, "k"),
        ({"max_turns": 0}, "max_turns"),
        ({"overlap_target": 0}, "overlap_target"),
        ({"sampling": "x"}, "sampling"),
    ],
)
def test_a_campaign_breaking_a_constraint_is_refused_naming_the_field(api, lm, body, field):
    response = api.post(
        "/api/campaigns/", {"name": "c", "lm_version": lm.pk, **body}, format="json"
    )
    refused(response, field)
    assert not Campaign.objects.exists()


def test_a_patch_breaking_a_constraint_leaves_the_campaign_as_it_was(api, lm):
    campaign = Campaign.objects.create(name="c", lm_version=lm, k=2)
    url = f"/api/campaigns/{campaign.pk}/"
    assert "pairwise" in refused(api.patch(url, {"mode": "red_team", "k": 3}, format="json"), "k")
    refused(api.patch(url, {"judgement_type": "mixed"}, format="json"), "k")  # mixed wants k >= 3
    refused(api.patch(url, {"overlap_target": 0}, format="json"), "overlap_target")
    campaign.refresh_from_db()
    assert (campaign.mode, campaign.k, campaign.judgement_type) == ("helpful", 2, "pairwise")
    # What the constraints allow still goes through.
    changed = api.patch(url, {"judgement_type": "ranking", "k": 3}, format="json")
    assert changed.status_code == 200, changed.json()


@pytest.mark.parametrize("defaults", ["x", ["temperature"], 5])
def test_generation_defaults_that_are_not_an_object_are_refused(api, defaults, tmp_path, settings):
    settings.ALIGNLAB_MODEL_ROOTS = [tmp_path.resolve()]  # the path is fine: only the defaults fail
    body = {"kind": "lm", "name": "m", "path": str(tmp_path), "generation_defaults": defaults}
    refused(api.post("/api/model-versions/", body, format="json"), "generation_defaults")
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize("config", ["x", ["max_steps"], 5, {"lr": 1e308}, {"batch_size": 2.5}])
def test_a_training_config_of_the_wrong_shape_or_range_is_refused(api, config):
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    body = {"kind": "pm", "snapshot": snapshot.pk, "config": config}
    refused(api.post("/api/training-runs/", body, format="json"), "config")
    assert not TrainingRun.objects.exists()


@pytest.mark.parametrize(
    "options, words",
    [
        ({"samples": 10**9}, "samples must be a whole number from 1 to 16"),
        ({"max_new_tokens": 10**9}, "max_new_tokens"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"limit": 2.5}, "limit"),
        ({"per_category": True}, "per_category"),
        ({"seed": 2**70}, "seed"),
        ({"temperature": 2}, "unknown options: temperature"),
        ("x", "object"),
    ],
)
def test_eval_options_out_of_range_or_unknown_are_refused(api, lm, options, words):
    body = {"suite": "toxicity", "model_version": lm.pk, "options": options}
    assert words in refused(api.post("/api/eval-runs/", body, format="json"), "options")
    assert not EvalRun.objects.exists()


def test_eval_options_within_range_are_kept(api, lm, django_capture_on_commit_callbacks):
    options = {"limit": 3, "samples": 2, "max_new_tokens": 8, "seed": 7}
    with django_capture_on_commit_callbacks(execute=False):
        made = api.post(
            "/api/eval-runs/",
            {"suite": "toxicity", "model_version": lm.pk, "options": options},
            format="json",
        )
    assert made.status_code == 201, made.json()
    assert EvalRun.objects.get().options == options


@pytest.mark.parametrize(
    "url", ["/collect/quality/?campaign=abc", "/collect/quality/?campaign=99999999999999999999"]
)
def test_the_quality_page_says_a_campaign_id_is_not_one(client, rita, url):
    client.force_login(rita)
    response = client.get(url)
    assert response.status_code == 400
    assert "Campaign: Select a valid choice" in response.content.decode()


@pytest.mark.parametrize("query", ["a=abc&b=1", "a=1&b=-1", "a=99999999999999999999"])
def test_the_compare_page_says_a_version_id_is_not_one(client, rita, lm, query):
    client.force_login(rita)
    response = client.get(f"/evals/compare/?{query}")
    assert response.status_code == 400
    assert "Select a valid choice" in response.content.decode()
    assert client.get(f"/evals/compare/?a={lm.pk}&b={lm.pk}").status_code == 200


def test_the_admin_shows_every_conversation_with_its_turns(adam, alice, lm):
    campaign = Campaign.objects.create(name="c", lm_version=lm)
    conversation = Conversation.objects.create(campaign=campaign, contractor=alice)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hello admin", status="ready"
    )
    Response.objects.create(turn=turn, index=0, text="Hi", model_version=lm)
    client = Client(raise_request_exception=False)
    client.force_login(adam)
    for url in (
        f"/admin/collection/conversation/{conversation.pk}/change/",
        f"/admin/collection/turn/{turn.pk}/change/",
    ):
        response = client.get(url)
        assert response.status_code == 200, url
        assert "Hello admin" in response.content.decode()


def ready_turn(campaign, author) -> Turn:
    conversation = Conversation.objects.create(campaign=campaign, contractor=author)
    turn = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hi", status=Turn.Status.READY
    )
    Response.objects.bulk_create(
        Response(turn=turn, index=i, text=f"answer {i}", model_version=campaign.lm_version)
        for i in range(2)
    )
    return turn


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("flags", "rude", "rude is not a flag; the flags are harmful, untruthful"),
        ("note", "x" * 501, "Notes are limited to 500 characters (this one has 501)."),
        ("time_spent_ms", "-5", "cannot be negative (the page sent -5 ms)"),
        ("time_spent_ms", "abc", "must be a whole number of milliseconds"),
    ],
)
def test_the_judge_form_says_why_it_refuses_a_field(client, alice, lm, field, value, words):
    turn = ready_turn(Campaign.objects.create(name="c", lm_version=lm), alice)
    client.force_login(alice)
    response = client.post(f"/collect/turns/{turn.pk}/judge/", {"scale": "2", field: value})
    page = response.content.decode()
    assert response.status_code == 200 and words in page.replace("&#x27;", "'")
    assert not turn.judgements.exists()


@pytest.mark.parametrize(
    "extras, field",
    [
        ({"flags": ["rude"]}, "flags"),
        ({"note": "x" * 501}, "note"),
        ({"time_spent_ms": -1}, "time_spent_ms"),
    ],
)
def test_the_judgement_service_refuses_them_too_naming_the_field(alice, lm, extras, field):
    from collection.errors import CollectionError
    from collection.judgements import judgement_submit

    turn = ready_turn(Campaign.objects.create(name="c", lm_version=lm), alice)
    with pytest.raises(CollectionError) as refused:
        judgement_submit(turn=turn, contractor=alice, scale=2, **extras)
    assert refused.value.field == field
    assert not turn.judgements.exists()


def test_a_reviewer_is_refused_once_the_overlap_target_is_met_but_gold_stays_open(
    alice, bob, adam, lm
):
    from collection.errors import CollectionError
    from collection.gold import gold_item_create
    from collection.judgements import judgement_submit

    campaign = Campaign.objects.create(name="c", lm_version=lm, overlap_target=1)
    turn = ready_turn(campaign, alice)
    judgement_submit(turn=turn, contractor=alice, scale=2)
    with pytest.raises(CollectionError, match="all the judgements it needs"):
        judgement_submit(turn=turn, contractor=bob, scale=7)
    gold = gold_item_create(
        campaign=campaign, admin=adam, human_text="2+2?", responses=["4", "5"], best_index=0
    )
    judgement_submit(turn=gold, contractor=alice, scale=1)
    assert judgement_submit(turn=gold, contractor=bob, scale=1).origin == "review"


@pytest.mark.parametrize("page", ["", " "])
def test_an_empty_page_number_is_refused_not_taken_for_the_first_page(api, page):
    """The schema says `page` is an integer; DRF read `?page=` as page 1 (schemathesis, round 7)."""
    response = api.get("/api/experiments/", {"page": page})
    assert response.status_code == 404, response.content
    assert "Invalid page" in response.json()["detail"]
    assert api.get("/api/experiments/", {"page": 1}).status_code == 200
    assert api.get("/api/experiments/").status_code == 200
