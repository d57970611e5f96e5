"""Web load of the collection pages: simulated contractors judging pre-generated turns through
the review queue, against gunicorn (DEBUG=0, behind a pretend TLS proxy) on PostgreSQL.

    .venv/bin/python bench/web_load.py --duration 60 --json var/bench/web_load.json

The script drops and makes its own database (--database-url, default
postgres://postgres@127.0.0.1:5432/alignlab_bench; sqlite:///PATH works too), migrates it,
seeds it through the ORM and the collection services (contractors, a campaign on a placeholder
model version, two-turn conversations whose responses are stored and which their author has
judged: no model runs), collects static files, starts gunicorn (4 sync workers: see --workers)
and runs the contractors in a separate process with an async HTTP client (aiohttp). Each
contractor signs in through the login form, then loops: think, POST a judgement of the turn the
review page shows, GET the review page (the next turn, and the "recorded" message that confirms
the submit). Phases, each with its own contractors so each starts at the front of the queue:

  a     50 contractors, 1 s think time (each starts after a random part of it, so they do not
        all submit in the same instant);
  b10   closed loop, no think time, 10 contractors;
  b50   closed loop, no think time, 50 contractors.

After each phase the judgements in the database are compared with the submits the clients saw
confirmed: lost = confirmed but not stored, duplicated = a (turn, contractor) pair stored twice.
Goal: in (a) p99 < 100 ms (of each request, and of submit + next turn as the contractor waits
for it) and 0 errors; 0 lost or duplicated judgements in every phase.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import resource
import secrets
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, write_json  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/alignlab_bench"
# name → (contractors, think time in seconds)
PHASES = {"a": (50, 1.0), "b10": (10, 0.0), "b50": (50, 0.0)}
GOAL_P99_MS = 100.0

REVIEW_PATH = "/collect/review/"
TURN_RE = re.compile(r'action="/collect/review/(\d+)/judge/"')
CSRF_RE = re.compile(r'name="csrfmiddlewaretoken" value="([^"]+)"')
RESPONSE_RE = re.compile(r'data-response-id="(\d+)"')
RECORDED = "your judgement is recorded"
EMPTY_QUEUE = "Nothing to review right now"
MAX_ERRORS_IN_A_ROW = 20  # a contractor that keeps failing stops (and says so)


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


# --- The simulated contractors (their own process; no Django here) ---------------------------


@dataclass
class ClientStats:
    started: float = 0.0  # perf_counter at the start of the measured window
    latencies: dict[str, list[float]] = field(
        default_factory=lambda: {"login": [], "submit": [], "load": [], "submit_next": []}
    )
    confirmed: list[tuple[str, int, float]] = field(default_factory=list)
    submitted: int = 0
    errors: Counter = field(default_factory=Counter)
    examples: list[str] = field(default_factory=list)

    def error(self, kind: str, detail: str) -> None:
        self.errors[kind] += 1
        if len(self.examples) < 20:
            self.examples.append(f"{kind}: {detail}"[:300])


class Contractor:
    """One simulated contractor: a session (cookie jar) and the page it is looking at."""

    def __init__(self, session, config: dict, username: str, stats: ClientStats, rng):
        self.session, self.config, self.username, self.stats = session, config, username, stats
        self.rng = rng
        self.base = config["url"]
        # What the browser sends through the TLS proxy: the origin it sees is https.
        self.origin = "https://" + urlsplit(self.base).netloc

    async def request(self, kind: str, method: str, path: str, data=None):
        """(status, body, Location) of one timed request; None (an error) when it failed."""
        import aiohttp

        headers = {"Referer": self.origin + path}
        if method == "POST":
            headers["Origin"] = self.origin
        started = time.perf_counter()
        try:
            async with self.session.request(
                method, self.base + path, data=data, headers=headers, allow_redirects=False
            ) as response:
                body = await response.text()
        except (aiohttp.ClientError, TimeoutError, OSError) as error:
            self.stats.error("exception", f"{method} {path}: {type(error).__name__} {error}")
            return None
        self.stats.latencies[kind].append((time.perf_counter() - started) * 1000)
        return response.status, body, response.headers.get("Location", "")

    async def login(self) -> bool:
        got = await self.request("login", "GET", "/accounts/login/")
        token = CSRF_RE.search(got[1]) if got and got[0] == 200 else None
        if token is None:
            self.stats.error("login", f"{self.username}: no login form ({got and got[0]})")
            return False
        form = {
            "csrfmiddlewaretoken": token.group(1),
            "username": self.username,
            "password": self.config["password"],
            "next": REVIEW_PATH,
        }
        got = await self.request("login", "POST", "/accounts/login/", data=form)
        if not got or got[0] != 302 or not got[2].endswith(REVIEW_PATH):
            self.stats.error("login", f"{self.username}: sign-in refused ({got and got[0]})")
            return False
        return True

    async def load_review(self, kind: str = "load"):
        """The review page: (its body, the turn id and CSRF token of its form), or None."""
        got = await self.request(kind, "GET", REVIEW_PATH)
        if got is None:
            return None
        status, body, _ = got
        if status != 200:
            self.stats.error("status", f"GET review: {status}")
            return None
        turn, token = TURN_RE.search(body), CSRF_RE.search(body)
        if turn is None or token is None or len(RESPONSE_RE.findall(body)) != 2:
            kind = "empty_queue" if EMPTY_QUEUE in body else "parse"
            self.stats.error(kind, f"{self.username}: no judging form on the review page")
            return None
        return body, int(turn.group(1)), token.group(1)

    async def submit(self, turn_id: int, token: str, think_ms: int) -> bool:
        """POST a judgement as the keyboard widget fills the form: a scale point, time spent."""
        form = {
            "csrfmiddlewaretoken": token,
            "scale": str(self.rng.randint(1, 8)),
            "note": "",
            "time_spent_ms": str(think_ms),
        }
        self.stats.submitted += 1
        got = await self.request("submit", "POST", f"/collect/review/{turn_id}/judge/", data=form)
        if got is None:
            return False
        status, body, location = got
        if status != 302 or not location.endswith(REVIEW_PATH):
            error = re.search(r'<p class="error"[^>]*>([^<]+)', body)
            detail = error.group(1) if error else location
            self.stats.error("submit_refused", f"turn {turn_id}: {status} {detail}")
            return False
        return True

    async def work(self, deadline: float) -> None:
        think = self.config["think_s"]
        if think:  # start after a random part of the think time: contractors are not in step
            await asyncio.sleep(self.rng.uniform(0, think))
        page, failures = await self.load_review(), 0
        while time.perf_counter() < deadline and failures < MAX_ERRORS_IN_A_ROW:
            if page is None:
                failures += 1
                await asyncio.sleep(0.2)
                page = await self.load_review()
                continue
            _, turn_id, token = page
            if think:
                await asyncio.sleep(think)
            started = time.perf_counter()
            if not await self.submit(turn_id, token, int(think * 1000)):
                page, failures = None, failures + 1
                continue
            page = await self.load_review()
            if page is None:
                failures += 1
                continue
            done = time.perf_counter()
            self.stats.latencies["submit_next"].append((done - started) * 1000)
            if RECORDED in page[0]:
                self.stats.confirmed.append((self.username, turn_id, done - self.stats.started))
                failures = 0
            else:
                self.stats.error("not_recorded", f"turn {turn_id}: no confirmation message")
                failures += 1
        if failures >= MAX_ERRORS_IN_A_ROW:
            self.stats.error("gave_up", f"{self.username} after {failures} failures in a row")


async def run_contractors(config: dict) -> dict:
    """Sign every contractor in, then let them all work for `duration_s`."""
    import aiohttp

    stats, rng = ClientStats(), random.Random(config["seed"])
    timeout = aiohttp.ClientTimeout(total=config["timeout_s"])
    sessions = [
        aiohttp.ClientSession(
            # Production cookies are Secure; the proxy in front of gunicorn speaks https.
            cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[config["url"]]),
            headers={"X-Forwarded-Proto": "https"},
            timeout=timeout,
        )
        for _ in config["usernames"]
    ]
    contractors = [
        Contractor(session, config, username, stats, random.Random(rng.random()))
        for session, username in zip(sessions, config["usernames"], strict=True)
    ]
    try:
        gate = asyncio.Semaphore(8)  # password hashing is slow by design: not all at once

        async def login(contractor):
            async with gate:
                return await contractor.login()

        signed_in = await asyncio.gather(*(login(c) for c in contractors))
        working = [c for c, ok in zip(contractors, signed_in, strict=True) if ok]
        print("signed in", flush=True)  # the parent starts counting CPU time here
        load_before = os.getloadavg()[0]
        stats.started = time.perf_counter()
        deadline = stats.started + config["duration_s"]
        await asyncio.gather(*(c.work(deadline) for c in working))
        elapsed = time.perf_counter() - stats.started
    finally:
        await asyncio.gather(*(session.close() for session in sessions))
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "contractors": len(contractors),
        "signed_in": len(working),
        "elapsed_s": elapsed,
        "load_average_at_start": load_before,
        "latencies_ms": stats.latencies,
        "confirmed": stats.confirmed,
        "submitted": stats.submitted,
        "errors": dict(stats.errors),
        "error_examples": stats.examples,
        "client_cpu_s": usage.ru_utime + usage.ru_stime,
    }


def clients_main() -> None:
    """`web_load.py clients`: read the phase's config (JSON) on stdin, write results to its out."""
    config = json.loads(sys.stdin.read())
    results = asyncio.run(run_contractors(config))
    Path(config["out"]).write_text(json.dumps(results))


