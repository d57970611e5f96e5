"""The REST API: who may read and write, token auth, strict filters, the schema and docs."""

import pytest
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from assistant.services import model_version_register
from collection.models import Campaign

pytestmark = pytest.mark.django_db

LIST_ENDPOINTS = [
    "/api/model-versions/",
    "/api/prompts/",
    "/api/campaigns/",
    "/api/conversations/",
    "/api/judgements/",
    "/api/schema/",
    "/api/docs/",
]


@pytest.fixture
def api():
    return APIClient()


@pytest.fixture
def lm(tmp_path):
    return model_version_register(kind="lm", name="tiny", path=str(tmp_path))


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
def test_contractors_and_strangers_get_nothing(api, alice, url):
    assert api.get(url).status_code in (401, 403)
    api.force_authenticate(alice)
    assert api.get(url).status_code == 403


@pytest.mark.parametrize("url", LIST_ENDPOINTS)
@pytest.mark.parametrize("who", ["rita", "adam"])
def test_researchers_and_admins_read(api, request, who, url):
    api.force_authenticate(request.getfixturevalue(who))
    assert api.get(url).status_code == 200


def test_only_admins_write(api, rita, adam, lm):
    campaign = {"name": "helpful v1", "mode": "helpful", "lm_version": lm.pk, "k": 2}
    api.force_authenticate(rita)
    assert api.post("/api/campaigns/", campaign, format="json").status_code == 403
    assert api.post(f"/api/model-versions/{lm.pk}/activate/").status_code == 403
    api.force_authenticate(adam)
    assert api.post("/api/campaigns/", campaign, format="json").status_code == 201
    assert api.post(f"/api/model-versions/{lm.pk}/activate/").json()["is_active"] is True
    assert Campaign.objects.get().name == "helpful v1"


def test_admins_register_models_through_the_service(api, adam, tmp_path):
    api.force_authenticate(adam)
    missing = api.post(
        "/api/model-versions/", {"kind": "lm", "name": "x", "path": "/nope"}, format="json"
    )
    assert missing.status_code == 400 and "no model folder" in str(missing.json())
    made = api.post(
        "/api/model-versions/", {"kind": "pm", "name": "pm", "path": str(tmp_path)}, format="json"
    )
    assert made.status_code == 201 and made.json()["origin"] == "imported"


def test_a_token_signs_a_researcher_in(api, rita):
    token = Token.objects.create(user=rita)
    api.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert api.get("/api/judgements/").status_code == 200
    api.credentials(HTTP_AUTHORIZATION="Token not-a-token")
    assert api.get("/api/judgements/").status_code == 401


def test_unknown_or_bad_filters_are_a_400_with_a_message(api, rita):
    api.force_authenticate(rita)
    unknown = api.get("/api/judgements/?campain=1")
    assert unknown.status_code == 400 and "unknown filter(s): campain" in str(unknown.json())
    bad = api.get("/api/judgements/?mode=evil")
    assert bad.status_code == 400 and "mode" in bad.json()
    assert api.get("/api/judgements/?mode=red_team&date_from=2026-01-01").status_code == 200
    assert api.get("/api/model-versions/?kind=xx").status_code == 400


def test_the_docs_load_their_assets_from_our_own_server(client, rita):
    client.force_login(rita)
    page = client.get("/api/docs/").content.decode()
    assert "swagger-ui" in page and "cdn.jsdelivr" not in page and "/static/" in page
    schema = client.get("/api/schema/")
    assert schema.status_code == 200 and b"/api/judgements/" in schema.content
