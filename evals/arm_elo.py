"""Elo of arms — (LM version, sampling condition) — from contractor judgements between their
responses, at any scale.

While the judgements are few (at most EVALS_ELO_LIVE_MAX_JUDGEMENTS, judged by the newest id)
the games are read per request; beyond, from the one `EloSummary` row that the periodic task
`evals.refresh_elo` stores: the games counted per (campaign, judged by) cell, which any filter
of the page adds up. Either way the ratings are fitted on game counts
(`elo_ratings_counted`), so a million judgements cost the page a row read and milliseconds.
"""

from __future__ import annotations

import math
import time
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import islice

from django.conf import settings
from django.db.models import QuerySet
from django.utils import timezone

from collection import id_lists  # noqa: F401 - registers the `any_of` lookup used below
from collection.agreement import pairwise_preferences
from collection.models import Campaign, Conversation, Judgement, Response
from collection.quality_summaries import newest_judgement_id

from .models import EloSummary
from .suites.elo import elo_ratings_counted

Arm = tuple[int, str]  # (LM version id, sampling condition; "" = the campaign's own sampling)
# Judgements made on this platform (imported ones compare no arms of ours).
JUDGED_BY_CONTRACTORS = (Judgement.Origin.CONVERSATION, Judgement.Origin.REVIEW)
# Judgements read per query, each chunk's responses in one more (bounded memory at any size).
CHUNK = 2_000

# How a judgement becomes games, said on the page and in the API's answer.
PAIR_WEIGHTING = (
    "Every pair of a judgement's better-first order whose two responses come from different "
    "arms counts as one game, won by the better one's arm: a pairwise judgement gives one game "
    "whatever its strength, a ranking of k gives up to k·(k−1)/2. Pairs within one arm, "
    'responses with no model version (imported) and ties ("about the same": no winner) are '
    "left out."
)


def arm_label(name: str, condition: str) -> str:
    """`name`, plus " · condition" for a sampling variant."""
    return f"{name} · {condition}" if condition else name


@dataclass
class ArmGames:
    """The games between arms that some judgements imply, and what was left out."""

    games: Counter = field(default_factory=Counter)  # (winner arm, loser arm) → games
    names: dict[int, str] = field(default_factory=dict)  # LM version id → name
    judgements: int = 0  # judgements read (those that gave no game included)
    same_arm_pairs: int = 0
    unversioned_pairs: int = 0

    @property
    def labels(self) -> dict[Arm, str]:
        """Each arm's label; versions of one name are told apart by their id."""
        arms = sorted({arm for pair in self.games for arm in pair})
        uses = Counter(self.names[version_id] for version_id in {v for v, _ in arms})
        labels = {}
        for version_id, condition in arms:
            name = self.names[version_id]
            name = f"{name} #{version_id}" if uses[name] > 1 else name
            labels[(version_id, condition)] = arm_label(name, condition)
        return labels

    def merge(self, other: ArmGames) -> ArmGames:
        self.games.update(other.games)
        self.names.update(other.names)
        self.judgements += other.judgements
        self.same_arm_pairs += other.same_arm_pairs
        self.unversioned_pairs += other.unversioned_pairs
        return self

    def as_json(self) -> dict:
        return {
            "judgements": self.judgements,
            "same_arm": self.same_arm_pairs,
            "unversioned": self.unversioned_pairs,
            "games": [[*winner, *loser, n] for (winner, loser), n in self.games.items()],
            "names": {str(k): v for k, v in self.names.items()},
        }

    @classmethod
    def from_json(cls, data: dict) -> ArmGames:
        return cls(
            games=Counter({((wv, wc), (lv, lc)): n for wv, wc, lv, lc, n in data["games"]}),
            names={int(k): v for k, v in data["names"].items()},
            judgements=data["judgements"],
            same_arm_pairs=data["same_arm"],
            unversioned_pairs=data["unversioned"],
        )


def collected_judgements(
    *, campaign=None, mode: str | None = None, origins: Sequence[str] = JUDGED_BY_CONTRACTORS
) -> QuerySet:
    """The judgements Elo reads: of collected conversations, by the given origins; `campaign`
    is a Campaign or its id."""
    judgements = Judgement.objects.filter(
        origin__in=list(origins), turn__conversation__source=Conversation.Source.COLLECTED
    )
    if campaign is not None:
        judgements = judgements.filter(turn__conversation__campaign=campaign)
    if mode:
        judgements = judgements.filter(turn__conversation__campaign__mode=mode)
    return judgements


def _chunks(rows: Iterable, size: int) -> Iterator[list]:
    rows = iter(rows)
    while chunk := list(islice(rows, size)):
        yield chunk


