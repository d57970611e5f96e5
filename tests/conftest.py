"""Fixtures shared by the whole suite: the named users, and a real Celery worker process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path
from urllib.parse import quote

import pytest

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "test-artifacts"


def pytest_report_header(config):
    """Say in the log which database and broker the suite runs against."""
    from django.conf import settings

    from config.celery import app

    engine = settings.DATABASES["default"]["ENGINE"].rsplit(".", 1)[-1]
    return [
        f"alignlab: database={engine} ({'DATABASE_URL' if settings.DATABASE_URL else 'default'})",
        f"alignlab: broker={app.connection_for_write().transport_cls} "
        f"({'CELERY_BROKER_URL' if os.environ.get('CELERY_BROKER_URL') else 'embedded'})",
    ]


@pytest.fixture(scope="session")
def django_db_setup(django_db_setup, django_db_blocker):
    """pytest-django's test database, and at the end of the run no other session left on it.

    A process a test ended (a Celery worker killed with SIGKILL, a server stopped) can leave
    its PostgreSQL backend behind for a moment; then the database could not be dropped and
    pytest only warned. Such sessions are listed in `stray-db-sessions.log` under the run's var
    folder and ended, so the database is dropped as it should be."""
    yield
    from django.conf import settings
    from django.db import connection

    if connection.vendor != "postgresql":
        return
    with django_db_blocker.unblock(), connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, backend_start, left(query, 300) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        stray = cursor.fetchall()
        for pid, *_ in stray:
            cursor.execute("SELECT pg_terminate_backend(%s)", [pid])
    if stray:
        with (Path(settings.VAR_DIR) / "stray-db-sessions.log").open("a") as log:
            for row in stray:
                log.write(f"{time.strftime('%Y-%m-%d %H:%M:%S')} {row}\n")


# --- Tests that need something outside the repository ------------------------------------------


def _required(variable: str) -> bool:
    return os.environ.get(variable, "").lower() in {"1", "true", "yes", "on"}


def _can_build_kernels() -> bool:
    from training.compiled import can_build_kernels  # torch: only for the tests that ask

    return can_build_kernels()


def pytest_runtest_setup(item):
    """`shared_data`, `browser` and `cpp_compiler` tests skip, with the reason, on a machine
    without the data, Chromium or a C++ compiler (any user's clone); where `.ci/run` says they
    are required, they fail instead."""
    from tests.browser import CHROMIUM
    from tests.data import SHARED_DATA

    needs = []
    if item.get_closest_marker("shared_data") and not SHARED_DATA.is_dir():
        needs.append(
            (
                "ALIGNLAB_REQUIRE_SHARED_DATA",
                f"needs the real data folder {SHARED_DATA} (set ALIGNLAB_SHARED_DATA)",
            )
        )
    if item.get_closest_marker("browser") and not os.access(CHROMIUM, os.X_OK):
        needs.append(
            (
                "ALIGNLAB_REQUIRE_BROWSER",
                f"needs Debian's chromium at {CHROMIUM} (apt install chromium)",
            )
        )
    if item.get_closest_marker("cpp_compiler") and not _can_build_kernels():
        needs.append(
            (
                "ALIGNLAB_REQUIRE_CXX",
                "needs a C++ compiler (g++ or $CXX) and Python.h for torch.compile's CPU "
                "kernels (apt install g++ python3-dev)",
            )
        )
    for variable, reason in needs:
        if _required(variable):
            pytest.fail(f"{reason}, and {variable} says it is required here", pytrace=False)
        pytest.skip(reason)


# --- Users -------------------------------------------------------------------------------------


def _user_with_role(django_user_model, username, role, **extra):
    from django.contrib.auth.models import Group

    from config.roles import ensure_role_groups

    ensure_role_groups()
    user = django_user_model.objects.create_user(
        username=username, password="pw-" + username, **extra
    )
    user.groups.add(Group.objects.get(name=role))
    return user


@pytest.fixture
def alice(db, django_user_model):
    """A contractor."""
    return _user_with_role(django_user_model, "alice", "contractor")


@pytest.fixture
def bob(db, django_user_model):
    """Another contractor: must never see alice's work."""
    return _user_with_role(django_user_model, "bob", "contractor")


@pytest.fixture
def rita(db, django_user_model):
    """A researcher."""
    return _user_with_role(django_user_model, "rita", "researcher")


@pytest.fixture
def adam(db, django_user_model):
    """An admin (staff, so the Django admin opens for him too)."""
    return _user_with_role(django_user_model, "adam", "admin", is_staff=True)


@pytest.fixture
def api(adam):
    """An API client signed in as the admin that answers errors instead of raising them."""
    from rest_framework.test import APIClient

    client = APIClient(raise_request_exception=False)
    client.force_authenticate(adam)
    return client


@pytest.fixture
def anon_api():
    """An API client signed in as no one (a test signs it in as it needs)."""
    from rest_framework.test import APIClient

    return APIClient()


@pytest.fixture
def registered_lm(db, tmp_path):
    """An LM registered through the service on an empty folder: for code that never runs it
    (unlike the rows named `lm` of tests/api and tests/collection)."""
    from assistant.services import model_version_register

    return model_version_register(kind="lm", name="tiny", path=str(tmp_path))


@pytest.fixture
def artifacts_dir():
    ARTIFACTS.mkdir(exist_ok=True)
    return ARTIFACTS


# --- A real Celery worker ------------------------------------------------------------------------


def database_url(settings_dict: dict) -> str:
    """A DATABASE_URL for the database Django is connected to now (the test database in tests)."""
    engine = settings_dict["ENGINE"]
    if engine.endswith("sqlite3"):
        return f"sqlite:///{Path(settings_dict['NAME']).resolve()}"
    if engine.endswith("postgresql"):
        auth = quote(settings_dict["USER"] or "")
        if settings_dict["PASSWORD"]:
            auth += ":" + quote(settings_dict["PASSWORD"])
        host = settings_dict["HOST"] or "localhost"
        port = f":{settings_dict['PORT']}" if settings_dict["PORT"] else ""
        return f"postgres://{auth}@{host}{port}/{settings_dict['NAME']}"
    raise ValueError(f"no URL form for {engine}")


class WorkerProcess:
    def __init__(self, process: subprocess.Popen, hostname: str, log: Path):
        self.process, self.hostname, self.log = process, hostname, log

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def start_worker(tmp_path: Path, queues: str = "default,generation,training") -> WorkerProcess:
    """Start `celery worker` as its own process on the configured broker and the test database."""
    from django.db import connection

    from config.celery import app

    hostname = f"test-{uuid.uuid4().hex[:8]}@localhost"
    env = dict(
        os.environ, DATABASE_URL=database_url(connection.settings_dict), PYTHONUNBUFFERED="1"
    )
    log = tmp_path / "worker.log"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "-Q",
            queues,
            "-n",
            hostname,
            "-c",
            "1",
            "--without-gossip",
            "--without-mingle",
            "-l",
            "info",
        ],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    worker = WorkerProcess(process, hostname, log)
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"worker exited with {process.returncode}:\n{worker.output()}")
        if app.control.ping(destination=[hostname], timeout=1.0):
            return worker
    stop_worker(worker)
    raise RuntimeError(f"worker did not answer a ping within 90 s:\n{worker.output()}")


def stop_worker(worker: WorkerProcess) -> None:
    if worker.process.poll() is None:
        os.killpg(worker.process.pid, signal.SIGTERM)
        try:
            worker.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(worker.process.pid, signal.SIGKILL)
            worker.process.wait()


@pytest.fixture
def celery_worker_process(transactional_db, tmp_path):
    """A real worker process consuming every queue (no eager mode).

    Tests using it see rows the worker writes because the test database is committed to.
    """
    from config.celery import app

    app.control.purge()  # messages left by an earlier, interrupted run must not run now
    worker = start_worker(tmp_path)
    yield worker
    stop_worker(worker)


@pytest.fixture
def broker_down():
    """A context manager: inside it, this process sends tasks to a broker that is down (a Redis
    URL on a port nobody listens on); workers and everything else keep the real one."""
    from contextlib import contextmanager

    from config.celery import app

    def reset_pools():
        app.amqp._producer_pool = None
        app._pool = None

    @contextmanager
    def down():
        saved = app.conf.get("broker_write_url")
        app.conf.broker_write_url = "redis://127.0.0.1:9/0"
        reset_pools()
        try:
            yield
        finally:
            app.conf.broker_write_url = saved
            reset_pools()

    return down
