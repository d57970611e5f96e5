"""Read queries for the eval reports."""

from .models import EvalRun

# The headline number of each suite, read from its results, for the leaderboard.
HEADLINE = {
    EvalRun.Suite.HHH: ("HHH", "overall"),
    EvalRun.Suite.HHH_UNPROMPTED: ("HHH, no prompt", "overall"),
    EvalRun.Suite.HELD_OUT: ("held-out", "overall"),
    EvalRun.Suite.TRUTHFULQA: ("TruthfulQA MC1", "mc1"),
    EvalRun.Suite.TOXICITY: ("toxicity (prompted)", "with_prompt"),
}


def leaderboard() -> tuple[list[str], list[dict]]:
    """Columns and one row per model version: the latest succeeded run of each suite."""
    runs = (
        EvalRun.objects.filter(status=EvalRun.Status.SUCCEEDED)
        .select_related("model_version")
        .order_by("model_version_id", "suite", "-finished_at")
    )
    latest: dict[tuple[int, str], EvalRun] = {}
    for run in runs:
        latest.setdefault((run.model_version_id, run.suite), run)
    columns = [label for label, _ in HEADLINE.values()]
    rows = {}
    for (version_id, suite), run in latest.items():
        row = rows.setdefault(version_id, {"version": run.model_version, "cells": {}})
        label, key = HEADLINE[suite]
        headline = run.results.get(key) or {}
        row["cells"][label] = {
            "run": run,
            "value": headline.get("accuracy", headline.get("mean")),
            "low": headline.get("low"),
            "high": headline.get("high"),
        }
    ordered = sorted(rows.values(), key=lambda r: (r["version"].kind, -r["version"].pk))
    for row in ordered:
        row["cells"] = [row["cells"].get(label) for label in columns]
    return columns, ordered
