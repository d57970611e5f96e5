"""`make run` on the embedded defaults: the login page is served, a demo user signs in, the
worker answers a ping, and Ctrl-C stops everything."""

import http.cookiejar
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request

import pytest

from tests.conftest import ROOT


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, seconds, what):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.fixture
def make_run(tmp_path, settings):
    port = free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in {"DATABASE_URL", "CELERY_BROKER_URL", "CELERY_RESULT_BACKEND"}
    }
    # A fresh var/ (database, broker, demo passwords), but the converted default model is reused.
    env.update(
        ALIGNLAB_VAR_DIR=str(tmp_path / "var"),
        ALIGNLAB_MODELS_DIR=str(settings.MODELS_DIR),
        PYTHONUNBUFFERED="1",
    )
    log = tmp_path / "make-run.log"
    process = subprocess.Popen(
        ["make", "run", f"PORT={port}", "WORKERS=1"],
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    yield process, port, log, env
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def test_make_run_serves_sign_in_and_a_worker(make_run):
    process, port, log, env = make_run
    base = f"http://127.0.0.1:{port}"

    def login_page():
        try:
            with urllib.request.urlopen(base + "/accounts/login/", timeout=2) as response:
                return response.read().decode()
        except OSError:
            assert process.poll() is None, log.read_text()
            return None

    wait_for(login_page, 240, "the login page")
    credentials = re.search(r"^\s+alice\s+(\S+)\s+contractor$", log.read_text(), re.M)
    assert credentials, log.read_text()

    jar = http.cookiejar.CookieJar()
    opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar))
    opener.open(base + "/accounts/login/").read()
    csrf = next(cookie.value for cookie in jar if cookie.name == "csrftoken")
    form = urllib.parse.urlencode(
        {"username": "alice", "password": credentials.group(1), "csrfmiddlewaretoken": csrf}
    ).encode()
    request = urllib.request.Request(
        base + "/accounts/login/", data=form, headers={"Referer": base}
    )
    with opener.open(request) as response:
        assert response.url == base + "/collect/"
        assert "Welcome, alice" in response.read().decode()

    def worker_pong():
        ping = subprocess.run(
            [sys.executable, "-m", "celery", "-A", "config", "inspect", "ping", "--timeout", "3"],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        return "pong" in ping.stdout and ping.stdout

    assert "2 nodes online" in wait_for(worker_pong, 120, "the workers' pong")

    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C does in a terminal
    process.wait(timeout=60)
    leftovers = subprocess.run(
        ["pgrep", "-f", f"runserver --noreload 127.0.0.1:{port}"], capture_output=True, text=True
    )
    assert leftovers.stdout == "", "the web server outlived Ctrl-C"
    workers = subprocess.run(
        ["pgrep", "-f", "celery -A config worker -Q generation -c 1 -n generation@"],
        capture_output=True,
        text=True,
    )
    assert workers.stdout == "", "a worker outlived Ctrl-C"
