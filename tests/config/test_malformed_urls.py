"""Every URL pattern of the project, with malformed ids and query parameters, as every role:
no response is a server error (issue 18, must show 3).

Each pattern's parameters are filled with each malformed value its regex accepts (a value it
does not accept only reaches the 404 page, requested once); every URL is asked for with GET and
a malformed query string, and with a POST of malformed form fields.
"""

import pytest
from django.test import Client
from django.urls import Resolver404, URLResolver, get_resolver, resolve
from django.utils.regex_helper import normalize

MALFORMED_IDS = ["abc", "-1", "0", "99999999999999999999", "x" * 10_000]
MALFORMED_QUERY = {
    "campaign": "abc",
    "a": "abc",
    "b": "-1",
    "page": "abc",
    "snapshot": "abc",
    "limit": "99999999999999999999",
    "kind": "-1",
    "mode": "x" * 10_000,
    "contractor": "-1",
    "origin": "\x00",
    "export": "../../etc/passwd",
    "split": "abc",
    "date_from": "abc",
}
MALFORMED_FORM = {
    "campaign": "abc",
    "snapshot": "-1",
    "k": "0",
    "text": "x" * 10_000,
    "scale": "99",
    "flags": "rude",
    "note": "x" * 501,
    "time_spent_ms": "-5",
    "config": "x",
    "filter": "[",
    "options": "1e9",
    "kind": "abc",
    "suite": "abc",
}
# Not walked: the Django admin is Django's own (its change pages are tested in
# tests/api/test_hostile_requests.py); signing out would end the role's session, and sign-in
# attempts count towards the login throttle.
SKIPPED = ("/admin/", "/accounts/logout/")
NOT_POSTED = ("/accounts/login/",)


def url_formats(patterns=None, prefix=""):
    """(format string, parameter names) of every URL pattern: "/collect/turns/%(turn_id)s/"."""
    for entry in get_resolver().url_patterns if patterns is None else patterns:
        regex = prefix + entry.pattern.regex.pattern.removeprefix("^")
        if isinstance(entry, URLResolver):
            yield from url_formats(entry.url_patterns, regex)
        else:
            for text, params in normalize(regex):
                yield "/" + text, params


def resolves(url: str) -> bool:
    try:
        resolve(url)
    except Resolver404:
        return False
    return True


def walked_urls(real_ids=()) -> list[str]:
    """Every URL to ask for: each pattern with each malformed value (and each id of a real
    object, so the views behind them meet the malformed query too)."""
    urls = []
    for text, params in sorted(set((text, tuple(params)) for text, params in url_formats())):
        if text.startswith(SKIPPED):
            continue
        if not params:
            urls.append(text)
            continue
        filled = [
            text % {name: "json" if name == "format" else value for name in params}
            for value in [*MALFORMED_IDS, *map(str, real_ids)]
        ]
        reached = [url for url in filled if resolves(url)]
        urls += reached or filled[:1]  # none reaches a view: the 404 page, once
    return list(dict.fromkeys(urls))


@pytest.fixture
def real_ids(alice, adam) -> set[int]:
    """One object of each kind a URL names, so detail pages are reached too."""
    from assistant.models import ModelVersion, PromptTemplate
    from collection.judgements import judgement_submit
    from collection.models import Campaign, Conversation, Response, Turn
    from collection.snapshots import snapshot_create
    from evals.models import EvalRun
    from training.models import TrainingRun

    lm = ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")
    prompt = PromptTemplate.objects.create(name="p", version=1, text="Be helpful.")
    campaign = Campaign.objects.create(name="c", lm_version=lm, overlap_target=2)
    conversation = Conversation.objects.create(campaign=campaign, contractor=alice)
    judged = Turn.objects.create(
        conversation=conversation, index=0, human_text="Hi", status="ready"
    )
    Response.objects.bulk_create(
        Response(turn=judged, index=i, text=f"answer {i}", model_version=lm) for i in range(2)
    )
    judgement = judgement_submit(turn=judged, contractor=alice, scale=2)
    ready = Turn.objects.create(
        conversation=conversation, index=1, human_text="And?", status="ready"
    )
    Response.objects.bulk_create(
        Response(turn=ready, index=i, text=f"answer {i}", model_version=lm) for i in range(2)
    )
    snapshot = snapshot_create(filter={}, created_by=adam)
    training_run = TrainingRun.objects.create(kind="pm", snapshot=snapshot, config={})
    eval_run = EvalRun.objects.create(suite="hhh", model_version=lm)
    objects = [lm, prompt, campaign, conversation, judged, ready, judgement, snapshot]
    return {o.pk for o in [*objects, training_run, eval_run]}


ROLES = [None, "alice", "bob", "rita", "adam"]


def answered(response) -> int:
    """The status, after reading a streamed body (an error while streaming is a server error)."""
    if response.streaming:
        try:
            b"".join(response.streaming_content)
        except Exception:
            return 500
    return response.status_code


@pytest.mark.django_db
@pytest.mark.parametrize("role", ROLES, ids=lambda role: role or "anonymous")
def test_no_malformed_url_is_a_server_error(request, role, real_ids):
    client = Client(raise_request_exception=False)
    if role:
        client.force_login(request.getfixturevalue(role))
    urls = walked_urls(real_ids)
    assert len(urls) > 100  # the walk found the project's URLs
    errors = []
    for url in urls:
        answers = [("GET", client.get(url, MALFORMED_QUERY))]
        if not url.startswith(NOT_POSTED):
            answers.append(("POST", client.post(f"{url}?campaign=abc&page=-1", MALFORMED_FORM)))
        errors += [
            (method, url[:80], code) for method, r in answers if (code := answered(r)) >= 500
        ]
    assert not errors, "\n".join(map(str, errors))
