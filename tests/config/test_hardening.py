"""Hostile input at the edges: password guessing is throttled, every page carries a strict
Content-Security-Policy, and DEBUG=0 can be served over plain HTTP only when asked to."""

import os
import re
import subprocess
import sys

import pytest
import yaml
from django.conf import settings
from django.test import RequestFactory, override_settings
from rest_framework.authtoken.models import Token

from config.throttling import client_ip
from tests.config.test_permissions import every_url
from tests.conftest import ROOT

LOGIN = "/accounts/login/"


def sign_in(client, username, password, ip="10.0.0.1"):
    return client.post(LOGIN, {"username": username, "password": password}, REMOTE_ADDR=ip)


# --- Sign-in throttling (django-axes) ----------------------------------------------------------


@pytest.mark.django_db
def test_it_refuses_alice_the_right_password_after_six_wrong_ones(client, alice):
    assert settings.AXES_FAILURE_LIMIT == 5
    answers = [sign_in(client, "alice", "guess").status_code for _ in range(6)]
    assert answers[:4] == [200] * 4  # the form again, "didn't match"
    assert answers[5] == 429

    response = sign_in(client, "alice", "pw-alice")
    assert response.status_code == 429
    assert "Too many sign-in attempts" in response.content.decode()
    assert "Wait 15 minutes" in response.content.decode()
    assert "_auth_user_id" not in client.session
    # The username is locked from every address, not only the guesser's.
    assert sign_in(client, "alice", "pw-alice", ip="10.0.0.2").status_code == 429


@pytest.mark.django_db
def test_an_address_that_failed_five_times_is_refused_for_everyone(client, bob):
    for n in range(5):  # a different username each time: only the address adds up
        sign_in(client, f"guess{n}", "guess", ip="10.0.0.9")
    refused = sign_in(client, "bob", "pw-bob", ip="10.0.0.9")
    assert refused.status_code == 429
    assert "Too many sign-in attempts" in refused.content.decode()

    welcomed = sign_in(client, "bob", "pw-bob", ip="10.0.0.8")
    assert welcomed.status_code == 302
    assert client.session["_auth_user_id"] == str(bob.pk)


@pytest.mark.django_db
def test_a_failure_or_two_does_not_lock_anyone_out(client, alice):
    sign_in(client, "alice", "guess")
    assert sign_in(client, "alice", "pw-alice").status_code == 302


@pytest.mark.django_db
def test_api_tokens_still_authenticate(client, rita):
    token = Token.objects.create(user=rita)
    response = client.get("/api/campaigns/", HTTP_AUTHORIZATION=f"Token {token.key}")
    assert response.status_code == 200


def test_the_throttled_address_is_the_one_a_trusted_proxy_appended():
    request = RequestFactory().get(
        "/", REMOTE_ADDR="172.18.0.2", HTTP_X_FORWARDED_FOR="6.6.6.6, 203.0.113.7"
    )
    assert client_ip(request) == "172.18.0.2"  # no proxy trusted: the header is the client's
    with override_settings(BEHIND_TLS_PROXY=True):
        assert client_ip(request) == "203.0.113.7"
        assert client_ip(RequestFactory().get("/", REMOTE_ADDR="172.18.0.2")) == "172.18.0.2"


# --- Content-Security-Policy (django-csp) ------------------------------------------------------


def script_sources(response) -> list[str] | None:
    """The sources the response's Content-Security-Policy allows scripts from."""
    for directive in response.headers.get("Content-Security-Policy", "").split(";"):
        name, *sources = directive.split() or [""]
        if name == "script-src":
            return sources
    return None


