"""The server side of bench/web_load.py (bench/schemathesis_roles.py uses it too): the bench's
own database dropped, made and migrated, seeded through the ORM and the collection services,
the judgements in it checked against what the clients saw confirmed, and the web server started
with production settings and stopped: granian, as in compose.yaml, or gunicorn (the server before
it) for a comparison.
"""

from __future__ import annotations

import math
import os
import random
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]


# --- The database: made, migrated, seeded ------------------------------------------------------


def recreate_database(url: str) -> None:
    """Drop the bench's database and make it again, empty (PostgreSQL or an SQLite file)."""
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = Path(unquote(parts.path)[1:])
        path = path if path.is_absolute() else ROOT / path
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
        return
    import psycopg
    from psycopg import sql

    name = unquote(parts.path.lstrip("/"))
    if not name or name in {"postgres", "alignlab"}:
        raise SystemExit(f"refusing to drop the database {name!r}: give the bench its own")
    server = {
        "host": parts.hostname or "",
        "port": parts.port or "",
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    with psycopg.connect(dbname="postgres", autocommit=True, **server) as db:
        db.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
        db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def manage(*args: str, env: dict) -> None:
    subprocess.run([sys.executable, "manage.py", *args], cwd=ROOT, env=env, check=True)


LOREM = (
    "Start with what you already know and write it down. Then check each step against a "
    "reliable source before you rely on it. If something is unclear, ask a specific question "
    "rather than a general one. Small experiments tell you more than long deliberation. Keep "
    "notes of what worked, so next time you can begin from there. When in doubt, prefer the "
    "option you can undo. It also helps to explain the problem to someone else, because "
    "saying it aloud often shows the gap."
).split(". ")
TOPICS = (
    "keeping houseplants alive",
    "planning a week of cheap dinners",
    "learning to touch type",
    "writing a polite complaint letter",
    "training for a first 5k run",
    "choosing a laptop for programming",
)


def _response_text(rng: random.Random) -> str:
    return ". ".join(rng.choice(LOREM) for _ in range(rng.randint(4, 9))) + "."


def seed(*, usernames: list[str], turns: int, password: str, turns_per_conversation: int = 2):
    """Contractors, a campaign and `turns` judged turns, through the ORM and the services.

    One author contractor holds the conversations; the campaign's overlap target exceeds the
    number of contractors, so every contractor can review every turn. Returns the campaign.
    """
    from django.conf import settings
    from django.contrib.auth import get_user_model
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import Group
    from django.db import connection, transaction
    from django.utils import timezone

    from assistant.services import model_version_register
    from collection.conversations import conversation_start
    from collection.judgements import judgement_submit
    from collection.models import Campaign, Response, Turn
    from config.roles import CONTRACTOR, ensure_role_groups

    rng = random.Random(0)
    User = get_user_model()
    ensure_role_groups()
    hashed = make_password(password)  # hashed once: the hash is slow on purpose
    author = User.objects.create_user(username=f"wl-author-{secrets.token_hex(3)}")
    users = User.objects.bulk_create([User(username=name, password=hashed) for name in usernames])
    Group.objects.get(name=CONTRACTOR).user_set.add(author, *users)
    # A placeholder LM: the responses below are stored, no model ever runs in the bench.
    placeholder = settings.VAR_DIR / "bench-web-load" / "placeholder-lm"
    placeholder.mkdir(parents=True, exist_ok=True)
    version = model_version_register(kind="lm", name="web-load placeholder", path=str(placeholder))
    conversations = math.ceil(turns / turns_per_conversation)
    campaign = Campaign.objects.create(
        name="Web load bench",
        lm_version=version,
        prompt=None,
        k=2,
        max_turns=turns_per_conversation,
        quota_per_contractor=conversations,
        overlap_target=min(len(usernames) + 1, 32767),
    )
    made = 0
    for number in range(conversations):
        conversation = conversation_start(campaign=campaign, contractor=author)
        topic = TOPICS[number % len(TOPICS)]
        for index in range(min(turns_per_conversation, turns - made)):
            with transaction.atomic():  # the state turn_generate leaves: responses, READY
                turn = Turn.objects.create(
                    conversation=conversation,
                    index=index,
                    human_text=f"Conversation {number}, message {index + 1}: help me with {topic}.",
                    status=Turn.Status.READY,
                    ready_at=timezone.now(),
                )
                Response.objects.bulk_create(
                    Response(turn=turn, index=i, text=_response_text(rng), model_version=version)
                    for i in range(2)
                )
            judgement_submit(
                turn=turn,
                contractor=author,
                scale=rng.randint(1, 8),
                time_spent_ms=rng.randint(2000, 20000),
            )
            made += 1
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:  # fresh statistics, as autovacuum would leave them
            cursor.execute("ANALYZE")
    return campaign


def database_check(*, usernames: list[str], confirmed: list) -> dict:
    """Compare the judgements stored for these contractors with the submits they saw confirmed."""
    from django.db import connection
    from django.db.models import Count

    from collection.models import Judgement

    stored = Counter(
        Judgement.objects.filter(contractor__username__in=usernames).values_list(
            "contractor__username", "turn_id"
        )
    )
    seen = Counter((username, turn_id) for username, turn_id, _ in confirmed)
    origins = Counter(
        Judgement.objects.filter(contractor__username__in=usernames).values_list(
            "origin", flat=True
        )
    )
    duplicated_anywhere = (
        Judgement.objects.values("turn_id", "contractor_id")
        .annotate(n=Count("id"))
        .filter(n__gt=1)
        .count()
    )
    with connection.cursor() as cursor:
        constraints = connection.introspection.get_constraints(cursor, Judgement._meta.db_table)
    unique = any(
        c["unique"] and set(c["columns"]) == {"turn_id", "contractor_id"}
        for c in constraints.values()
    )
    return {
        "in_database": sum(stored.values()),
        "confirmed_by_clients": sum(seen.values()),
        "lost": sum(1 for pair in seen if pair not in stored),
        "duplicated": sum(n - 1 for n in stored.values() if n > 1),
        "confirmed_twice": sum(n - 1 for n in seen.values() if n > 1),
        "stored_unconfirmed": sum(1 for pair in stored if pair not in seen),
        "origins": dict(origins),
        "duplicated_pairs_in_table": duplicated_anywhere,
        "unique_turn_contractor_constraint": unique,
        "judgements_in_table": Judgement.objects.count(),
    }


# --- the web server ---------------------------------------------------------------------------

# granian is compose.yaml's server; gunicorn (sync workers, or gthread with --threads > 1) was
# until session 15 and stays here to compare against (bench/web_load.py --server gunicorn).
SERVERS = ("granian", "gunicorn")
# server → (worker processes, threads per worker) when a bench is not told (BENCHMARKS.md,
# session 14: granian 2 x 2 beat 4 x 1 and 2 x 4; gunicorn's best was 4 sync workers)
DEFAULT_WORKERS = {"granian": (2, 2), "gunicorn": (4, 1)}


@dataclass
class Server:
    process: subprocess.Popen
    url: str
    log: Path
    command: list[str]

    def output(self) -> str:
        return self.log.read_text(errors="replace")[-4000:]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def server_env(*, database_url: str, static_root: Path) -> dict:
    """Production settings (DEBUG=0, HTTPS behind a proxy that sets X-Forwarded-Proto)."""
    return dict(
        os.environ,
        DEBUG="0",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        SECURE_PROXY_SSL_HEADER="1",
        DATABASE_URL=database_url,
        STATIC_ROOT=str(static_root),
        CELERY_BROKER_URL="memory://",  # judging queues no task; nothing may leak into var/
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )


def start_server(
    *,
    database_url: str,
    static_root: Path,
    log: Path,
    workers: int | None = None,
    threads: int | None = None,
    collectstatic: bool = True,
    server: str = "granian",
) -> Server:
    """Collect static files (the manifest storage needs them), start the server, wait for it."""
    env = server_env(database_url=database_url, static_root=static_root)
    if collectstatic:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    headers = {"X-Forwarded-Proto": "https"}  # server_env's settings sit behind a TLS proxy
    return server_start(
        env=env, log=log, workers=workers, threads=threads, headers=headers, server=server
    )


def server_command(
    server: str, *, port: int, workers: int | None, threads: int | None
) -> list[str]:
    """The command line of `server` on 127.0.0.1:`port`: `workers` processes of `threads`
    threads each, DEFAULT_WORKERS' for None (gunicorn: sync workers when `threads` is 1, else
    gthread)."""
    if server not in DEFAULT_WORKERS:
        raise ValueError(f"unknown web server {server!r}: one of {', '.join(SERVERS)}")
    default_workers, default_threads = DEFAULT_WORKERS[server]
    workers, threads = workers or default_workers, threads or default_threads
    if server == "granian":
        return [
            sys.executable,
            "-m",
            "granian",
            "--interface",
            "wsgi",
            "config.wsgi:application",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--blocking-threads",
            str(threads),
            "--respawn-failed-workers",
        ]
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "config.wsgi:application",
        "--bind",
        f"127.0.0.1:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--timeout",
        "120",
    ]


def server_start(
    *,
    env: dict,
    log: Path,
    workers: int | None = None,
    threads: int | None = None,
    headers: dict | None = None,
    server: str = "granian",
) -> Server:
    """Start `server` on a free port with `env`; return once the sign-in page answers 200
    (requested with `headers`), or raise with its log."""
    port = free_port()
    command = server_command(server, port=port, workers=workers, threads=threads)
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    running = Server(process, f"http://127.0.0.1:{port}", log, command)
    health = urllib.request.Request(running.url + "/accounts/login/", headers=headers or {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{server} exited with {process.returncode}:\n{running.output()}")
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                if response.status == 200:
                    return running
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_server(running)
    raise RuntimeError(f"{server} did not answer within 60 s:\n{running.output()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # the master stops its workers gracefully
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, 9)
            server.process.wait()
