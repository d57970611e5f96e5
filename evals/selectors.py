"""Read queries for the eval reports."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from django.db.models import Case, JSONField, When
from django.db.models.fields.json import KeyTransform

from collection.agreement import pairwise_preferences
from collection.models import Campaign, Conversation, Judgement, Response

from .models import EvalRun
from .suites.elo import elo_ratings

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


# --- Elo of arms from contractor judgements -----------------------------------------------------

Arm = tuple[int, str]  # (LM version id, sampling condition; "" = the campaign's own sampling)
# Judgements made on this platform (imported ones compare no arms of ours).
JUDGED_BY_CONTRACTORS = (Judgement.Origin.CONVERSATION, Judgement.Origin.REVIEW)

# How a judgement becomes games, said on the page and in the API's answer.
PAIR_WEIGHTING = (
    "Every pair of a judgement's better-first order whose two responses come from different "
    "arms counts as one game, won by the better one's arm: a pairwise judgement gives one game "
    "whatever its strength, a ranking of k gives up to k·(k−1)/2. Pairs within one arm, "
    'responses with no model version (imported) and ties ("about the same": no winner) are '
    "left out."
)


@dataclass
class ArmGames:
    """The games between arms that contractor judgements imply, and what was left out."""

    outcomes: list[tuple[Arm, Arm]]  # (winner, loser), judgement by judgement in id order
    labels: dict[Arm, str]
    judgements: int  # judgements read (those that gave no game included)
    same_arm_pairs: int = 0
    unversioned_pairs: int = 0


def arm_label(name: str, condition: str) -> str:
    """`name`, plus " · condition" for a sampling variant."""
    return f"{name} · {condition}" if condition else name


def arm_games(
    *,
    campaign: Campaign | None = None,
    mode: str | None = None,
    origins: Sequence[str] = JUDGED_BY_CONTRACTORS,
) -> ArmGames:
    """Games between (LM version, sampling condition) arms from the judgements of collected
    conversations, in two queries; see PAIR_WEIGHTING."""
    judgements = Judgement.objects.filter(
        origin__in=list(origins), turn__conversation__source=Conversation.Source.COLLECTED
    )
    if campaign is not None:
        judgements = judgements.filter(turn__conversation__campaign=campaign)
    if mode:
        judgements = judgements.filter(turn__conversation__campaign__mode=mode)
    rows = list(judgements.order_by("pk").values_list("turn_id", "ranking", "tie"))
    responses = Response.objects.filter(
        turn_id__in=judgements.values("turn_id"), model_version__isnull=False
    ).values_list("pk", "turn_id", "model_version_id", "model_version__name", "condition")
    arm_of: dict[int, tuple[int, Arm]] = {}
    names: dict[int, str] = {}
    for response_id, turn_id, version_id, name, condition in responses:
        arm_of[response_id] = (turn_id, (version_id, condition))
        names[version_id] = name
    games = ArmGames(outcomes=[], labels={}, judgements=len(rows))
    for turn_id, ranking, tie in rows:
        for better, worse in [] if tie else pairwise_preferences(ranking):
            a, b = arm_of.get(better), arm_of.get(worse)
            if a is None or b is None or a[0] != turn_id or b[0] != turn_id:
                games.unversioned_pairs += 1
            elif a[1] == b[1]:
                games.same_arm_pairs += 1
            else:
                games.outcomes.append((a[1], b[1]))
    arms = sorted({arm for outcome in games.outcomes for arm in outcome})
    # Version names need not be unique: two versions of one name are told apart by their id.
    uses = Counter(names[version_id] for version_id in {version_id for version_id, _ in arms})
    for version_id, condition in arms:
        name = names[version_id]
        name = f"{name} #{version_id}" if uses[name] > 1 else name
        games.labels[(version_id, condition)] = arm_label(name, condition)
    return games


def elo_report(
    *,
    campaign: Campaign | None = None,
    mode: str | None = None,
    origins: Sequence[str] = JUDGED_BY_CONTRACTORS,
    resamples: int = 100,
    seed: int = 0,
) -> dict:
    """`elo_ratings` of the arms (mean rating 1000, 95% bootstrap intervals with a fixed seed),
    keyed by arm label, best first, with the counts of what was read and left out."""
    games = arm_games(campaign=campaign, mode=mode, origins=origins)
    if games.outcomes:
        fitted = elo_ratings(games.outcomes, resamples=resamples, seed=seed)
    else:
        # elo_ratings needs a game; these are its defaults, as it would report them.
        fitted = {"ratings": {}, "anchor": None, "n_games": 0, "resamples": resamples}
        fitted |= {"level": 0.95, "prior": 0.1}
    ratings = {}
    for arm, rating in fitted["ratings"].items():
        ratings[games.labels[arm]] = {
            "model_version": arm[0],
            "condition": arm[1],
            # A bound no resample could estimate is NaN, which JSON cannot carry.
            **{k: None if isinstance(v, float) and math.isnan(v) else v for k, v in rating.items()},
        }
    return {
        **fitted,
        "ratings": ratings,
        "judgements": games.judgements,
        "ignored_pairs": {"same_arm": games.same_arm_pairs, "unversioned": games.unversioned_pairs},
        "weighting": PAIR_WEIGHTING,
    }
