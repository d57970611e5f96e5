"""The preference model inside collection (issue 14): best-of-n selection, the PM's blind
scores on every generated turn, and the agreement of every judgement with the PM's prediction.

- `choose_shown` picks which k of n PM-scored candidates a best-of-n turn shows (the campaign's
  `selection_rule`), in a display order shuffled by the turn, so the PM's pick is not always A.
- `score_turn_candidates` scores one turn's candidates with one packed `score_groups` call of
  the scoring PM (the campaign's `pm_version`, else the active PM).
- `agreement_record` runs when a judgement is stored: if the turn's shown responses carry PM
  scores, one `PMAgreement` row says whether the human's best is the PM's best.
- `agreement_rows` and `drift` aggregate those rows for the agreement page and the dashboard.

Contractors never see any of this: scores and ranks live on `Response` and `Candidate` rows that
no contractor page or contractor-visible API field renders.
"""

from __future__ import annotations

import logging
import math
import random
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.db.models import Count, Q

from assistant.models import ModelVersion
from assistant.selectors import active_model

from .models import (
    Campaign,
    Judgement,
    PMAgreement,
    Response,
    SelectionRule,
    Turn,
)

logger = logging.getLogger(__name__)


def scoring_pm(campaign: Campaign) -> ModelVersion | None:
    """The PM that scores this campaign's candidates: the one it names, else the active PM."""
    if campaign.pm_version_id:
        return campaign.pm_version
    return active_model(kind=ModelVersion.Kind.PM)


def candidate_count(campaign: Campaign, k: int) -> int:
    """How many samples a turn showing k responses draws: the campaign's n, or k."""
    return max(campaign.best_of_n, k)


def choose_shown(scores: Sequence[float], k: int, rule: str, *, seed: int) -> list[int]:
    """Indices into `scores` of the k candidates to show, in display order (A first).

    Ranks are by score, best first (ties: sampler order). `top_k`: the best k. `top_vs_random`:
    the best and k - 1 drawn from the rest. `top_vs_bottom`: the best, the worst and, for
    k > 2, the best of the rest. `spread`: k evenly spaced ranks from best to worst.
    """
    n = len(scores)
    if not 2 <= k <= n:
        raise ValueError(f"cannot show {k} of {n} candidates")
    rng = random.Random(seed)
    ranked = sorted(range(n), key=lambda i: -scores[i])
    if rule == SelectionRule.TOP_K:
        picked = ranked[:k]
    elif rule == SelectionRule.TOP_VS_RANDOM:
        picked = [ranked[0], *rng.sample(ranked[1:], k - 1)]
    elif rule == SelectionRule.TOP_VS_BOTTOM:
        picked = [ranked[0], *ranked[1 : k - 1], ranked[-1]]
    elif rule == SelectionRule.SPREAD:
        picked = [ranked[round(j * (n - 1) / (k - 1))] for j in range(k)]
    else:
        raise ValueError(f"unknown selection rule {rule!r}")
    rng.shuffle(picked)
    return picked


def ranks_of(scores: Sequence[float]) -> list[int]:
    """The rank of each score among all of them, 1 = best (ties: earlier first)."""
    ranked = sorted(range(len(scores)), key=lambda i: -scores[i])
    ranks = [0] * len(scores)
    for rank, i in enumerate(ranked, start=1):
        ranks[i] = rank
    return ranks


def smallest_gap(scores: Sequence[float]) -> float | None:
    """The PM's uncertainty about shown responses: the smallest gap between two of them."""
    ordered = sorted(scores)
    gaps = [b - a for a, b in zip(ordered, ordered[1:], strict=False)]
    return min(gaps) if gaps else None


def score_turn_candidates(pm: ModelVersion, messages, texts: Sequence[str]) -> list[float]:
    """The PM's score of each candidate text as the reply to `messages` (one packed call)."""
    from assistant import runtime

    return runtime.pm_scorer(pm).score_groups([(messages, list(texts))])[0]


