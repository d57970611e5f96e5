"""The REST API: who may read and write, token auth, strict filters, the schema and docs."""

import pytest
from rest_framework.authtoken.models import Token

from collection.models import Campaign

pytestmark = pytest.mark.django_db

LIST_ENDPOINTS = [
    "/api/model-versions/",
    "/api/prompts/",
    "/api/campaigns/",
    "/api/conversations/",
    "/api/judgements/",
    "/api/snapshots/",
    "/api/training-runs/",
    "/api/eval-runs/",
    "/api/schema/",
    "/api/docs/",
]


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_contractors_and_strangers_get_nothing(anon_api, alice, url):
    assert anon_api.get(url).status_code in (401, 403)
    anon_api.force_authenticate(alice)
    assert anon_api.get(url).status_code == 403


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
@pytest.mark.parametrize("who", ["rita", "adam"])
def test_researchers_and_admins_read(anon_api, request, who, url):
    anon_api.force_authenticate(request.getfixturevalue(who))
    assert anon_api.get(url).status_code == 200


def test_only_admins_write(anon_api, rita, adam, registered_lm):
    campaign = {"name": "helpful v1", "mode": "helpful", "lm_version": registered_lm.pk, "k": 2}
    anon_api.force_authenticate(rita)
    assert anon_api.post("/api/campaigns/", campaign, format="json").status_code == 403
    assert anon_api.post(f"/api/model-versions/{registered_lm.pk}/activate/").status_code == 403
    anon_api.force_authenticate(adam)
    assert anon_api.post("/api/campaigns/", campaign, format="json").status_code == 201
    assert (
        anon_api.post(f"/api/model-versions/{registered_lm.pk}/activate/").json()["is_active"]
        is True
    )
    assert Campaign.objects.get().name == "helpful v1"


def test_admins_register_models_through_the_service(anon_api, adam, tmp_path, settings):
    settings.ALIGNLAB_MODEL_ROOTS = [tmp_path]  # the API registers folders inside the roots only
    anon_api.force_authenticate(adam)
    missing = anon_api.post(
        "/api/model-versions/", {"kind": "lm", "name": "x", "path": "/nope"}, format="json"
    )
    assert missing.status_code == 400 and "no model folder" in str(missing.json())
    made = anon_api.post(
        "/api/model-versions/", {"kind": "pm", "name": "pm", "path": str(tmp_path)}, format="json"
    )
    assert made.status_code == 201 and made.json()["origin"] == "imported"


def test_a_token_signs_a_researcher_in(anon_api, rita):
    token = Token.objects.create(user=rita)
    anon_api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert anon_api.get("/api/judgements/").status_code == 200
    anon_api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert anon_api.get("/api/judgements/").status_code == 401


def test_unknown_or_bad_filters_are_a_400_with_a_message(anon_api, rita):
    anon_api.force_authenticate(rita)
    unknown = anon_api.get("/api/judgements/?campain=1")
    assert unknown.status_code == 400 and "unknown filter(s): campain" in str(unknown.json())
    bad = anon_api.get("/api/judgements/?mode=evil")
    assert bad.status_code == 400 and "mode" in bad.json()
    assert anon_api.get("/api/judgements/?mode=red_team&date_from=2026-01-01").status_code == 200
    assert anon_api.get("/api/model-versions/?kind=xx").status_code == 400


def test_the_docs_load_their_assets_from_our_own_server(client, rita):
    client.force_login(rita)
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "cdn.jsdelivr" not in page and "/static/" in page
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/judgements/" in schema.content