def arm_game_cells(judgements: QuerySet) -> dict[tuple[int, str], ArmGames]:
    """The games of `judgements` per (campaign id, origin), see PAIR_WEIGHTING: the judgements
    in id order CHUNK at a time, and each chunk's versioned responses in one query (two
    queries in all for up to CHUNK judgements)."""
    rows = (
        judgements.order_by("pk")
        .values_list("turn_id", "ranking", "tie", "origin", "turn__conversation__campaign_id")
        .iterator(chunk_size=CHUNK)
    )
    cells: dict[tuple[int, str], ArmGames] = {}
    for chunk in _chunks(rows, CHUNK):
        responses = (
            Response.objects.filter(
                turn_id__any_of={row[0] for row in chunk}, model_version__isnull=False
            )
            .order_by()
            .values_list("pk", "turn_id", "model_version_id", "model_version__name", "condition")
        )
        arm_of: dict[int, tuple[int, Arm]] = {}
        names: dict[int, str] = {}
        for response_id, turn_id, version_id, name, condition in responses:
            arm_of[response_id] = (turn_id, (version_id, condition))
            names[version_id] = name
        for turn_id, ranking, tie, origin, campaign_id in chunk:
            games = cells.setdefault((campaign_id, origin), ArmGames())
            games.judgements += 1
            for better, worse in [] if tie else pairwise_preferences(ranking):
                a, b = arm_of.get(better), arm_of.get(worse)
                if a is None or b is None or a[0] != turn_id or b[0] != turn_id:
                    games.unversioned_pairs += 1
                elif a[1] == b[1]:
                    games.same_arm_pairs += 1
                else:
                    games.games[(a[1], b[1])] += 1
                    games.names.update((v, names[v]) for v, _ in (a[1], b[1]))
    return cells


def arm_games(
    *, campaign=None, mode: str | None = None, origins: Sequence[str] = JUDGED_BY_CONTRACTORS
) -> ArmGames:
    """The games of the judgements the filters select, read now."""
    cells = arm_game_cells(collected_judgements(campaign=campaign, mode=mode, origins=origins))
    total = ArmGames()
    for games in cells.values():
        total.merge(games)
    return total


# --- the summary ---------------------------------------------------------------------------------


def elo_summary_refresh() -> EloSummary:
    """Count the games of every contractor judgement per (campaign, origin) and store them
    (the one row is replaced: idempotent); for the periodic task."""
    newest = newest_judgement_id()  # read first: judgements arriving meanwhile count as newer
    started = time.monotonic()
    cells = arm_game_cells(collected_judgements())
    summary, _ = EloSummary.objects.update_or_create(
        key="all",
        defaults={
            "cells": [
                {"campaign": campaign_id, "origin": origin, **games.as_json()}
                for (campaign_id, origin), games in sorted(cells.items())
            ],
            "last_judgement_id": newest,
            "computed_at": timezone.now(),
            "seconds": time.monotonic() - started,
        },
    )
    return summary


def elo_games(
    *, campaign=None, mode: str | None = None, origins: Sequence[str] = JUDGED_BY_CONTRACTORS
) -> tuple[ArmGames, dict | None]:
    """The games the filters select and where they come from: (games, None) when read now;
    else (games, {"computed_at", "seconds", "newer"}) from the summary, or (no games,
    {"pending": True}) before the task first ran."""
    if newest_judgement_id() <= settings.EVALS_ELO_LIVE_MAX_JUDGEMENTS:
        return arm_games(campaign=campaign, mode=mode, origins=origins), None
    summary = EloSummary.objects.filter(key="all").first()
    if summary is None:
        return ArmGames(), {"pending": True}
    campaigns = None
    if campaign is not None:
        campaigns = {getattr(campaign, "pk", campaign)}
    if mode:
        of_mode = set(Campaign.objects.filter(mode=mode).values_list("pk", flat=True))
        campaigns = of_mode if campaigns is None else campaigns & of_mode
    games = ArmGames()
    for cell in summary.cells:
        if cell["origin"] in origins and (campaigns is None or cell["campaign"] in campaigns):
            games.merge(ArmGames.from_json(cell))
    newer = Judgement.objects.filter(pk__gt=summary.last_judgement_id).count()
    return games, {
        "computed_at": summary.computed_at,
        "seconds": summary.seconds,
        "newer": newer,
        "pending": False,
    }


def elo_report(
    *,
    campaign=None,
    mode: str | None = None,
    origins: Sequence[str] = JUDGED_BY_CONTRACTORS,
    resamples: int = 100,
    seed: int = 0,
) -> dict:
    """`elo_ratings` of the arms (mean rating 1000, 95% bootstrap intervals with a fixed seed),
    keyed by arm label, best first, with the counts of what was read and left out, and
    `summary`: None when computed now, else when the counted games are from (`elo_games`)."""
    games, summary = elo_games(campaign=campaign, mode=mode, origins=origins)
    if games.games:
        # In arm order, so that the bootstrap draws the same whether the counts were read now
        # or added up from the summary's cells.
        counts = {(w, lose, False): n for (w, lose), n in sorted(games.games.items())}
        fitted = elo_ratings_counted(counts, resamples=resamples, seed=seed)
    else:
        # elo_ratings needs a game; these are its defaults, as it would report them.
        fitted = {"ratings": {}, "anchor": None, "n_games": 0, "resamples": resamples}
        fitted |= {"level": 0.95, "prior": 0.1}
    labels = games.labels
    ratings = {}
    for arm, rating in fitted["ratings"].items():
        ratings[labels[arm]] = {
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
        "summary": summary,
    }
