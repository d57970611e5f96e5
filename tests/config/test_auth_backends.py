"""config.auth_backends and config.sessions: a signed-in request reads its session in one query
and its user with the user's roles in one more, and sees every change to either at once."""

from datetime import timedelta

import pytest
from django.contrib.auth import BACKEND_SESSION_KEY, SESSION_KEY
from django.contrib.auth.models import Group
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.contrib.sessions.models import Session
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from config import auth_backends
from config.auth_backends import RolesBackend
from config.roles import ADMIN, CONTRACTOR, RESEARCHER, ROLES, user_roles
from config.sessions import SessionStore


@pytest.mark.django_db
def test_the_user_and_the_roles_come_in_one_query(
    alice, rita, adam, django_user_model, django_assert_num_queries
):
    backend = RolesBackend()
    Group.objects.get(name=RESEARCHER).user_set.add(adam)
    root = django_user_model.objects.create_superuser("root", password="pw-root-x")
    expected = {alice: {CONTRACTOR}, rita: {RESEARCHER}, adam: {ADMIN, RESEARCHER}, root: ROLES}
    for user, roles in expected.items():
        with django_assert_num_queries(1):
            loaded = backend.get_user(user.pk)
            assert user_roles(loaded) == frozenset(roles)
        assert loaded == user and loaded.username == user.username
    Group.objects.get(name=CONTRACTOR).user_set.remove(alice)  # seen on the next request
    assert user_roles(backend.get_user(alice.pk)) == frozenset()
    alice.is_active = False
    alice.save()
    assert backend.get_user(alice.pk) is None  # as Django's model backend: inactive is no one
    assert backend.get_user(10**9) is None


@pytest.mark.django_db
def test_a_sign_in_through_the_form_uses_the_roles_backend(client, alice):
    answer = client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    assert answer.status_code == 302
    assert client.session[BACKEND_SESSION_KEY] == auth_backends.PATH
    assert client.get(reverse("collection:review")).status_code == 200
    refused = Client().post(reverse("login"), {"username": "alice", "password": "wrong"})
    assert refused.status_code == 200 and b"match. Please try again" in refused.content


@pytest.mark.django_db
def test_a_session_signed_in_before_the_backend_changed_stays_signed_in(client, alice):
    client.force_login(alice)
    session = client.session
    session[BACKEND_SESSION_KEY] = auth_backends.LEGACY_PATH  # as Django's model backend wrote
    session.save()
    assert client.get(reverse("collection:review")).status_code == 200  # not sent to sign in
    assert client.session[BACKEND_SESSION_KEY] == auth_backends.PATH
    session = client.session
    session[BACKEND_SESSION_KEY] = "some.other.Backend"  # one no longer listed: signed out
    session.save()
    assert client.get(reverse("collection:review")).status_code == 302


@pytest.mark.django_db
def test_sessions_are_djangos_database_sessions(alice, django_assert_num_queries):
    """The same rows: a session either engine wrote loads in the other, in one query here."""
    theirs = DjangoSessionStore()
    theirs.update({SESSION_KEY: str(alice.pk), "note": "<b>&</b>"})
    theirs.create()
    with django_assert_num_queries(1):
        ours = SessionStore(theirs.session_key)
        assert ours["note"] == "<b>&</b>" and ours[SESSION_KEY] == str(alice.pk)
    ours["more"] = [1, 2]
    ours.save()
    assert DjangoSessionStore(theirs.session_key)["more"] == [1, 2]
    Session.objects.filter(pk=theirs.session_key).update(
        expire_date=timezone.now() - timedelta(seconds=1)
    )
    expired = SessionStore(theirs.session_key)
    assert expired.load() == {} and expired.session_key is None  # a fresh key, as Django's
    assert SessionStore("x" * 40).load() == {}


@pytest.mark.django_db
def test_a_sign_out_ends_the_session_for_every_copy_of_its_cookie(client, alice):
    client.post(reverse("login"), {"username": "alice", "password": "pw-alice"})
    cookie = client.cookies["sessionid"].value
    client.post(reverse("logout"))
    client.cookies["sessionid"] = cookie  # the old cookie, replayed
    assert client.get(reverse("collection:review")).status_code == 302