def test_researchers_snapshot_and_download_with_clear_errors(anon_api, rita, alice, tmp_path):
    from collection.imports import dataset_import_create
    from tests.training.test_runs import toy_trl_file

    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl", n=10), format="trl")
    anon_api.force_authenticate(rita)
    bad = anon_api.post("/api/snapshots/", {"filter": {"campains": [1]}}, format="json")
    assert bad.status_code == 400 and "campains" in str(bad.json())
    made = anon_api.post(
        "/api/snapshots/", {"filter": {"imports": [imported.pk]}, "name": "toy"}, format="json"
    )
    assert made.status_code == 201, made.json()
    snapshot = made.json()
    assert snapshot["counts"]["judgements"] == 10 and len(snapshot["content_hash"]) == 64
    url = f"/api/snapshots/{snapshot['id']}/download/"
    download = anon_api.get(url + "?export=hh-rlhf&file_format=jsonl")
    lines = b"".join(download.streaming_content).decode().splitlines()
    assert download.status_code == 200 and len(lines) == 10
    assert '"chosen": "\\n\\nHuman: Tell me about' in lines[0]
    assert download["X-Content-Hash"] == snapshot["content_hash"]
    assert anon_api.get(url + "?export=csv").status_code == 400
    assert "not a valid choice" in str(anon_api.get(url + "?export=csv").json()["export"])
    assert "file_format" in anon_api.get(url + "?file_format=xlsx").json()
    assert anon_api.get(url + "?colour=red").status_code == 400
    anon_api.force_authenticate(alice)
    assert anon_api.get(url).status_code == 403


def test_admins_launch_training_runs_researchers_watch(
    anon_api, rita, adam, tmp_path, django_capture_on_commit_callbacks
):
    from collection.imports import dataset_import_create
    from collection.snapshots import snapshot_create
    from tests.training.test_runs import toy_trl_file

    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl", n=10), format="trl")
    snapshot = snapshot_create(filter={"imports": [imported.pk]})
    body = {"kind": "pm", "snapshot": snapshot.pk, "config": {"max_steps": 2}}
    anon_api.force_authenticate(rita)
    assert anon_api.post("/api/training-runs/", body, format="json").status_code == 403
    anon_api.force_authenticate(adam)
    bad = anon_api.post("/api/training-runs/", {**body, "config": {"steps": 2}}, format="json")
    assert bad.status_code == 400 and "steps" in str(bad.json())
    from assistant.models import PromptTemplate

    prompt = PromptTemplate.objects.create(name="hhh-api", version=1, text="Be helpful.")
    bad = anon_api.post("/api/training-runs/", {**body, "prompt": prompt.pk}, format="json")
    assert bad.status_code == 400 and "only context distillation" in str(bad.json())
    with django_capture_on_commit_callbacks(execute=False):
        made = anon_api.post("/api/training-runs/", body, format="json")
    assert made.status_code == 201 and made.json()["status"] == "queued"
    cancelled = anon_api.post(f"/api/training-runs/{made.json()['id']}/cancel/")
    assert cancelled.json()["status"] == "cancelled"
    anon_api.force_authenticate(rita)
    assert anon_api.get("/api/training-runs/").json()["count"] == 1


def test_the_big_lists_page_by_cursor_newest_first_without_a_count(
    anon_api, rita, alice, registered_lm, monkeypatch
):
    from collection.api import NewestFirstCursor
    from collection.models import Conversation

    monkeypatch.setattr(NewestFirstCursor, "page_size", 2)
    campaign = Campaign.objects.create(name="c", mode="helpful", lm_version=registered_lm, k=2)
    made = [Conversation.objects.create(campaign=campaign, contractor=alice).pk for _ in range(3)]
    anon_api.force_authenticate(rita)
    first = anon_api.get("/api/conversations/", {"campaign": campaign.pk}).json()
    assert "count" not in first and first["previous"] is None
    assert [c["id"] for c in first["results"]] == made[:0:-1]  # the newest two
    second = anon_api.get(first["next"]).json()  # the cursor keeps the filter
    assert [c["id"] for c in second["results"]] == made[:1] and second["next"] is None
    assert anon_api.get(second["previous"]).json()["results"] == first["results"]
    assert anon_api.get("/api/conversations/?cursor=nonsense").status_code == 404
    assert anon_api.get("/api/judgements/").json() == {
        "next": None,
        "previous": None,
        "results": [],
    }