@pytest.mark.django_db
@pytest.mark.parametrize("who", [None, "alice", "rita", "adam"])
def test_every_page_a_role_opens_carries_a_strict_policy(client, request, who):
    if who:
        client.force_login(request.getfixturevalue(who))
    client.raise_request_exception = False  # a page's own error still gets its header
    urls = sorted(set(every_url())) + ["/", LOGIN, "/api/docs/?script"]
    for url in urls:
        response = client.get(url)
        assert "Content-Security-Policy" in response.headers, (who, url)
        assert script_sources(response) == ["'self'"], (who, url, response.headers)
        policy = response.headers["Content-Security-Policy"]
        assert "default-src 'self'" in policy and "object-src 'none'" in policy


@pytest.mark.django_db
def test_the_lockout_page_carries_the_policy_too(client):
    for n in range(6):
        response = sign_in(client, f"guess{n}", "guess")
    assert response.status_code == 429
    assert script_sources(response) == ["'self'"]


@pytest.mark.django_db
def test_the_api_docs_load_their_script_from_our_origin(client, rita):
    client.force_login(rita)
    page = client.get("/api/docs/")
    assert page.status_code == 200
    assert script_sources(page) == ["'self'"]
    assert re.search(r'<script src="[^"]*\?[^"]*script=', page.content.decode())
    assert "<script>" not in page.content.decode()
    script = client.get("/api/docs/?script")
    assert script.status_code == 200 and "SwaggerUIBundle" in script.content.decode()


@pytest.mark.django_db
def test_the_schema_documents_the_error_statuses_of_every_operation(client, adam):
    client.force_login(adam)
    schema = yaml.safe_load(client.get("/api/schema/").content)
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert {"400", "401", "403", "404"} <= set(operation["responses"]), (method, path)


@pytest.mark.django_db
def test_an_api_url_nothing_matches_is_a_json_404(client, rita):
    client.force_login(rita)
    response = client.get("/api/campaigns/1.5e-300/")
    assert response.status_code == 404
    assert response.json() == {"detail": "Not found."}
    assert "text/html" in client.get("/collect/nowhere/").headers["Content-Type"]


INLINE = re.compile(
    r"<script(?![^>]*\bsrc=)[^>]*>(?!</script>)"  # a script element with code in it
    r"|<style\b|\sstyle=|\son[a-z]+\s*=|javascript:",
    re.IGNORECASE,
)


# Templates rendered only into files a user downloads (served as attachments, opened from disk,
# where no page's policy applies): a self-contained report must carry its own <style>.
DOWNLOADED_FILES = {"experiments/standalone.html"}


def test_no_template_has_inline_scripts_styles_or_handlers():
    offenders = [
        f"{path.relative_to(ROOT)}:{n}: {line.strip()}"
        for path in sorted((ROOT / "templates").rglob("*.html"))
        if str(path.relative_to(ROOT / "templates")) not in DOWNLOADED_FILES
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if INLINE.search(line)
    ]
    assert not offenders, "\n".join(offenders)
    # Still no script or handler in those, and each is only ever an attachment.
    for name in DOWNLOADED_FILES:
        text = (ROOT / "templates" / name).read_text()
        assert not re.search(r"<script|\son[a-z]+\s*=|javascript:", text, re.IGNORECASE), name


# --- DEBUG=0 over plain HTTP ---------------------------------------------------------------------


def production_settings(**env) -> list[str]:
    names = ["SECURE_SSL_REDIRECT", "SESSION_COOKIE_SECURE", "CSRF_COOKIE_SECURE"]
    code = (
        "from django.conf import settings as s; "
        f"print(*[getattr(s, n) for n in {names!r}], bool(s.SECURE_HSTS_SECONDS))"
    )
    base = {k: v for k, v in os.environ.items() if k not in {"DEBUG", "ALIGNLAB_HTTPS"}}
    result = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        env={
            **base,
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DEBUG": "0",
            "SECRET_KEY": "x" * 50,
            "ALLOWED_HOSTS": "127.0.0.1",
            **env,
        },
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.split()


def test_debug_off_means_https_unless_told_otherwise():
    assert production_settings() == ["True"] * 4
    assert production_settings(ALIGNLAB_HTTPS="0") == ["False"] * 4