def agreement_record(judgement: Judgement, campaign: Campaign, *, shown) -> PMAgreement | None:
    """Record whether `judgement` agrees with the PM's blind prediction of its turn.

    Nothing is recorded for a turn whose shown responses were not all scored by one PM, for a
    tie (no preference to agree with) or an imported judgement. Idempotent: a judgement has at
    most one row, and a revised judgement updates it. `shown`: the turn's (response id, PM
    score, PM version id) rows, which the caller read under the turn's lock.
    """
    if judgement.tie or judgement.origin == Judgement.Origin.IMPORTED or not judgement.ranking:
        PMAgreement.objects.filter(judgement=judgement).delete()
        return None
    versions = {version for _, _, version in shown}
    if not shown or None in versions or len(versions) != 1 or any(s is None for _, s, _ in shown):
        return None
    by_score = sorted(shown, key=lambda row: -row[1])
    predicted = by_score[0][0]
    chosen = judgement.ranking[0]
    fields = {
        "pm_version_id": versions.pop(),
        "campaign_id": campaign.pk,
        "mode": campaign.mode,
        "contractor_id": judgement.contractor_id,
        "predicted_response_id": predicted,
        "chosen_response_id": chosen,
        "agrees": predicted == chosen,
        "margin": by_score[0][1] - by_score[1][1],
    }
    try:
        with transaction.atomic():
            row, _ = PMAgreement.objects.update_or_create(judgement=judgement, defaults=fields)
    except IntegrityError:  # a concurrent first record of the same judgement won
        row = PMAgreement.objects.get(judgement=judgement)
    return row


def wilson(successes: int, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson score interval of a proportion (95 % by default); (0, 1) when n = 0."""
    if n == 0:
        return 0.0, 1.0
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Agreement:
    """`agree` of `n` judgements agreed with the PM: the rate and its 95 % Wilson interval."""

    n: int
    agree: int

    @property
    def rate(self) -> float | None:
        return self.agree / self.n if self.n else None

    @property
    def interval(self) -> tuple[float, float]:
        return wilson(self.agree, self.n)

    def as_dict(self) -> dict:
        """{"n", "agree", "rate", "low", "high"}, as the agreement page and API show it."""
        low, high = self.interval
        return {"n": self.n, "agree": self.agree, "rate": self.rate, "low": low, "high": high}


@dataclass(frozen=True)
class AgreementRow(Agreement):
    key: dict


GROUPINGS = {
    "pm_version": ["pm_version_id", "pm_version__name"],
    "campaign": ["campaign_id", "campaign__name"],
    "mode": ["mode"],
    "contractor": ["contractor_id", "contractor__username"],
}


def agreement_rows(by: str, *, campaign_id: int | None = None) -> list[AgreementRow]:
    """Agreement counts grouped by one of GROUPINGS (one aggregate query on the indexes)."""
    if by not in GROUPINGS:
        raise ValueError(f"unknown grouping {by!r} (use {', '.join(GROUPINGS)})")
    rows = PMAgreement.objects.all()
    if campaign_id is not None:
        rows = rows.filter(campaign_id=campaign_id)
    grouped = (
        rows.values(*GROUPINGS[by])
        .annotate(n=Count("pk"), agree=Count("pk", filter=Q(agrees=True)))
        .order_by(*GROUPINGS[by])
    )
    return [
        AgreementRow(
            key={k: v for k, v in row.items() if k not in ("n", "agree")},
            n=row["n"],
            agree=row["agree"],
        )
        for row in grouped
    ]


def fresh_agreement(scorer, *, since=None, limit: int = 200) -> dict:
    """How often `scorer` (a PMScorer, e.g. a PM just trained) picks what humans picked on the
    latest `limit` collected judgements made after `since` (those it did not train on): ties,
    gold items and imported judgements left out. One packed `score_groups` call over their
    turns. Returns {"n", "agree", "rate", "low", "high", "since", "limit"} (95 % Wilson)."""
    from .generation import conversation_messages

    judgements = (
        Judgement.objects.filter(tie=False, turn__gold__isnull=True)
        .exclude(origin=Judgement.Origin.IMPORTED)
        .exclude(ranking=[])
    )
    if since is not None:
        judgements = judgements.filter(created_at__gt=since)
    latest = list(
        judgements.order_by("-created_at", "-pk").values_list("turn_id", "ranking")[:limit]
    )
    turn_ids = sorted({turn_id for turn_id, _ in latest})
    shown = defaultdict(list)
    for turn_id, pk, text in (
        Response.objects.filter(turn_id__in=turn_ids)
        .order_by("turn_id", "index")
        .values_list("turn_id", "pk", "text")
    ):
        shown[turn_id].append((pk, text))
    turns = {turn.pk: turn for turn in Turn.objects.filter(pk__in=turn_ids)}
    scored = scorer.score_groups(
        [(conversation_messages(turns[t]), [text for _, text in shown[t]]) for t in turn_ids]
    )
    pm_best = {
        t: shown[t][max(range(len(scores)), key=scores.__getitem__)][0]
        for t, scores in zip(turn_ids, scored, strict=True)
    }
    agree = sum(pm_best[turn_id] == ranking[0] for turn_id, ranking in latest)
    return {
        **Agreement(n=len(latest), agree=agree).as_dict(),
        "since": since.isoformat() if since is not None else None,
        "limit": limit,
    }
