"""Campaigns: created and edited (validated, one path for the admin, the API and the campaign
pages), their life (active, paused, closed) and their progress.

A campaign is *active* (contractors can start conversations), *paused* (`is_active` off,
`closed_at` empty: it can be resumed) or *closed* (`closed_at` set, `is_active` off, for good;
its data stays for snapshots and exports). Each change here is one transaction on the
campaign's locked row; doing it twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, Count, Q, Value, When
from django.db.models.functions import TruncDate
from django.utils import timezone

from assistant.models import ModelVersion
from assistant.selectors import active_model, prompt_latest

from .errors import CollectionError
from .models import Campaign, Conversation, Judgement, Turn

ACTIVE, PAUSED, CLOSED = "active", "paused", "closed"
DEFAULT_PROMPT = "hhh"  # new campaigns start on the latest version of this prompt
CHART_DAYS = 60  # the judgements-per-day chart shows at most the last this many days


def campaign_status(campaign: Campaign) -> str:
    if campaign.closed_at is not None:
        return CLOSED
    return ACTIVE if campaign.is_active else PAUSED


def campaign_defaults() -> dict:
    """What a new campaign's form starts with: the active LM, the latest HHH prompt, k = 2,
    pairwise (the model's own defaults for the rest)."""
    return {
        "lm_version": active_model(kind=ModelVersion.Kind.LM),
        "prompt": prompt_latest(name=DEFAULT_PROMPT),
        "k": 2,
        "judgement_type": Campaign.JudgementType.PAIRWISE,
        "mode": Campaign.Mode.HELPFUL,
        "max_turns": Campaign._meta.get_field("max_turns").default,
        "quota_per_contractor": Campaign._meta.get_field("quota_per_contractor").default,
        "overlap_target": Campaign._meta.get_field("overlap_target").default,
    }


def campaign_save(*, campaign: Campaign) -> Campaign:
    """Validate (`full_clean()`) and save a new or changed campaign; when its overlap target
    changed, recompute its review queue. The admin, the API and the campaign pages all save
    campaigns here.

    Raises `ValidationError` with the messages per field.
    """
    campaign.full_clean()
    if campaign.closed_at is not None and campaign.is_active:
        raise ValidationError(
            {"is_active": "This campaign is closed; a closed campaign is not opened again."}
        )
    with transaction.atomic():
        before = (
            Campaign.objects.select_for_update().filter(pk=campaign.pk).first()
            if campaign.pk
            else None
        )
        campaign.save()
        if before is not None and before.overlap_target != campaign.overlap_target:
            campaign_review_refresh(campaign=campaign)
    return campaign


def campaign_create(**fields) -> Campaign:
    """A new campaign from field values, validated (see `campaign_save`)."""
    return campaign_save(campaign=Campaign(**fields))


def campaign_update(*, campaign: Campaign, **fields) -> Campaign:
    """Change a campaign's fields, validated (see `campaign_save`)."""
    for name, value in fields.items():
        setattr(campaign, name, value)
    return campaign_save(campaign=campaign)


def campaign_review_refresh(*, campaign: Campaign) -> int:
    """Recompute which of a campaign's judged turns want more judgements (after its overlap
    target changed); returns how many turns are open for review now."""
    turns = Turn.objects.filter(
        conversation__campaign=campaign,
        conversation__source=Conversation.Source.COLLECTED,
        status=Turn.Status.JUDGED,
    )
    with transaction.atomic():
        turns.update(
            needs_review=Case(
                When(judgement_count__lt=campaign.overlap_target, then=Value(True)),
                default=Value(False),
            )
        )
    return turns.filter(needs_review=True).count()


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update().get(pk=campaign.pk)


def campaign_pause(*, campaign: Campaign) -> Campaign:
    """Stop new conversations for now (open ones may go on); the campaign can be resumed."""
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.closed_at is not None:
            raise CollectionError("This campaign is closed; a closed campaign is not paused.")
        if campaign.is_active:
            campaign.is_active = False
            campaign.save(update_fields=["is_active"])
    return campaign


def campaign_resume(*, campaign: Campaign) -> Campaign:
    """Open a paused campaign to contractors again."""
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.closed_at is not None:
            raise CollectionError("This campaign is closed for good; make a new one instead.")
        if campaign.lm_version_id is None:
            raise CollectionError(
                "This campaign holds imported data; it has no model to chat with."
            )
        if not campaign.is_active:
            campaign.is_active = True
            campaign.save(update_fields=["is_active"])
    return campaign


def campaign_close(*, campaign: Campaign) -> Campaign:
    """Close the campaign for good: no new conversations, its data kept. Closing twice keeps
    the first time it was closed."""
    with transaction.atomic():
        campaign = _locked(campaign)
        if campaign.closed_at is None:
            campaign.closed_at = timezone.now()
            campaign.is_active = False
            campaign.save(update_fields=["closed_at", "is_active"])
    return campaign


@dataclass
class DayBar:
    day: date
    judgements: int
    x: float
    y: float
    width: float
    height: float


def _day_bars(counts: dict[date, int], *, width=600.0, height=120.0) -> list[DayBar]:
    """One bar per day from the first day with a judgement (at most CHART_DAYS back from the
    last) to the last, days without judgements included, scaled into a width × height box."""
    if not counts:
        return []
    last = max(counts)
    first = max(min(counts), last - timedelta(days=CHART_DAYS - 1))
    days = [first + timedelta(days=i) for i in range((last - first).days + 1)]
    top = max(counts.get(day, 0) for day in days) or 1
    slot = width / len(days)
    bars = []
    for i, day in enumerate(days):
        n = counts.get(day, 0)
        bar_height = height * n / top
        bars.append(
            DayBar(
                day=day,
                judgements=n,
                x=round(i * slot + slot * 0.1, 2),
                y=round(height - bar_height, 2),
                width=round(slot * 0.8, 2),
                height=round(bar_height, 2),
            )
        )
    return bars


def campaign_progress(*, campaign: Campaign) -> dict:
    """The campaign's progress in a fixed handful of grouped queries: totals, judgements per day
    (with chart bars), and per contractor their conversations (against the quota) and
    judgements."""
    conversations = Conversation.objects.filter(campaign=campaign)
    judgements = Judgement.objects.filter(turn__conversation__campaign=campaign)
    totals = conversations.aggregate(
        conversations=Count("pk", filter=Q(source=Conversation.Source.COLLECTED)),
        open=Count(
            "pk",
            filter=Q(source=Conversation.Source.COLLECTED, status=Conversation.Status.OPEN),
        ),
        gold_items=Count("pk", filter=Q(source=Conversation.Source.GOLD)),
        imported=Count("pk", filter=Q(source=Conversation.Source.IMPORTED)),
    )
    totals.update(
        Turn.objects.filter(conversation__campaign=campaign).aggregate(
            turns=Count("pk"), waiting_for_review=Count("pk", filter=Q(needs_review=True))
        )
    )
    totals.update(
        judgements.aggregate(
            judgements=Count("pk"),
            reviews=Count("pk", filter=Q(origin=Judgement.Origin.REVIEW)),
        )
    )
    per_day = {
        row["day"]: row["n"]
        for row in judgements.annotate(day=TruncDate("created_at"))
        .values("day")
        .annotate(n=Count("pk"))
        .order_by("day")
    }
    bars = _day_bars(per_day)
    return {
        "totals": totals,
        "per_day": sorted(per_day.items()),
        "bars": bars,
        "chart_max": max((bar.judgements for bar in bars), default=0),
        "contractors": _contractor_rows(
            conversations, judgements, quota=campaign.quota_per_contractor
        ),
    }


def _contractor_rows(conversations, judgements, *, quota: int) -> list[dict]:
    """Per contractor of the campaign: their conversations (against the quota) and judgements,
    most judgements first (three grouped queries)."""
    held = {
        row["contractor"]: row
        for row in conversations.filter(
            source=Conversation.Source.COLLECTED, contractor__isnull=False
        )
        .values("contractor", "contractor__username")
        .annotate(
            conversations=Count("pk"),
            open=Count("pk", filter=Q(status=Conversation.Status.OPEN)),
        )
    }
    judged = dict(
        judgements.filter(contractor__isnull=False)
        .values("contractor")
        .annotate(n=Count("pk"))
        .values_list("contractor", "n")
    )
    names = dict(
        judgements.filter(contractor__isnull=False)
        .exclude(contractor__in=list(held))
        .values_list("contractor", "contractor__username")
        .distinct()
    )
    contractors = []
    for contractor_id in set(held) | set(judged):
        row = held.get(contractor_id, {})
        count = row.get("conversations", 0)
        contractors.append(
            {
                "contractor_id": contractor_id,
                "username": row.get("contractor__username") or names.get(contractor_id, "?"),
                "conversations": count,
                "open": row.get("open", 0),
                "judgements": judged.get(contractor_id, 0),
                "quota_used": count / quota if quota else None,
                "quota_left": max(quota - count, 0),
            }
        )
    contractors.sort(key=lambda row: (-row["judgements"], row["username"]))
    return contractors
