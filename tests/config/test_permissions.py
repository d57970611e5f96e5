"""Anonymous users are sent to sign in everywhere but the sign-in page; each role sees its pages."""

import re
import uuid

import pytest
from django.urls import URLPattern, URLResolver, get_resolver, reverse

PUBLIC = {"/accounts/login/", "/accounts/logout/", "/admin/login/"}  # logout: POST-only
SAMPLE_ARGS = {
    "int": "1",
    "str": "x",
    "slug": "x",
    "uuid": str(uuid.UUID(int=1)),
    "path": "x",
    "drf_format_suffix": ".json",
}


def every_url(patterns=None, prefix=""):
    """One concrete URL per pattern in the project, parameters filled with sample values."""
    for entry in patterns if patterns is not None else get_resolver().url_patterns:
        route = prefix + str(entry.pattern)
        if isinstance(entry, URLResolver):
            yield from every_url(entry.url_patterns, route)
        elif isinstance(entry, URLPattern):
            url = re.sub(r"<(?:(\w+):)?\w+>", lambda m: SAMPLE_ARGS[m.group(1) or "str"], route)
            if "(" in url or "^" in url or "\\" in url:  # regex routes (the admin's few)
                continue
            yield "/" + url


@pytest.mark.django_db
@pytest.mark.parametrize("url", sorted(set(every_url()) - PUBLIC))
def test_anonymous_users_are_sent_to_sign_in(client, url):
    if url.startswith("/api/"):
        assert client.get(url).status_code in (401, 403)
        return
    response = client.get(url, follow=True)
    assert response.redirect_chain, f"{url} answered {response.status_code} without sign-in"
    assert response.redirect_chain[-1][0].startswith(("/accounts/login/", "/admin/login/")), url
    assert response.status_code == 200


@pytest.mark.django_db
def test_the_login_page_is_open_to_everyone(client):
    response = client.get("/accounts/login/")
    assert response.status_code == 200
    assert b'name="password"' in response.content


# Which roles reach which page (others get 403).
PAGES = {
    "collection:dashboard": {"contractor"},
    "evals:leaderboard": {"researcher", "admin"},
    "evals:compare": {"researcher", "admin"},
    "experiments:list": {"researcher", "admin"},
    "experiments:curves": {"researcher", "admin"},
    "evals:elo": {"researcher", "admin"},
    "collection:datasets": {"researcher", "admin"},
    "collection:quality": {"researcher", "admin"},
    "collection:review": {"contractor"},
    "training:runs": {"admin"},
    "collection:gold": {"admin"},
}


@pytest.mark.parametrize("page", sorted(PAGES))
@pytest.mark.parametrize("who", ["alice", "rita", "adam"])
def test_each_role_reaches_only_its_pages(client, request, page, who):
    user = request.getfixturevalue(who)
    client.force_login(user)
    role = user.groups.get().name
    response = client.get(reverse(page))
    assert response.status_code == (200 if role in PAGES[page] else 403), (who, page)


@pytest.mark.parametrize(
    "who, landing",
    [("alice", "collection:dashboard"), ("rita", "evals:leaderboard"), ("adam", "training:runs")],
)
def test_home_sends_each_role_to_its_landing_page(client, request, who, landing):
    client.force_login(request.getfixturevalue(who))
    assert client.get("/")["Location"] == reverse(landing)


def test_a_user_without_a_role_is_told_so(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("nobody", password="x"))
    response = client.get("/")
    assert response.status_code == 403
    assert b"No role yet" in response.content


def test_only_admins_open_the_django_admin(client, alice, rita, adam):
    for user, expected in ((alice, 302), (rita, 302), (adam, 200)):
        client.force_login(user)
        assert client.get("/admin/").status_code == expected, user.username


def test_navigation_shows_each_role_its_own_links(client, alice, adam):
    client.force_login(alice)
    page = client.get(reverse("collection:dashboard")).content.decode()
    dashboard, training = (
        f'href="{reverse(n)}"' for n in ("collection:dashboard", "training:runs")
    )
    assert dashboard in page and training not in page
    client.force_login(adam)
    page = client.get(reverse("training:runs")).content.decode()
    assert training in page and dashboard not in page


def test_pages_load_htmx_locally_and_send_the_csrf_token(client, alice):
    client.force_login(alice)
    page = client.get(reverse("collection:dashboard")).content.decode()
    assert re.search(r'<script src="/static/django_htmx/htmx[^"]*\.js"', page)
    assert '"X-CSRFToken": "' in page
    assert "unpkg.com" not in page and "cdn" not in page.lower()


def test_roles_give_admins_write_and_researchers_read_permissions(rita, adam):
    from django.contrib.auth.models import Group

    researcher = set(
        Group.objects.get(name="researcher").permissions.values_list("codename", flat=True)
    )
    assert researcher and all(c.startswith("view_") for c in researcher)
    contractor = Group.objects.get(name="contractor").permissions.count()
    assert contractor == 0
