"""The refusals of schema-valid requests that bench/schemathesis_hooks.py lets through are the
API's real words (so the list cannot drift from what the services say), and any other refusal
fails the check."""

import json
from types import SimpleNamespace

import pytest

from assistant.models import ModelVersion
from bench import schemathesis_hooks as hooks  # imports schemathesis: a test dependency
from collection.models import Campaign, DatasetSnapshot

pytestmark = pytest.mark.django_db


def check(method: str, path: str, response, positive: bool = True):
    """Run refusals_are_documented on a response as schemathesis would."""
    mode = SimpleNamespace(is_positive=positive)
    case = SimpleNamespace(
        meta=SimpleNamespace(generation=SimpleNamespace(mode=mode)),
        operation=SimpleNamespace(method=method.lower(), path=path),
    )
    fake = SimpleNamespace(status_code=response.status_code, content=response.content)
    return hooks.refusals_are_documented(None, fake, case)


def test_each_kind_of_documented_refusal_is_what_the_api_says(api, settings):
    lm = ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
    snapshot = DatasetSnapshot.objects.create(filter={}, content_hash="0" * 64)
    closed = Campaign.objects.create(name="c", lm_version=lm)
    closed.is_active = False
    closed.closed_at = closed.created_at
    closed.save()
    refusals = [
        ("POST", "/api/eval-runs/", {"suite": "hhh", "model_version": 0}),
        ("POST", "/api/eval-runs/", {"suite": "held_out", "model_version": lm.pk}),
        ("POST", "/api/campaigns/", {"name": "c", "lm_version": 0, "prompt": -338}),
        ("POST", "/api/campaigns/", {"name": "c", "k": 2, "judgement_type": "mixed"}),
        ("PATCH", "/api/campaigns/{id}/", {"is_active": True}),
        ("POST", "/api/snapshots/", {"filter": {}}),
        ("POST", "/api/snapshots/", {"filter": {"imports": [1], "sources": ["collected"]}}),
        ("POST", "/api/snapshots/", {"filter": {"date_to": "0196-02-17T22:30:37-22:47"}}),
        ("POST", "/api/model-versions/", {"kind": "lm", "name": "m", "path": ""}),
        ("POST", "/api/model-versions/", {"kind": "lm", "name": "m", "backend": "openai"}),
        (
            "POST",
            "/api/model-versions/",
            {"kind": "pm", "name": "m", "backend": "openai", "url": "http://169.254.169.254/"},
        ),
        ("POST", "/api/training-runs/", {"kind": "pm"}),
        ("POST", "/api/training-runs/", {"kind": "pmp"}),
        (
            "POST",
            "/api/training-runs/",
            {"kind": "pmp", "pmp_sources": [{"format": "reddit", "path": "/etc/passwd"}]},
        ),
        ("POST", "/api/training-runs/", {"kind": "pm", "snapshot": snapshot.pk, "prompt": 0}),
        (
            "POST",
            "/api/training-runs/",
            {"kind": "pm", "snapshot": snapshot.pk, "config": {"loss": "binary"}},
        ),
        (
            "POST",
            "/api/training-runs/",
            {"kind": "pm", "snapshot": snapshot.pk, "config": {"binary": True}},
        ),
    ]
    for method, path, body in refusals:
        url = path.replace("{id}", str(closed.pk))
        response = getattr(api, method.lower())(url, body, format="json")
        assert response.status_code == 400, (path, body, response.content[:300])
        assert check(method, path, response) is None, (path, body, response.json())
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1000
    big = api.post(
        "/api/snapshots/", {"filter": {"exclude_eval_prompts": ["x" * 2000]}}, format="json"
    )
    assert big.status_code == 413 and check("POST", "/api/snapshots/", big) is None


def test_a_refusal_not_listed_fails_the_check(api):
    lm = ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
    # A rule for another operation's field does not cover this one.
    response = api.post("/api/eval-runs/", {"suite": "hhh", "model_version": 0}, format="json")
    with pytest.raises(AssertionError, match="model_version"):
        check("POST", "/api/campaigns/", response)
    # A listed field with a message its rules do not have.
    fake = SimpleNamespace(
        status_code=400, content=json.dumps({"snapshot": ["anything else"]}).encode()
    )
    with pytest.raises(AssertionError, match="snapshot: anything else"):
        check("POST", "/api/training-runs/", fake)
    # Not JSON.
    html = SimpleNamespace(status_code=400, content=b"<h1>Bad Request (400)</h1>")
    with pytest.raises(AssertionError, match="not JSON"):
        check("POST", "/api/snapshots/", html)
    # Negative data may be refused with any message; a 201 is not a refusal.
    assert check("POST", "/api/campaigns/", response, positive=False) is None
    made = api.post("/api/campaigns/", {"name": "c", "lm_version": lm.pk}, format="json")
    assert made.status_code == 201 and check("POST", "/api/campaigns/", made) is None
