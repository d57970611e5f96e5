import os
import secrets
import subprocess
import sys

import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db import connection

from config.celery import app
from config.settings import database_from_url, env_bool
from tests.conftest import ROOT


def run_manage(*args, **env):
    base = {
        k: v for k, v in os.environ.items() if k not in {"DEBUG", "SECRET_KEY", "ALLOWED_HOSTS"}
    }
    return subprocess.run(
        [sys.executable, "manage.py", *args],
        cwd=ROOT,
        env={**base, **env},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_it_parses_postgres_urls():
    db = database_from_url("postgres://al%40ice:p%2Fw@db.example:5433/alignlab?sslmode=require")
    assert db["ENGINE"] == "django.db.backends.postgresql"
    assert (db["USER"], db["PASSWORD"], db["HOST"], db["PORT"], db["NAME"]) == (
        "al@ice",
        "p/w",
        "db.example",
        "5433",
        "alignlab",
    )
    # Server-side parameters and prepared statements by default (DATABASE_PREPARE_THRESHOLD).
    assert db["OPTIONS"] == {
        "sslmode": "require",
        "server_side_binding": True,
        "prepare_threshold": 2,
    }


def test_prepared_statements_can_be_turned_off_for_an_old_pooler(monkeypatch):
    monkeypatch.setenv("DATABASE_PREPARE_THRESHOLD", "0")
    assert database_from_url("postgres://db.example/alignlab")["OPTIONS"] == {}
    monkeypatch.setenv("DATABASE_PREPARE_THRESHOLD", "often")
    with pytest.raises(ImproperlyConfigured, match="DATABASE_PREPARE_THRESHOLD"):
        database_from_url("postgres://db.example/alignlab")


def test_it_parses_sqlite_urls_relative_and_absolute():
    assert str(database_from_url("sqlite:////tmp/x.sqlite3")["NAME"]) == "/tmp/x.sqlite3"
    assert (
        database_from_url("sqlite:///var/x.sqlite3")["NAME"] == settings.BASE_DIR / "var/x.sqlite3"
    )


def test_it_rejects_unknown_database_schemes():
    with pytest.raises(ImproperlyConfigured, match="mysql"):
        database_from_url("mysql://root@localhost/db")


def test_it_rejects_a_non_boolean(monkeypatch):
    monkeypatch.setenv("SOME_FLAG", "maybe")
    with pytest.raises(ImproperlyConfigured, match="SOME_FLAG"):
        env_bool("SOME_FLAG", False)


@pytest.mark.django_db
def test_it_uses_the_configured_database():
    """CI sets DATABASE_URL to PostgreSQL: the suite must really run on it."""
    url = os.environ.get("DATABASE_URL", "")
    if url.startswith(("postgres://", "postgresql://")):
        assert connection.vendor == "postgresql"
        with connection.cursor() as cursor:
            cursor.execute("select version()")
            assert cursor.fetchone()[0].startswith("PostgreSQL")
        # A statement the connection runs again is prepared: planned once, not every time.
        from django.contrib.auth.models import Group

        for _ in range(3):
            list(Group.objects.filter(name="prepared-check"))
        with connection.cursor() as cursor:
            cursor.execute("select statement from pg_prepared_statements")
            prepared = [row[0] for row in cursor.fetchall()]
        assert any('"auth_group"' in sql and "prepared-check" not in sql for sql in prepared)
    else:
        assert connection.vendor == "sqlite"
        with connection.cursor() as cursor:
            cursor.execute("pragma journal_mode")
            assert cursor.fetchone()[0] == "wal"


def test_it_uses_the_configured_broker():
    """CI sets CELERY_BROKER_URL to Redis: tasks must really go through it."""
    url = os.environ.get("CELERY_BROKER_URL", "")
    expected = url.split("://", 1)[0] if url else "filesystem"
    with app.connection_for_write() as conn:
        assert conn.transport_cls == expected
        conn.ensure_connection(max_retries=1)  # a real connection, not only a parsed URL


def test_it_refuses_to_start_without_a_secret_key_when_debug_is_off():
    result = run_manage("check", DEBUG="0", ALLOWED_HOSTS="alignlab.example.org")
    assert result.returncode != 0
    assert "SECRET_KEY must be set when DEBUG is off" in result.stderr


def test_production_settings_pass_the_deploy_check_with_no_warnings():
    result = run_manage(
        "check",
        "--deploy",
        "--fail-level",
        "WARNING",
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(50),
        ALLOWED_HOSTS="alignlab.example.org",
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "System check identified no issues (0 silenced)." in result.stdout