# --- CPU accounting from /proc (Linux) ---------------------------------------------------------

CLOCK_TICKS = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _proc_stat(pid: int) -> tuple[str, int, float] | None:
    """(command, parent pid, CPU seconds) of a process, or None when it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1 : raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2 :].split()
    return name, int(fields[1]), (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def cpu_snapshot(server_pid: int | None) -> dict:
    """CPU seconds so far: the whole machine (busy), gunicorn (master + workers), postgres."""
    snapshot = {"gunicorn": {}, "postgres": {}, "machine_busy_s": 0.0, "machine_total_s": 0.0}
    try:
        ticks = [int(v) for v in Path("/proc/stat").read_text().split("\n")[0].split()[1:]]
    except OSError:
        return snapshot
    snapshot["machine_total_s"] = sum(ticks[:8]) / CLOCK_TICKS
    snapshot["machine_busy_s"] = (sum(ticks[:8]) - ticks[3] - ticks[4]) / CLOCK_TICKS
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is None:
            continue
        name, parent, seconds = stat
        if server_pid is not None and server_pid in (int(entry.name), parent):
            snapshot["gunicorn"][entry.name] = seconds
        elif name == "postgres":
            snapshot["postgres"][entry.name] = seconds
    return snapshot


def cpu_merge(latest: dict, snapshot: dict) -> dict:
    """Fold a newer snapshot into `latest`, keeping processes that have exited since.

    PostgreSQL backends come and go (Django closes a connection older than CONN_MAX_AGE), so
    snapshots are taken every second and a backend's last reading is kept when it is gone.
    """
    merged = {group: {**latest[group], **snapshot[group]} for group in ("gunicorn", "postgres")}
    return {**snapshot, **merged}


def cpu_used(before: dict, after: dict) -> dict:
    """CPU seconds spent between two snapshots (processes started in between count whole)."""

    def spent(group: str) -> float:
        return sum(s - before[group].get(pid, 0.0) for pid, s in after[group].items())

    wall = after["machine_total_s"] - before["machine_total_s"]
    return {
        "gunicorn_s": spent("gunicorn"),
        "postgres_s": spent("postgres"),
        "machine_busy_s": after["machine_busy_s"] - before["machine_busy_s"],
        "machine_cpu_s": wall,
    }


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


# --- gunicorn --------------------------------------------------------------------------------


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
    workers: int,
    threads: int,
    collectstatic: bool = True,
) -> Server:
    """Collect static files (the manifest storage needs them), start gunicorn, wait for it."""
    env = server_env(database_url=database_url, static_root=static_root)
    if collectstatic:
        subprocess.run(
            [sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
        )
    headers = {"X-Forwarded-Proto": "https"}  # server_env's settings sit behind a TLS proxy
    return gunicorn_start(env=env, log=log, workers=workers, threads=threads, headers=headers)


def gunicorn_start(
    *, env: dict, log: Path, workers: int, threads: int = 1, headers: dict | None = None
) -> Server:
    """Start gunicorn on a free port with `env`; return once the sign-in page answers 200
    (requested with `headers`), or raise with its log."""
    port = free_port()
    command = [
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
    log.parent.mkdir(parents=True, exist_ok=True)
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = Server(process, f"http://127.0.0.1:{port}", log, command)
    health = urllib.request.Request(server.url + "/accounts/login/", headers=headers or {})
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited with {process.returncode}:\n{server.output()}")
        try:
            with urllib.request.urlopen(health, timeout=5) as response:
                if response.status == 200:
                    return server
        except (urllib.error.URLError, OSError):
            time.sleep(0.2)
    stop_server(server)
    raise RuntimeError(f"gunicorn did not answer within 60 s:\n{server.output()}")


def stop_server(server: Server) -> None:
    if server.process.poll() is None:
        server.process.terminate()  # the master stops its workers gracefully
        try:
            server.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(server.process.pid, 9)
            server.process.wait()


# --- One phase -------------------------------------------------------------------------------


def run_phase(
    *,
    url: str,
    usernames: list[str],
    password: str,
    think_s: float,
    duration_s: float,
    seed_value: int = 0,
    server_pid: int | None = None,
    timeout_s: float = 30.0,
) -> dict:
    """Run the contractors in their own process; sample the load average while they work."""
    with tempfile.TemporaryDirectory(prefix="web-load-") as folder:
        out = Path(folder) / "clients.json"
        config = {
            "url": url,
            "usernames": usernames,
            "password": password,
            "think_s": think_s,
            "duration_s": duration_s,
            "seed": seed_value,
            "timeout_s": timeout_s,
            "out": str(out),
        }
        process = subprocess.Popen(
            [sys.executable, str(Path(__file__).resolve()), "clients"],
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        process.stdin.write(json.dumps(config))
        process.stdin.close()
        process.stdout.readline()  # "signed in" (or nothing, when it failed)
        before = latest = cpu_snapshot(server_pid)
        loads, limit = [], time.monotonic() + duration_s + 300
        while process.poll() is None:
            if time.monotonic() > limit:
                process.kill()
                raise RuntimeError("the contractors' process did not finish")
            loads.append(os.getloadavg()[0])
            time.sleep(1)
            latest = cpu_merge(latest, cpu_snapshot(server_pid))
        if process.returncode != 0:
            raise RuntimeError(f"the contractors' process exited with {process.returncode}")
        process.stdout.close()
        results = json.loads(out.read_text())
    results["cpu"] = cpu_used(before, cpu_merge(latest, cpu_snapshot(server_pid)))
    results["load_average_during"] = loads
    results["think_s"], results["duration_s"] = think_s, duration_s
    return results


def summarize(name: str, results: dict, check: dict) -> dict:
    """The figures of a phase: judgements/s, latency percentiles, errors, the database check."""
    latencies = results["latencies_ms"]
    in_window = [c for c in results["confirmed"] if c[2] <= results["duration_s"]]
    loads = results["load_average_during"] or [float("nan")]
    cpu = results["cpu"]
    return {
        "phase": name,
        "contractors": results["contractors"],
        "signed_in": results["signed_in"],
        "think_s": results["think_s"],
        "duration_s": results["duration_s"],
        "judgements": len(results["confirmed"]),
        "judgements_per_s": len(in_window) / results["duration_s"],
        "latency_ms": {
            kind: {
                "n": len(values),
                "p50": percentile(values, 50),
                "p99": percentile(values, 99),
                "max": max(values) if values else None,
            }
            for kind, values in latencies.items()
        },
        "errors": sum(results["errors"].values()),
        "errors_by_kind": results["errors"],
        "error_examples": results["error_examples"],
        "submitted": results["submitted"],
        "database": check,
        "load_average_1min": {"max": max(loads), "mean": sum(loads) / len(loads)},
        "cpu_s": {
            "gunicorn": cpu["gunicorn_s"],
            "postgres": cpu["postgres_s"],
            "clients": results["client_cpu_s"],
            "machine_busy": cpu["machine_busy_s"],
            "machine_available": cpu["machine_cpu_s"],
        },
    }


def goal(rows: list[dict]) -> dict:
    """(a): p99 under 100 ms for every request and for submit + next turn, 0 errors; every
    phase: 0 lost, 0 duplicated. `met` is None when (a) did not run."""
    intact = all(r["database"]["lost"] == 0 and r["database"]["duplicated"] == 0 for r in rows)
    a = next((row for row in rows if row["phase"] == "a"), None)
    if a is None:
        return {"p99_ms": GOAL_P99_MS, "data_intact": intact, "met": None}
    p99s = {kind: a["latency_ms"][kind]["p99"] for kind in ("submit", "load", "submit_next")}
    fast = all(value is not None and value < GOAL_P99_MS for value in p99s.values())
    met = fast and a["errors"] == 0 and intact
    return {"p99_ms": GOAL_P99_MS, "a_p99_ms": p99s, "data_intact": intact, "met": met}


def _ms(value) -> str:
    return "–" if value is None else f"{value:.1f}"


def markdown(rows: list[dict]) -> str:
    lines = [
        "| phase | contractors | think (s) | judgements | judgements/s | submit p50 / p99 (ms) | "
        "next turn p50 / p99 (ms) | submit + next p50 / p99 (ms) | errors | in DB | lost | "
        "duplicated |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        lat, db = row["latency_ms"], row["database"]
        lines.append(
            f"| {row['phase']} | {row['contractors']} | {row['think_s']:g} | {row['judgements']} | "
            f"{row['judgements_per_s']:.1f} | {_ms(lat['submit']['p50'])} / "
            f"{_ms(lat['submit']['p99'])} | {_ms(lat['load']['p50'])} / {_ms(lat['load']['p99'])} "
            f"| {_ms(lat['submit_next']['p50'])} / {_ms(lat['submit_next']['p99'])} | "
            f"{row['errors']} | {db['in_database']} | {db['lost']} | {db['duplicated']} |"
        )
    lines += [
        "",
        "| phase | 1-min load avg (mean / max) | CPU s: gunicorn | postgres | clients | other | "
        "machine busy / available | gunicorn + postgres CPU ms per judgement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        load, cpu = row["load_average_1min"], row["cpu_s"]
        per = (cpu["gunicorn"] + cpu["postgres"]) * 1000 / max(row["judgements"], 1)
        other = cpu["machine_busy"] - cpu["gunicorn"] - cpu["postgres"] - cpu["clients"]
        lines.append(
            f"| {row['phase']} | {load['mean']:.2f} / {load['max']:.2f} | {cpu['gunicorn']:.1f} | "
            f"{cpu['postgres']:.1f} | {cpu['clients']:.1f} | {other:.1f} | "
            f"{cpu['machine_busy']:.1f} / {cpu['machine_available']:.1f} | {per:.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    if sys.argv[1:2] == ["clients"]:
        return clients_main()
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and made")
    parser.add_argument("--duration", type=float, default=60, help="seconds of each phase")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--turns", type=int, default=2000, help="judged turns to review")
    # Sync workers, two per core: a request here is CPU-bound Python (the database is local
    # and quick), so threads would only queue on the GIL; compose.yaml's 3 x 4 gthread is for
    # bigger machines. Requests beyond the 4 in progress wait in the listen backlog.
    parser.add_argument("--workers", type=int, default=4, help="gunicorn worker processes")
    parser.add_argument("--threads", type=int, default=1, help=">1: gthread workers")
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--work-dir", type=Path, default=var_dir / "bench-web-load")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    args = parser.parse_args()

    args.work_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    usernames = {
        name: [f"wl-{name}-{i:03d}" for i in range(PHASES[name][0])] for name in args.phases
    }
    # Everything below, this process included, uses the bench's database and no real broker.
    os.environ.update(
        DATABASE_URL=args.database_url,
        CELERY_BROKER_URL="memory://",
        DJANGO_SETTINGS_MODULE="config.settings",
    )
    print(f"making {args.database_url} and migrating it", file=sys.stderr, flush=True)
    recreate_database(args.database_url)
    manage("migrate", "--noinput", "-v", "0", env=dict(os.environ))

    import django

    django.setup()
    from django.db import connections

    started = time.perf_counter()
    seed(usernames=sum(usernames.values(), []), turns=args.turns, password=password)
    seed_s = time.perf_counter() - started
    print(f"seeded {args.turns} judged turns in {seed_s:.0f} s", file=sys.stderr, flush=True)
    connections.close_all()

    server = start_server(
        database_url=args.database_url,
        static_root=args.work_dir / "static",
        log=args.work_dir / "gunicorn.log",
        workers=args.workers,
        threads=args.threads,
    )
    rows = []
    load_before = os.getloadavg()[0]
    try:
        for number, name in enumerate(args.phases):
            contractors, think = PHASES[name]
            print(
                f"phase {name}: {contractors} contractors, think {think:g} s, {args.duration:g} s",
                file=sys.stderr,
                flush=True,
            )
            results = run_phase(
                url=server.url,
                usernames=usernames[name],
                password=password,
                think_s=think,
                duration_s=args.duration,
                seed_value=number,
                server_pid=server.process.pid,
            )
            check = database_check(usernames=usernames[name], confirmed=results["confirmed"])
            connections.close_all()
            rows.append(summarize(name, results, check))
            print(markdown(rows[-1:]).split("\n")[2], file=sys.stderr, flush=True)
    finally:
        stop_server(server)
    load_after = os.getloadavg()[0]
    from django.db import connection

    report = {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "database": connection.vendor,
        "server": " ".join(server.command[2:]).replace(server.url.split("//")[1], "HOST:PORT"),
        "turns": args.turns,
        "seed_s": seed_s,
        "load_average_before_after": [load_before, load_after],
        "goal": goal(rows),
        "results": rows,
    }
    print(markdown(rows))
    print(
        f"\n{report['cpu']}, {report['cores']} cores; {report['database']}; {report['server']}; "
        f"{args.turns} judged turns; {args.duration:g} s per phase; 1-min load average "
        f"{load_before:.2f} before, {load_after:.2f} after; goal met: {report['goal']['met']} "
        f"(data intact: {report['goal']['data_intact']})"
    )
    for row in rows:
        if row["errors"]:
            print(f"{row['phase']} errors: {row['errors_by_kind']}; e.g. {row['error_examples']}")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
