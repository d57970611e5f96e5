"""The quality page's numbers at any scale: computed live while the judgements are few, else
read from summary rows (`QualitySummary`) that the periodic task `collection.refresh_quality`
recomputes every few minutes, so opening the page never aggregates a million judgements.

"Few" is judged by the newest judgement's id (one index read, not a COUNT over the table):
at most COLLECTION_QUALITY_LIVE_MAX_JUDGEMENTS. A stored summary says when it was computed and
how many judgements came since.
"""

from __future__ import annotations

import time

from django.conf import settings
from django.db.models import Exists, OuterRef
from django.utils import timezone

from .models import Campaign, Judgement, QualitySummary
from .quality import campaign_agreement, contractor_stats

SCOPE_ALL = "all"


def scope_of(campaign: Campaign | None) -> str:
    return SCOPE_ALL if campaign is None else f"campaign:{campaign.pk}"


def newest_judgement_id() -> int:
    return Judgement.objects.order_by("-pk").values_list("pk", flat=True).first() or 0


def _numbers(campaign: Campaign | None) -> tuple[list[dict], dict | None]:
    agreement = campaign_agreement(campaign=campaign) if campaign is not None else None
    return contractor_stats(campaign=campaign), agreement


def quality_summary_refresh(campaign: Campaign | None = None) -> QualitySummary:
    """Compute one scope's numbers and store them (the row is replaced: idempotent)."""
    newest = newest_judgement_id()  # read first: judgements arriving meanwhile count as newer
    started = time.monotonic()
    contractors, agreement = _numbers(campaign)
    summary, _ = QualitySummary.objects.update_or_create(
        scope=scope_of(campaign),
        defaults={
            "contractors": contractors,
            "agreement": agreement,
            "last_judgement_id": newest,
            "computed_at": timezone.now(),
            "seconds": time.monotonic() - started,
        },
    )
    return summary


def quality_summaries_refresh() -> dict:
    """Every scope the quality page shows (all campaigns, and each collected campaign with a
    judgement); for the periodic task. Returns {"scopes", "seconds"}."""
    started = time.monotonic()
    judged = Judgement.objects.filter(turn__conversation__campaign=OuterRef("pk"))
    campaigns = Campaign.objects.exclude(imports__isnull=False).filter(Exists(judged))
    scopes = [quality_summary_refresh(None)]
    scopes += [quality_summary_refresh(campaign) for campaign in campaigns.order_by("pk")]
    return {"scopes": len(scopes), "seconds": round(time.monotonic() - started, 3)}


def quality_numbers(campaign: Campaign | None = None) -> dict:
    """What the quality page shows: {"contractors", "agreement", "summary", "newer"}.

    `summary` is None when the numbers were computed now (few judgements); else the stored
    QualitySummary they come from (None too, with `pending` True, before the task first ran),
    and `newer` how many judgements came after it.
    """
    newest = newest_judgement_id()
    if newest <= settings.COLLECTION_QUALITY_LIVE_MAX_JUDGEMENTS:
        contractors, agreement = _numbers(campaign)
        return {"contractors": contractors, "agreement": agreement, "summary": None, "newer": 0}
    summary = QualitySummary.objects.filter(scope=scope_of(campaign)).first()
    if summary is None:
        return {"contractors": [], "agreement": None, "summary": None, "pending": True}
    return {
        "contractors": summary.contractors,
        "agreement": summary.agreement,
        "summary": summary,
        "newer": Judgement.objects.filter(pk__gt=summary.last_judgement_id).count(),
    }
