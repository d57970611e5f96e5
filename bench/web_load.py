"""Web load of the collection pages: simulated contractors judging pre-generated turns through
the review queue, against the production web server (granian, DEBUG=0, behind a pretend TLS
proxy) on PostgreSQL.

    .venv/bin/python bench/web_load.py --duration 60 --json var/bench/web_load.json

The script drops and makes its own database (--database-url, default
postgres://postgres@127.0.0.1:5432/alignlab_bench; sqlite:///PATH works too), migrates it,
seeds it through the ORM and the collection services (contractors, a campaign on a placeholder
model version, two-turn conversations whose responses are stored and which their author has
judged: no model runs), collects static files, starts granian as compose.yaml does (2 worker
processes of 2 threads: --workers, --threads; --server gunicorn runs the server before it, for a
comparison) and runs the contractors in a separate process with an async HTTP client (aiohttp). Each
contractor signs in through the login form, then loops: think, POST a judgement of the turn the
review page shows as the page's boosted form does (htmx: the answer is the next turn, with the
"recorded" message that confirms the submit; with --no-htmx, as without JavaScript: a plain
POST, its redirect, then a GET of the review page). Phases, each with its own contractors so
each starts at the front of the queue:

  a     50 contractors, 1 s think time (each starts after a random part of it, so they do not
        all submit in the same instant);
  b10   closed loop, no think time, 10 contractors;
  b50   closed loop, no think time, 50 contractors.

After each phase the judgements in the database are compared with the submits the clients saw
confirmed: lost = confirmed but not stored, duplicated = a (turn, contractor) pair stored twice.
Goal: in (a) p99 < 100 ms (of each request, and of submit + next turn as the contractor waits
for it) and 0 errors; 0 lost or duplicated judgements in every phase.

Here: the phases, the CPU accounting, the figures and the command line. The contractors:
bench/web_clients.py; the database, the seeding and the server: bench/web_server.py.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, write_json  # noqa: E402
from bench.web_clients import clients_main  # noqa: E402
from bench.web_server import (  # noqa: E402
    SERVERS,
    database_check,
    manage,
    recreate_database,
    seed,
    start_server,
    stop_server,
)

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/alignlab_bench"
# name → (contractors, think time in seconds)
PHASES = {"a": (50, 1.0), "b10": (10, 0.0), "b50": (50, 0.0)}
GOAL_P99_MS = 100.0


def percentile(values: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100): a value that was measured, never interpolated."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


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
    """CPU seconds so far: the whole machine (busy), the web server (main process + workers),
    postgres."""
    snapshot = {"server": {}, "postgres": {}, "machine_busy_s": 0.0, "machine_total_s": 0.0}
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
            snapshot["server"][entry.name] = seconds
        elif name == "postgres":
            snapshot["postgres"][entry.name] = seconds
    return snapshot


def cpu_merge(latest: dict, snapshot: dict) -> dict:
    """Fold a newer snapshot into `latest`, keeping processes that have exited since.

    PostgreSQL backends come and go (Django closes a connection older than CONN_MAX_AGE), so
    snapshots are taken every second and a backend's last reading is kept when it is gone.
    """
    merged = {group: {**latest[group], **snapshot[group]} for group in ("server", "postgres")}
    return {**snapshot, **merged}


def cpu_used(before: dict, after: dict) -> dict:
    """CPU seconds spent between two snapshots (processes started in between count whole)."""

    def spent(group: str) -> float:
        return sum(s - before[group].get(pid, 0.0) for pid, s in after[group].items())

    wall = after["machine_total_s"] - before["machine_total_s"]
    return {
        "server_s": spent("server"),
        "postgres_s": spent("postgres"),
        "machine_busy_s": after["machine_busy_s"] - before["machine_busy_s"],
        "machine_cpu_s": wall,
    }


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
    htmx: bool = True,
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
            "htmx": htmx,
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
            "server": cpu["server_s"],
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
        "| phase | 1-min load avg (mean / max) | CPU s: web server | postgres | clients | other | "
        "machine busy / available | web server + postgres CPU ms per judgement |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        load, cpu = row["load_average_1min"], row["cpu_s"]
        per = (cpu["server"] + cpu["postgres"]) * 1000 / max(row["judgements"], 1)
        other = cpu["machine_busy"] - cpu["server"] - cpu["postgres"] - cpu["clients"]
        lines.append(
            f"| {row['phase']} | {load['mean']:.2f} / {load['max']:.2f} | {cpu['server']:.1f} | "
            f"{cpu['postgres']:.1f} | {cpu['clients']:.1f} | {other:.1f} | "
            f"{cpu['machine_busy']:.1f} / {cpu['machine_available']:.1f} | {per:.1f} |"
        )
    return "\n".join(lines)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and made")
    parser.add_argument("--duration", type=float, default=60, help="seconds of each phase")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=list(PHASES))
    parser.add_argument("--turns", type=int, default=2000, help="judged turns to review")
    # Unset: web_server.DEFAULT_WORKERS, a worker process per core with two threads each for
    # granian. A request here is CPU-bound Python (the database is local and quick), so more
    # threads only queue on the GIL, and a second thread runs while the first waits on
    # PostgreSQL (BENCHMARKS.md, session 14: 2 x 2 beat 4 x 1 and 2 x 4).
    parser.add_argument("--server", choices=SERVERS, default="granian", help="the web server")
    parser.add_argument("--workers", type=int, help="worker processes (granian 2, gunicorn 4)")
    parser.add_argument(
        "--threads", type=int, help="threads per worker (granian 2; gunicorn 1: sync workers)"
    )
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--work-dir", type=Path, default=var_dir / "bench-web-load")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "--no-htmx",
        dest="htmx",
        action="store_false",
        help="judge as without JavaScript: a plain POST, its redirect, then a GET of the next turn",
    )
    return parser.parse_args()


def main() -> None:
    if sys.argv[1:2] == ["clients"]:
        return clients_main()
    args = arguments()
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
        log=args.work_dir / f"{args.server}.log",
        workers=args.workers,
        threads=args.threads,
        server=args.server,
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
                htmx=args.htmx,
            )
            check = database_check(usernames=usernames[name], confirmed=results["confirmed"])
            connections.close_all()
            rows.append(summarize(name, results, check))
            print(markdown(rows[-1:]).split("\n")[2], file=sys.stderr, flush=True)
    finally:
        stop_server(server)
    report_write(args, server, rows, seed_s=seed_s, load_before=load_before)


def report_write(args, server, rows: list[dict], *, seed_s: float, load_before: float) -> None:
    """Print the phases' tables and the conditions of the run; write them to --json."""
    load_after = os.getloadavg()[0]
    from django.db import connection

    report = {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "database": connection.vendor,
        "server": " ".join(server.command[2:])
        .replace(server.url.split("//")[1], "HOST:PORT")
        .replace(f"--port {server.url.rsplit(':', 1)[1]}", "--port PORT"),
        "turns": args.turns,
        "htmx": args.htmx,
        "seed_s": seed_s,
        "load_average_before_after": [load_before, load_after],
        "goal": goal(rows),
        "results": rows,
    }
    print(markdown(rows))
    print(
        f"\n{report['cpu']}, {report['cores']} cores; {report['database']}; {report['server']}; "
        f"{args.turns} judged turns; {'htmx' if args.htmx else 'plain form'} submits; "
        f"{args.duration:g} s per phase; 1-min load average "
        f"{load_before:.2f} before, {load_after:.2f} after; goal met: {report['goal']['met']} "
        f"(data intact: {report['goal']['data_intact']})"
    )
    for row in rows:
        if row["errors"]:
            print(f"{row['phase']} errors: {row['errors_by_kind']}; e.g. {row['error_examples']}")
    write_json(args.json, report)


if __name__ == "__main__":
    main()
