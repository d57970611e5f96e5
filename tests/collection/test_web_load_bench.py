"""bench/web_load.py end to end at a tiny size, so the bench cannot rot: seeding through the
services, the production web server (granian) on the test database, two contractors in their
own process, the check; and the server's own answer to a request line too long, which the API
schema documents (config/schema.py)."""

import importlib.util
import os
import secrets
import signal
import socket
import sys
import time
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from tests.conftest import database_url

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def web_load():
    # bench/ is a folder of scripts, not a package: load the file as a module.
    spec = importlib.util.spec_from_file_location("bench_web_load", ROOT / "bench" / "web_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


def start(web_load, tmp_path, *, workers: int, threads: int):
    """The production server (granian) on the test database, its log in `tmp_path`."""
    from django.db import connection

    return web_load.start_server(
        database_url=database_url(connection.settings_dict),
        static_root=tmp_path / "static",
        log=tmp_path / "granian.log",
        workers=workers,
        threads=threads,
    )


def raw_get(url: str, target: str) -> bytes:
    """The whole answer to one GET of `target`, sent as bytes (no client library's limits),
    through the pretend TLS proxy of the bench's production settings."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: {parts.netloc}\r\n".encode())
        sock.sendall(b"X-Forwarded-Proto: https\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def test_two_contractors_judge_through_granian_and_every_judgement_is_stored_once(
    web_load, transactional_db, tmp_path
):

    from collection.models import Judgement

    usernames, password = ["wl-t-000", "wl-t-001"], secrets.token_urlsafe(12)
    plain_names = ["wl-p-000", "wl-p-001"]  # judging as without JavaScript
    # More turns than two fast contractors judge in 1.5 s: an empty queue would be an error.
    web_load.seed(usernames=usernames + plain_names, turns=400, password=password)
    server = start(web_load, tmp_path, workers=2, threads=2)
    assert "granian" in server.command
    try:
        results, plain = [
            web_load.run_phase(
                url=server.url,
                usernames=names,
                password=password,
                think_s=0.0,
                duration_s=duration,
                server_pid=server.process.pid,
                htmx=htmx,
            )
            for names, duration, htmx in ((usernames, 1.5, True), (plain_names, 1.0, False))
        ]
        # Just under the server's limit the request reaches Django; over it, the server answers
        # a bodiless 414 itself, as the schema says.
        reached = raw_get(server.url, "/api/judgements/?q=" + "a" * 60_000)
        refused = raw_get(server.url, "/api/judgements/?q=" + "a" * 70_000)
    finally:
        web_load.stop_server(server)
    check = web_load.database_check(usernames=usernames, confirmed=results["confirmed"])
    row = web_load.summarize("tiny", results, check)

    # The boosted form's answer is the next turn: a GET only for each contractor's first page.
    # Without JavaScript each judgement is a POST, its redirect, then a GET.
    assert len(results["latencies_ms"]["load"]) == 2, (
        results["errors"],
        len(results["confirmed"]),
        server.output(),
    )
    plain_check = web_load.database_check(usernames=plain_names, confirmed=plain["confirmed"])
    assert plain["errors"] == {} and plain_check["lost"] == plain_check["duplicated"] == 0
    assert len(plain["latencies_ms"]["load"]) >= len(plain["confirmed"]) + 2 > 2

    assert results["signed_in"] == 2
    assert row["errors"] == 0, (row["errors_by_kind"], row["error_examples"], server.output())
    assert row["judgements"] > 2 and row["latency_ms"]["submit_next"]["p99"] is not None
    assert check["in_database"] == check["confirmed_by_clients"] == row["judgements"]
    assert check["lost"] == check["duplicated"] == check["stored_unconfirmed"] == 0
    assert check["origins"] == {"review": row["judgements"]}
    assert check["unique_turn_contractor_constraint"]
    assert Judgement.objects.filter(contractor__username__in=usernames).count() == row["judgements"]
    assert "| tiny | 2 | 0 |" in web_load.markdown([row])
    assert row["cpu_s"]["server"] > 0  # the server's workers are its children: counted

    assert reached.startswith(b"HTTP/1.1 401 "), reached[:200]  # DRF: no token
    head, _, body = refused.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 414 "), refused[:200]
    assert body == b"" and b"content-length: 0" in head.lower(), refused[:200]


def test_a_worker_that_dies_is_started_again(web_load, transactional_db, tmp_path):
    """compose.yaml's `--respawn-failed-workers`: the server answers again after its only
    worker is killed (as by the kernel's out-of-memory killer)."""
    server = start(web_load, tmp_path, workers=1, threads=1)
    page = urllib.request.Request(
        server.url + "/accounts/login/", headers={"X-Forwarded-Proto": "https"}
    )
    try:
        children = Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children")
        (worker,) = [int(pid) for pid in children.read_text().split()]
        os.kill(worker, signal.SIGKILL)
        deadline, answered = time.monotonic() + 60, None
        while time.monotonic() < deadline and answered is None:
            try:
                with urllib.request.urlopen(page, timeout=5) as response:
                    answered = response.status
            except OSError:
                time.sleep(0.2)
        assert answered == 200, server.output()
        (respawned,) = [int(pid) for pid in children.read_text().split()]
        assert respawned != worker
    finally:
        web_load.stop_server(server)
