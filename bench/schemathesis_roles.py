"""schemathesis over /api/schema/ as every role, against granian (DEBUG=0 over plain HTTP) on
PostgreSQL: anonymous, two contractors (alice, bob), a researcher (rita), an admin (adam).

    .venv/bin/python bench/schemathesis_roles.py --json var/bench/schemathesis.json

The script drops and makes its own database (--database-url, default
postgres://postgres@127.0.0.1:5432/alignlab_schemathesis), migrates it and seeds it: the demo
users, dataset and snapshot (`seed_demo --force`), an active placeholder LM with the demo campaign
on it (no model ever runs: no Celery worker is started, queued tasks stay in the broker) and one
conversation per contractor with a ready turn. It collects static files, starts granian (as
compose.yaml does) with ALIGNLAB_HTTPS=0, makes an API token per user (`drf_create_token`),
saves the schema as the admin sees it, and runs schemathesis once per role: every phase
(examples, coverage, fuzzing, stateful), every check (with the custom `refusals_are_documented`
of bench/schemathesis_hooks.py), --max-examples examples per operation, under schemathesis.toml
(the operations that may refuse schema-valid data for a listed rule). Each role's output and JUnit
report go to --work-dir; the summary (per role: operations, test cases, failures by check) is
printed as a Markdown table for SECURITY.md and written to --json.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import subprocess
import sys
import time
import urllib.request
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.machine import cpu_model, write_json  # noqa: E402
from bench.web_server import manage, recreate_database, server_start, stop_server  # noqa: E402

DEFAULT_DATABASE_URL = "postgres://postgres@127.0.0.1:5432/alignlab_schemathesis"
ROLES = ["anonymous", "alice", "bob", "rita", "adam"]
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")
# Which operations may refuse schema-valid data, and the check that holds them to the rules
# listed in the hooks module (SECURITY.md, round 5).
CONFIG = ROOT / "schemathesis.toml"
HOOKS = "bench.schemathesis_hooks"


def seed(models_dir: Path) -> None:
    """An active placeholder LM (so seed_demo opens its campaign), then one conversation with a
    ready turn of two stored responses per contractor."""
    from django.contrib.auth import get_user_model
    from django.utils import timezone

    from assistant.services import model_version_activate, model_version_register
    from collection.conversations import conversation_start
    from collection.models import Campaign, Response, Turn

    placeholder = models_dir / "schemathesis-placeholder-lm"
    placeholder.mkdir(parents=True, exist_ok=True)
    lm = model_version_register(kind="lm", name="schemathesis placeholder", path=str(placeholder))
    model_version_activate(version=lm)
    manage("seed_demo", "--force", env=dict(os.environ))
    campaign = Campaign.objects.get(lm_version=lm)
    for username in ("alice", "bob"):
        contractor = get_user_model().objects.get(username=username)
        conversation = conversation_start(campaign=campaign, contractor=contractor)
        turn = Turn.objects.create(
            conversation=conversation,
            index=0,
            human_text=f"{username}: how do I keep a basil plant alive?",
            status=Turn.Status.READY,
            ready_at=timezone.now(),
        )
        Response.objects.bulk_create(
            Response(turn=turn, index=i, text=f"Response {i}: water it.", model_version=lm)
            for i in range(2)
        )


def token_for(username: str, env: dict) -> str:
    out = subprocess.run(
        [sys.executable, "manage.py", "drf_create_token", username],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return re.search(r"Generated token (\w+)", out).group(1)


def parse_report(report_dir: Path) -> dict:
    """The figures of schemathesis' JSON report: operations, test cases, failures by check."""
    report = json.loads(max(report_dir.glob("json-*.json")).read_text())
    by_check = Counter()
    for failure in report["failures"]:  # one entry per kind, with its count and operations
        by_check[f"{failure['code']} {failure['title']}"] += failure["count"]
    return {
        "operations": report["operations"]["tested"],
        "operations_total": report["operations"]["total"],
        "test_cases": report["test_cases"]["generated"],
        "test_cases_with_failures": report["test_cases"]["with_failures"],
        "unique_failures": report["test_cases"]["unique_failures"],
        "errors": len(report["errors"]),
        "failures": dict(by_check),
        "phases": {name: phase["status"] for name, phase in report["phases"].items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", default=DEFAULT_DATABASE_URL, help="dropped and made")
    parser.add_argument("--max-examples", type=int, default=25, help="per operation and phase")
    parser.add_argument("--roles", nargs="+", default=ROLES, choices=ROLES)
    parser.add_argument("--workers", type=int, default=2, help="granian worker processes")
    parser.add_argument("--seed", type=int, default=18, help="schemathesis' random seed")
    var_dir = Path(os.environ.get("ALIGNLAB_VAR_DIR", ROOT / "var"))
    parser.add_argument("--work-dir", type=Path, default=var_dir / "bench-schemathesis")
    parser.add_argument("--json", type=Path, help="also write the figures here")
    parser.add_argument(
        "schemathesis_args", nargs="*", help="passed on to schemathesis run (after --)"
    )
    args = parser.parse_args()

    work = args.work_dir.resolve()
    work.mkdir(parents=True, exist_ok=True)
    # Production settings over plain HTTP (the switch this sweep exercises); a broker of files in
    # the work folder, where the tasks the API queues stay (no worker runs them).
    os.environ.update(
        DJANGO_SETTINGS_MODULE="config.settings",
        DEBUG="0",
        ALIGNLAB_HTTPS="0",
        SECRET_KEY=secrets.token_urlsafe(40),
        ALLOWED_HOSTS="127.0.0.1,localhost",
        DATABASE_URL=args.database_url,
        CELERY_BROKER_URL="filesystem://",
        CELERY_RESULT_BACKEND="cache+memory://",
        ALIGNLAB_VAR_DIR=str(work / "var"),
        STATIC_ROOT=str(work / "static"),
        LOG_LEVEL="WARNING",
        PYTHONUNBUFFERED="1",
    )
    env = dict(os.environ)
    print(f"making {args.database_url}, migrating and seeding it", file=sys.stderr, flush=True)
    recreate_database(args.database_url)
    manage("migrate", "--noinput", "-v", "0", env=env)
    manage("collectstatic", "--noinput", "-v", "0", env=env)

    import django

    django.setup()
    from django.conf import settings
    from django.db import connections

    seed(settings.MODELS_DIR)
    connections.close_all()
    tokens = {user: token_for(user, env) for user in ROLES if user != "anonymous"}

    server = server_start(env=env, log=work / "granian.log", workers=args.workers, threads=2)
    report = {
        "command": " ".join(sys.argv),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "max_examples": args.max_examples,
        "commit": subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True
        ).stdout.strip(),
        "schemathesis": subprocess.run(
            [str(SCHEMATHESIS), "--version"], capture_output=True, text=True
        ).stdout.strip(),
        "roles": {},
    }
    try:
        schema = work / "schema.yaml"
        request = urllib.request.Request(
            server.url + "/api/schema/", headers={"Authorization": f"Token {tokens['adam']}"}
        )
        with urllib.request.urlopen(request, timeout=60) as response:
            schema.write_bytes(response.read())
        for role in args.roles:
            command = [
                str(SCHEMATHESIS),
                "--config-file",
                str(CONFIG),
                "run",
                str(schema),
                "--url",
                server.url,
                "--phases",
                "examples,coverage,fuzzing,stateful",
                "--checks",
                "all",
                "--max-examples",
                str(args.max_examples),
                "--seed",
                str(args.seed),
                "--workers",
                "1",
                "--request-timeout",
                "60",
                "--report",
                "junit,json",
                "--report-dir",
                str(work / role),
                "--generation-database",
                "none",
                "--no-color",
                *args.schemathesis_args,
            ]
            if role in tokens:
                command += ["--header", f"Authorization: Token {tokens[role]}"]
            print(f"{role}: schemathesis", file=sys.stderr, flush=True)
            started = time.perf_counter()
            result = subprocess.run(
                command,
                cwd=work,
                capture_output=True,
                text=True,
                env={**env, "SCHEMATHESIS_HOOKS": HOOKS, "PYTHONPATH": str(ROOT)},
            )
            seconds = time.perf_counter() - started
            output = result.stdout + result.stderr
            (work / f"{role}.log").write_text(output)
            figures = parse_report(work / role)
            report["roles"][role] = {
                **figures,
                "seconds": round(seconds, 1),
                "exit_code": result.returncode,
                "log": str(work / f"{role}.log"),
            }
            print(f"  {figures} in {seconds:.0f} s", file=sys.stderr, flush=True)
    finally:
        stop_server(server)
    write_json(args.json, report)
    print(markdown(report))


def markdown(report: dict) -> str:
    lines = [
        "| role | operations | test cases | unique failures by check | errors | seconds |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for role, row in report["roles"].items():
        kinds = ", ".join(f"{kind}: {n}" for kind, n in row["failures"].items()) or "none"
        lines.append(
            f"| {role} | {row['operations']} | {row['test_cases']} | {kinds} | {row['errors']} | "
            f"{row['seconds']:.0f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
