"""Scale: a million judgements on one box (issue 16). Builds a PostgreSQL database of
--judgements judgements and measures, phase by phase:

    .venv/bin/python bench/scale.py --database-url postgres://postgres@127.0.0.1/alignlab_scale \\
        --reuse --json var/bench/scale.json [--phases build summaries pages sql snapshot export]

  build     drop and make the database, migrate it, load it (bench/scale_build.py: metadata
            through the ORM, conversations/turns/responses/judgements by COPY); with --reuse
            skipped when the database already holds a build of this size;
  summaries what the periodic tasks compute and the quality and Elo pages read past their live
            limits (collection.refresh_quality, evals.refresh_elo), each in a child process:
            seconds and peak RSS;
  pages     granian with production settings (bench/web_server.py, DEBUG=0), users signed in
            through the login form (bench/web_clients.py), then every page and API list a
            contractor, researcher or admin opens, --warmup times then --repeats times each,
            one request at a time: p50/p99 (nearest rank), status, size;
  sql       the same pages through Django's test client in this process against the same
            database, each statement captured with connection.execute_wrapper; every SELECT is
            EXPLAINed, the slowest ones EXPLAIN ANALYZEd, and sequential scans over the
            judgements, turns, responses or conversations tables reported;
  snapshot  collection.snapshots.snapshot_create of every judgement, in a child process:
            seconds and peak RSS (resource.getrusage);
  export    collection.exports.export_write of that snapshot as hh-rlhf jsonl, TRL jsonl and
            TRL Parquet, each in a child process: rows, rows/s, peak RSS, file size;
  load      bench/web_load.py's phase a against this database (50 of its contractors, 1 s
            think time, submit + next through the review queue): judgements/s, latency, errors,
            lost and duplicated judgements. It adds judgements, so a later --reuse rebuilds.

Goals (issue 16, must-show 1): every page and API list p99 < 250 ms; snapshot of everything
< 120 s; jsonl export >= 50,000 pairs/s with peak RSS < 400 MB; submit + next p99 < 150 ms
at 50 contractors with 1 s think time, 0 errors, 0 lost or duplicated judgements.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import re
import resource
import secrets
import signal
import subprocess
import sys
import time
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, write_json  # noqa: E402
from bench.scale_build import USER_PREFIX, Size, build, holds, passwords_reset  # noqa: E402
from bench.web_load import percentile  # noqa: E402
from bench.web_server import (  # noqa: E402
    SERVERS,
    database_check,
    manage,
    recreate_database,
    server_env,
    start_server,
    stop_server,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/alignlab_scale"
PHASES = ("build", "summaries", "pages", "sql", "snapshot", "export", "load")
LOAD_CONTRACTORS = 50
EXPORTS = (("hh-rlhf", "jsonl"), ("trl", "jsonl"), ("trl", "parquet"))
GOALS = {"page_p99_ms": 250.0, "snapshot_s": 120.0, "jsonl_rows_per_s": 50_000, "jsonl_rss_mb": 400,
         "load_submit_next_p99_ms": 150.0}  # fmt: skip
BIG_TABLES = ("collection_judgement", "collection_turn", "collection_response",
              "collection_conversation")  # fmt: skip
SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")
SNAPSHOT_NAME = "scale: everything"


def endpoints(only: list[str] | None = None) -> list[tuple[str, str, str]]:
    """(role, name, path) of every page and API list measured (those whose "role: name"
    contains one of `only`, when given); needs django.setup()."""
    return [
        (role, name, path)
        for role, name, path in _endpoints()
        if not only or any(part in f"{role}: {name}" for part in only)
    ]


def _endpoints() -> list[tuple[str, str, str]]:
    from django.contrib.auth import get_user_model
    from django.urls import reverse

    from collection.models import Campaign

    campaign = Campaign.objects.order_by("pk").first()
    contractor = get_user_model().objects.get(username=f"{USER_PREFIX}c-0000")
    judgements = reverse("judgement-list")
    return [
        ("contractor", "dashboard", reverse("collection:dashboard")),
        ("contractor", "review next item", reverse("collection:review")),
        ("researcher", "quality", reverse("collection:quality")),
        ("researcher", "datasets", reverse("collection:datasets")),
        ("researcher", "API judgements", judgements),
        ("researcher", "API judgements ?campaign", f"{judgements}?campaign={campaign.pk}"),
        ("researcher", "API judgements ?contractor", f"{judgements}?contractor={contractor.pk}"),
        ("researcher", "leaderboard", reverse("evals:leaderboard")),
        ("researcher", "Elo page", reverse("evals:elo")),
        ("researcher", "API Elo", reverse("elo-list")),
        ("admin", "campaigns", reverse("collection:campaigns")),
        ("admin", "conversations", reverse("collection:conversations")),
        ("admin", "quality", reverse("collection:quality")),
    ]


ROLE_USERS = {"contractor": f"{USER_PREFIX}c-0000", "researcher": f"{USER_PREFIX}researcher",
              "admin": f"{USER_PREFIX}admin"}  # fmt: skip


# --- pages: the web server, one request at a time-----------------------------------------------


async def _measure_pages(url: str, password: str, pages, warmup: int, repeats: int,
                         budget_s: float) -> dict:  # fmt: skip
    """Sign each role in (web_clients.Contractor: the login form), then time each page."""
    import random

    import aiohttp

    from bench.web_clients import ClientStats, Contractor

    stats = ClientStats(latencies=defaultdict(list))
    config = {"url": url, "password": password}
    sessions, users = [], {}
    try:
        for role, username in ROLE_USERS.items():
            session = aiohttp.ClientSession(
                cookie_jar=aiohttp.CookieJar(unsafe=True, treat_as_secure_origin=[url]),
                headers={"X-Forwarded-Proto": "https"},
                timeout=aiohttp.ClientTimeout(total=150),
            )
            sessions.append(session)
            users[role] = Contractor(session, config, username, stats, random.Random(0))
            if not await users[role].login():
                raise RuntimeError(f"{username} could not sign in: {stats.examples}")
        results = {}
        for role, name, path in pages:
            user, key = users[role], f"{role}: {name}"
            statuses, sizes, started = [], [], time.perf_counter()
            for number in range(warmup + repeats):
                measured = number >= warmup or time.perf_counter() - started > budget_s / 4
                got = await user.request(key if measured else "warmup", "GET", path)
                statuses.append(got[0] if got else None)
                sizes.append(len(got[1]) if got else 0)
                if time.perf_counter() - started > budget_s:
                    break  # a slow page: fewer warm-ups and repeats, said in `n`
            times = stats.latencies[key]
            results[key] = {
                "path": path,
                "n": len(times),
                "p50_ms": percentile(times, 50),
                "p99_ms": percentile(times, 99),
                "max_ms": max(times) if times else None,
                "statuses": sorted(set(map(str, statuses))),
                "bytes": max(sizes),
            }
            print(f"  {key}: p50 {_ms(results[key]['p50_ms'])} ms, p99 "
                  f"{_ms(results[key]['p99_ms'])} ms, n {len(times)}, {results[key]['statuses']}",
                  flush=True)  # fmt: skip
        return results
    finally:
        await asyncio.gather(*(session.close() for session in sessions))


def phase_pages(args, password: str) -> dict:
    from django.db import connections

    pages = endpoints(args.only)
    connections.close_all()
    server = start_server(
        database_url=args.database_url,
        static_root=args.work_dir / "static",
        log=args.work_dir / f"{args.server}.log",
        workers=args.workers,
        threads=args.threads,
        server=args.server,
    )
    try:
        return asyncio.run(
            _measure_pages(server.url, password, pages, args.warmup, args.repeats, args.budget)
        )
    finally:
        stop_server(server)


# --- sql: the statements each page runs, and their plans ----------------------------------------


class Capture:
    """connection.execute_wrapper: every statement with its params and milliseconds."""

    def __init__(self):
        self.statements: list[dict] = []

    def __call__(self, execute, sql, params, many, context):
        started = time.perf_counter()
        try:
            return execute(sql, params, many, context)
        finally:
            ms = (time.perf_counter() - started) * 1000
            self.statements.append({"sql": sql, "params": params, "ms": ms})


def explain(sql: str, params, *, analyze: bool) -> str:
    from django.db import DatabaseError, connection

    options = "ANALYZE, BUFFERS" if analyze else "COSTS"
    with connection.cursor() as cursor:
        cursor.execute("SET statement_timeout = '60s'")
        try:
            cursor.execute(f"EXPLAIN ({options}) {sql}", params)
            return "\n".join(row[0] for row in cursor.fetchall())
        except DatabaseError as error:  # e.g. past the timeout: the plan without ANALYZE
            if not analyze:
                return f"EXPLAIN failed: {error}"
            return f"EXPLAIN ANALYZE failed ({error}); plan:\n" + explain(
                sql, params, analyze=False
            )
        finally:
            cursor.execute("SET statement_timeout = 0")


def seq_scans(plan: str) -> list[str]:
    return sorted({t for t in SEQ_SCAN.findall(plan) if t in BIG_TABLES})


class RequestTimeout(Exception):
    pass


@contextlib.contextmanager
def alarm(seconds: int):
    """Stop a request that runs past `seconds` (SIGALRM): the statements it ran so far stay."""

    def stop(signum, frame):
        raise RequestTimeout

    previous = signal.signal(signal.SIGALRM, stop)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def phase_sql(args, slow: set[str] = frozenset(), limit_s: int = 60, analyzed: int = 3) -> dict:
    """Each page once through the test client (after a warm-up), its statements captured."""
    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client

    if not (args.work_dir / "static" / "staticfiles.json").exists():  # sql without pages
        subprocess.run([sys.executable, "manage.py", "collectstatic", "--noinput", "-v", "0"],
                       cwd=ROOT, check=True)  # fmt: skip
    users = {role: get_user_model().objects.get(username=name) for role, name in ROLE_USERS.items()}
    report = {}
    for role, name, path in endpoints(args.only):
        client = Client(HTTP_X_FORWARDED_PROTO="https")
        client.force_login(users[role])
        if name not in slow:  # a warm-up, but not for a page the pages phase found slow
            with contextlib.suppress(RequestTimeout), alarm(limit_s):
                client.get(path, secure=True)
        capture = Capture()
        with connection.execute_wrapper(capture):
            started = time.perf_counter()
            try:
                with alarm(limit_s):
                    status = client.get(path, secure=True).status_code
            except RequestTimeout:
                status = f"stopped after {limit_s} s"
            total_ms = (time.perf_counter() - started) * 1000
        selects = [s for s in capture.statements if s["sql"].lstrip().upper().startswith("SELECT")]
        scanned = {}
        for statement in selects:
            tables = seq_scans(explain(statement["sql"], statement["params"], analyze=False))
            if tables:
                scanned.setdefault(statement["sql"], tables)
        slowest = sorted(selects, key=lambda s: -s["ms"])[:analyzed]
        report[f"{role}: {name}"] = {
            "path": path,
            "status": status,
            "request_ms": total_ms,
            "statements": len(capture.statements),
            "sql_ms": sum(s["ms"] for s in capture.statements),
            "seq_scan_statements": [{"sql": sql, "tables": t} for sql, t in scanned.items()],
            "slowest": [
                {
                    "ms": s["ms"],
                    "sql": s["sql"],
                    "params": [repr(p) for p in (s["params"] or ())],
                    "plan": (plan := explain(s["sql"], s["params"], analyze=True)),
                    "seq_scans": seq_scans(plan),
                }
                for s in slowest
            ],
        }
        entry = report[f"{role}: {name}"]
        print(f"  {role}: {name}: {status}, {total_ms:.0f} ms, {entry['statements']} statements "
              f"({entry['sql_ms']:.0f} ms), seq scans over big tables in "
              f"{len(entry['seq_scan_statements'])}", flush=True)  # fmt: skip
    return report


# --- snapshot and export: child processes, peak RSS ---------------------------------------------


def child(argv: list[str]) -> None:
    """`scale.py child snapshot` / `scale.py child export ID FMT FILE_FORMAT PATH`: one
    measurement in a fresh process; its figures as JSON on the last line of stdout."""
    import django

    django.setup()
    from django.contrib.auth import get_user_model

    from collection.exports import export_write
    from collection.models import DatasetSnapshot
    from collection.snapshots import snapshot_create

    started = time.perf_counter()
    if argv[0] == "summary":  # what the periodic tasks compute, which the pages then read
        if argv[1] == "quality":
            from collection.quality_summaries import quality_summaries_refresh

            figures = quality_summaries_refresh()
        else:
            from evals.arm_elo import elo_summary_refresh

            figures = {"cells": len(elo_summary_refresh().cells)}
    elif argv[0] == "snapshot":
        researcher = get_user_model().objects.get(username=ROLE_USERS["researcher"])
        snapshot = snapshot_create(filter={}, created_by=researcher, name=SNAPSHOT_NAME)
        figures = {"snapshot": snapshot.pk, "counts": snapshot.counts}
    else:
        snapshot_id, fmt, file_format, path = argv[1:5]
        snapshot = DatasetSnapshot.objects.get(pk=int(snapshot_id))
        rows = export_write(snapshot=snapshot, fmt=fmt, file_format=file_format, path=path)
        figures = {"rows": rows, "bytes": Path(path).stat().st_size}
        Path(path).unlink()
    seconds = time.perf_counter() - started
    usage = resource.getrusage(resource.RUSAGE_SELF)
    figures.update(seconds=seconds, peak_rss_mb=usage.ru_maxrss / 1024,
                   cpu_s=usage.ru_utime + usage.ru_stime)  # fmt: skip
    if "rows" in figures:
        figures["rows_per_s"] = figures["rows"] / seconds
    print(json.dumps(figures))


def run_child(*argv: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), "child", *argv],
        cwd=ROOT, env=dict(os.environ), capture_output=True, text=True,
    )  # fmt: skip
    if done.returncode != 0:
        return {"error": done.stderr[-3000:], "returncode": done.returncode}
    return json.loads(done.stdout.strip().splitlines()[-1])


def phase_summaries() -> dict:
    """The periodic tasks' summaries (quality: collection.refresh_quality; Elo:
    evals.refresh_elo), each in a child process: their time and peak RSS, and the rows the
    quality and Elo pages then read."""
    results = {}
    for name in ("quality", "elo"):
        results[name] = figures = run_child("summary", name)
        print(f"  {name} summary: {figures}", flush=True)
    return results


def phase_load(args, password: str) -> dict:
    """bench/web_load.py's phase a against this database: LOAD_CONTRACTORS of the build's
    contractors, 1 s think time, submit + next through the review queue for --load-duration
    seconds; then every confirmed submit looked up (lost, duplicated). It adds judgements, so
    a later --reuse builds again; run it last."""
    from django.db import connections

    from bench.web_load import run_phase, summarize

    usernames = [f"{USER_PREFIX}c-{i:04d}" for i in range(LOAD_CONTRACTORS)]
    connections.close_all()
    server = start_server(database_url=args.database_url, static_root=args.work_dir / "static",
                          log=args.work_dir / f"{args.server}-load.log", workers=args.workers,
                          threads=args.threads, server=args.server)  # fmt: skip
    try:
        results = run_phase(url=server.url, usernames=usernames, password=password,
                            think_s=1.0, duration_s=args.load_duration,
                            server_pid=server.process.pid)  # fmt: skip
    finally:
        stop_server(server)
    checked = database_check(usernames=usernames, confirmed=results["confirmed"])
    row = summarize("a at scale", results, checked)
    connections.close_all()
    latency = row["latency_ms"]["submit_next"]
    database = row["database"]
    print(f"  {row['judgements_per_s']:.1f} judgements/s, submit + next p50 {latency['p50']:.0f} "
          f"/ p99 {latency['p99']:.0f} ms, {row['errors']} errors, lost {database['lost']}, "
          f"duplicated {database['duplicated']}", flush=True)  # fmt: skip
    return row


def phase_snapshot() -> dict:
    figures = run_child("snapshot")
    print(f"  snapshot: {figures}", flush=True)
    return figures


def phase_export(args, snapshot_id: int | None) -> dict:
    from collection.models import Campaign, DatasetSnapshot

    if snapshot_id is None and not args.export_campaigns:
        latest = DatasetSnapshot.objects.filter(name=SNAPSHOT_NAME).order_by("-pk").first()
        if latest is None:
            raise SystemExit("no snapshot to export: run the snapshot phase first")
        snapshot_id = latest.pk
    results = {}
    if args.export_campaigns:  # a part of the set: the same rate, in less time
        from collection.snapshots import snapshot_create

        campaigns = list(
            Campaign.objects.order_by("pk").values_list("pk", flat=True)[: args.export_campaigns]
        )
        snapshot_id = snapshot_create(
            filter={"campaigns": campaigns}, name=f"scale: {len(campaigns)} campaigns"
        ).pk
        results["snapshot_campaigns"] = campaigns
    for fmt, file_format in EXPORTS:
        if args.export_formats and f"{fmt}-{file_format}" not in args.export_formats:
            continue
        path = args.work_dir / f"export-{fmt}.{file_format}"
        results[f"{fmt} {file_format}"] = figures = run_child(
            "export", str(snapshot_id), fmt, file_format, str(path)
        )
        print(f"  export {fmt} {file_format}: {figures}", flush=True)
    return results


# --- The run ------------------------------------------------------------------------------------


def goals(report: dict) -> dict:
    out = {}
    pages = report.get("pages")
    if pages:
        slow = {k: v["p99_ms"] for k, v in pages.items() if (v["p99_ms"] or 1e9) >= 250}
        bad = {k: v["statuses"] for k, v in pages.items() if v["statuses"] != ["200"]}
        out["pages_p99_under_250_ms"] = {"met": not slow and not bad, "failing": slow,
                                         "not_200": bad}  # fmt: skip
    snap = report.get("snapshot")
    if snap:
        out["snapshot_under_120_s"] = {"met": snap.get("seconds", 1e9) < 120,
                                       "seconds": snap.get("seconds")}  # fmt: skip
    exports = report.get("export")
    if exports:
        for key, figures in exports.items():
            if key.endswith("jsonl") and "error" not in figures:
                out[f"export {key}"] = {
                    "met": figures.get("rows_per_s", 0) >= GOALS["jsonl_rows_per_s"]
                    and figures.get("peak_rss_mb", 1e9) < GOALS["jsonl_rss_mb"],
                    "rows_per_s": figures.get("rows_per_s"),
                    "peak_rss_mb": figures.get("peak_rss_mb"),
                }
    load = report.get("load")
    if load:
        p99 = load["latency_ms"]["submit_next"]["p99"]
        intact = load["database"]["lost"] == 0 and load["database"]["duplicated"] == 0
        out["load_submit_next_p99_under_150_ms"] = {
            "met": p99 is not None and p99 < GOALS["load_submit_next_p99_ms"]
            and load["errors"] == 0 and intact,
            "p99_ms": p99, "errors": load["errors"], "data_intact": intact,
        }  # fmt: skip
    return out


def _ms(value) -> str:
    return "–" if value is None else f"{value:,.0f}"


def markdown(report: dict) -> str:
    """The figures as BENCHMARKS.md tables."""
    lines = []
    if report.get("pages"):
        sql = report.get("sql") or {}
        lines += ["| role: page | n | p50 (ms) | p99 (ms) | status | statements | seq scan over "
                  "a big table in | slowest statement (ms) |", "| --- | --- | --- | --- | --- | "
                  "--- | --- | --- |"]  # fmt: skip
        for key, page in report["pages"].items():
            found = sql.get(key, {})
            scans = sorted({t for s in found.get("seq_scan_statements", []) for t in s["tables"]})
            slowest = found.get("slowest") or [{}]
            lines.append(
                f"| {key} | {page['n']} | {_ms(page['p50_ms'])} | {_ms(page['p99_ms'])} | "
                f"{'/'.join(page['statuses'])} | {found.get('statements', '–')} | "
                f"{', '.join(scans) or 'none'} | {_ms(slowest[0].get('ms'))} |"
            )
    if report.get("snapshot"):
        snap = report["snapshot"]
        lines += [
            "",
            f"snapshot of everything: {snap.get('seconds', 0):.1f} s, peak RSS "
            f"{snap.get('peak_rss_mb', 0):.0f} MB, CPU {snap.get('cpu_s', 0):.1f} s",
        ]
    if report.get("export"):
        lines += ["", "| export | rows | seconds | rows/s | peak RSS (MB) | MB written |",
                  "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
        for key, fig in report["export"].items():
            if isinstance(fig, dict) and "rows" in fig:
                lines.append(f"| {key} | {fig['rows']:,} | {fig['seconds']:.1f} | "
                             f"{fig['rows_per_s']:,.0f} | {fig['peak_rss_mb']:.0f} | "
                             f"{fig['bytes'] / 2**20:,.0f} |")  # fmt: skip
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL)
    parser.add_argument("--judgements", type=int, default=1_000_000)
    parser.add_argument("--contractors", type=int, default=500)
    parser.add_argument("--campaigns", type=int, default=20)
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument(
        "--reuse",
        action="store_true",
        help="skip the build when the database holds one of this size",
    )
    parser.add_argument("--only", nargs="+", help='pages whose "role: name" contains one of these')
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument(
        "--budget",
        type=float,
        default=90,
        help="seconds per page at most (a slow page gets fewer repeats)",
    )
    parser.add_argument(
        "--export-campaigns",
        type=int,
        default=0,
        help="export a snapshot of the first N campaigns (0: of everything)",
    )
    parser.add_argument(
        "--export-formats",
        nargs="+",
        choices=[f"{f}-{ff}" for f, ff in EXPORTS],
        help="default: all",
    )
    parser.add_argument("--server", choices=SERVERS, default="granian", help="the web server")
    parser.add_argument("--workers", type=int, help="worker processes (granian 2, gunicorn 4)")
    parser.add_argument("--threads", type=int, help="threads per worker (granian 2, gunicorn 1)")
    parser.add_argument("--load-duration", type=float, default=60, help="seconds of the load")
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--work-dir", type=Path, default=var_dir / "bench-scale")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    return parser.parse_args()  # fmt: skip


def phase_build(args, size: Size, password: str) -> dict | None:
    import django

    if args.reuse:
        django.setup()
        from django.db import OperationalError

        try:
            held = holds(size)
        except OperationalError:  # no such database yet
            held = False
        if held:
            print("the database holds the build: reused", flush=True)
            passwords_reset(password)
            return None
        from django.db import connections

        connections.close_all()
    print(f"making {args.database_url} and migrating it", flush=True)
    recreate_database(args.database_url)
    manage("migrate", "--noinput", "-v", "0", env=dict(os.environ))
    django.setup()
    started = time.perf_counter()
    figures = build(size=size, password=password, progress_every=100_000)
    figures["seconds"]["total"] = time.perf_counter() - started
    print(f"  built: {figures}", flush=True)
    return figures


def main() -> None:
    if sys.argv[1:2] == ["child"]:
        return child(sys.argv[2:])
    args = arguments()
    args.work_dir.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    # This process, its children and the web server: production settings on the bench's database.
    os.environ.update(server_env(database_url=args.database_url,
                                 static_root=args.work_dir / "static"))  # fmt: skip
    os.environ.update(ALLOWED_HOSTS="127.0.0.1,localhost,testserver",
                      DJANGO_SETTINGS_MODULE="config.settings")  # fmt: skip
    size = Size(args.judgements, args.contractors, args.campaigns)
    report = {"command": " ".join(sys.argv), "cpu": cpu_model(), "cores": os.cpu_count(),
              "load_average_before": os.getloadavg(), "size": size.expected(),
              "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}  # fmt: skip
    import django

    if "build" in args.phases:
        report["build"] = phase_build(args, size, password)
    else:
        django.setup()
        passwords_reset(password)
    django.setup()
    snapshot_id = None
    if "summaries" in args.phases:
        print("summaries (the periodic tasks' work):", flush=True)
        report["summaries"] = phase_summaries()
    if "pages" in args.phases:
        print(f"pages ({args.server}):", flush=True)
        report["pages"] = phase_pages(args, password)
    if "sql" in args.phases:
        print("sql (test client, execute_wrapper, EXPLAIN):", flush=True)
        slow = {key.split(": ", 1)[1] for key, page in report.get("pages", {}).items()
                if (page["p50_ms"] or 1e9) > 5000}  # fmt: skip
        report["sql"] = phase_sql(args, slow)
    if "snapshot" in args.phases:
        report["snapshot"] = phase_snapshot()
        snapshot_id = report["snapshot"].get("snapshot")
    if "export" in args.phases:
        report["export"] = phase_export(args, snapshot_id)
    if "load" in args.phases:
        print(f"load ({LOAD_CONTRACTORS} contractors, 1 s think, {args.server}):", flush=True)
        report["load"] = phase_load(args, password)
    report["load_average_after"] = os.getloadavg()
    report["goals"] = goals(report)
    print(markdown(report))
    print(json.dumps(report["goals"], indent=2))
    write_json(args.json, report)


if __name__ == "__main__":
    main()
