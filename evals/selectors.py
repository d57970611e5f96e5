"""Read queries for the eval reports."""

from __future__ import annotations

from collections import Counter

from django.db.models import Case, JSONField, When
from django.db.models.fields.json import KeyTransform

from .models import EvalRun

# The headline number of each suite, read from its results, for the leaderboard.
HEADLINE = {
    EvalRun.Suite.HHH: ("HHH", "overall"),
    EvalRun.Suite.HHH_UNPROMPTED: ("HHH, no prompt", "overall"),
    EvalRun.Suite.HELD_OUT: ("held-out", "overall"),
    EvalRun.Suite.TRUTHFULQA: ("TruthfulQA MC1", "mc1"),
    EvalRun.Suite.TOXICITY: ("toxicity (prompted)", "with_prompt"),
    EvalRun.Suite.PREFERENCE_FILE: ("preference file (latest)", "overall"),
}


def error_summary(error: str, limit: int = 200) -> str:
    """A failed run's reason in one line: the first line of its error ("TypeError: …"), or
    the last line of a bare traceback (where the exception is named); cut at `limit`."""
    lines = [line.strip() for line in (error or "").splitlines() if line.strip()]
    if not lines:
        return "failed without a recorded error"
    line = lines[-1] if lines[0].startswith("Traceback") else lines[0]
    return line if len(line) <= limit else line[: limit - 1] + "…"


def failed_runs(*, version=None) -> list[EvalRun]:
    """Failed eval runs, newest first (of one version, or all), each with `.reason`: its error
    in one line (the traceback is on the run's page)."""
    runs = EvalRun.objects.filter(status=EvalRun.Status.FAILED).defer("results")
    if version is not None:
        runs = runs.filter(model_version=version)
    runs = list(runs.select_related("model_version").order_by("-finished_at", "-pk"))
    for run in runs:
        run.reason = error_summary(run.error)
    return runs


def _headline_expression():
    # Each run's headline entry alone, not its whole results (those hold a record per item:
    # hundreds of kilobytes a run).
    return Case(
        *(
            When(suite=suite, then=KeyTransform(key, "results"))
            for suite, (_, key) in HEADLINE.items()
        ),
        output_field=JSONField(),
    )


def version_runs(version) -> list[EvalRun]:
    """Every eval run of `version`, newest first, each with `.value` (its headline number, or
    None), `.low`/`.high` and `.reason` (a failure's error in one line, else "")."""
    runs = list(
        EvalRun.objects.filter(model_version=version)
        .defer("results")
        .annotate(headline=_headline_expression())
        .order_by("-created_at", "-pk")
    )
    for run in runs:
        headline = run.headline if isinstance(run.headline, dict) else {}
        run.value = headline.get("accuracy", headline.get("mean"))
        run.low, run.high = headline.get("low"), headline.get("high")
        run.reason = error_summary(run.error) if run.status == EvalRun.Status.FAILED else ""
    return runs


def leaderboard() -> tuple[list[str], list[dict]]:
    """Columns and one row per model version: the latest succeeded run of each suite, and in
    each cell the failure when the suite's latest finished run failed (`failure`: the run, its
    reason in one line), so a version whose evals all fail has a row too."""
    headline = _headline_expression()
    runs = (
        EvalRun.objects.filter(status__in=[EvalRun.Status.SUCCEEDED, EvalRun.Status.FAILED])
        .defer("results")
        .annotate(headline=headline)
        .select_related("model_version")
        .order_by("model_version_id", "suite", "-finished_at", "-pk")
    )
    latest: dict[tuple[int, str], EvalRun] = {}  # the latest success
    last_finished: dict[tuple[int, str], EvalRun] = {}  # the latest success or failure
    for run in runs:
        key = (run.model_version_id, run.suite)
        last_finished.setdefault(key, run)
        if run.status == EvalRun.Status.SUCCEEDED:
            latest.setdefault(key, run)
    columns = [label for label, _ in HEADLINE.values()]
    rows = {}
    for (version_id, suite), last in last_finished.items():
        row = rows.setdefault(version_id, {"version": last.model_version, "cells": {}})
        label, _ = HEADLINE[suite]
        run = latest.get((version_id, suite))
        headline = (run.headline or {}) if run else {}
        failure = None
        if last.status == EvalRun.Status.FAILED:
            failure = {"run": last, "reason": error_summary(last.error)}
        row["cells"][label] = {
            "run": run,
            "value": headline.get("accuracy", headline.get("mean")),
            "low": headline.get("low"),
            "high": headline.get("high"),
            "failure": failure,
        }
    ordered = sorted(rows.values(), key=lambda r: (r["version"].kind, -r["version"].pk))
    for row in ordered:
        row["cells"] = [row["cells"].get(label) for label in columns]
    return columns, ordered


def eval_status_counts(*, version=None) -> dict[str, int]:
    """How many eval runs there are in each status (of one version, or all)."""
    runs = EvalRun.objects.all()
    if version is not None:
        runs = runs.filter(model_version=version)
    counts = dict(Counter(runs.values_list("status", flat=True)))
    return {status: counts.get(status, 0) for status in EvalRun.Status.values}


def why_no_comparison(version) -> str:
    """Why `version` has no finished eval to compare, in a sentence."""
    counts = eval_status_counts(version=version)
    if counts[EvalRun.Status.SUCCEEDED]:
        return ""
    if not any(counts.values()):
        return (
            f"{version.name} has never been evaluated: evals are queued when a version is "
            "registered, or run with `manage.py run_eval`."
        )
    parts = []
    if counts[EvalRun.Status.FAILED]:
        latest = failed_runs(version=version)[0]
        parts.append(
            f"{counts[EvalRun.Status.FAILED]} failed (the latest, "
            f"{EvalRun.Suite(latest.suite).label}: {latest.reason})"
        )
    waiting = counts[EvalRun.Status.QUEUED] + counts[EvalRun.Status.RUNNING]
    if waiting:
        parts.append(f"{waiting} queued or running")
    if counts[EvalRun.Status.CANCELLED]:
        parts.append(f"{counts[EvalRun.Status.CANCELLED]} cancelled")
    return f"{version.name} has no finished eval: its runs are " + "; ".join(parts) + "."
