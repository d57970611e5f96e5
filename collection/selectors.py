"""Read queries of the collection app."""

from __future__ import annotations

from django.db.models import Count, Exists, F, OuterRef, Q

from .models import Campaign, Conversation, GoldAnswer, Judgement, Turn


def open_campaigns() -> list[Campaign]:
    return list(Campaign.objects.filter(is_active=True).select_related("lm_version", "prompt"))


def conversations_for_contractor(*, contractor):
    """The contractor's own conversations (never anyone else's), newest first."""
    return (
        Conversation.objects.filter(contractor=contractor, source=Conversation.Source.COLLECTED)
        .select_related("campaign")
        .annotate(turn_count=Count("turns"))
    )


def conversation_for_contractor(*, contractor, conversation_id: int) -> Conversation | None:
    """One of the contractor's conversations, or None when it is not theirs (or not there)."""
    return (
        conversations_for_contractor(contractor=contractor)
        .filter(pk=conversation_id)
        .select_related("campaign__lm_version", "campaign__prompt")
        .first()
    )


def turns_with_responses(*, conversation: Conversation):
    return conversation.turns.order_by("index").prefetch_related("responses", "judgements")


def review_queue(*, contractor):
    """Turns this contractor may judge from the review queue, gold items first.

    A turn qualifies when its author has judged it (or it is a gold item), its campaign is
    active, it needs more judgements for the campaign's overlap target, and this contractor
    neither wrote it nor judged it yet.
    """
    judged_by_me = Judgement.objects.filter(turn=OuterRef("pk"), contractor=contractor)
    is_gold = GoldAnswer.objects.filter(turn=OuterRef("pk"))
    return (
        Turn.objects.filter(status=Turn.Status.JUDGED, conversation__campaign__is_active=True)
        .exclude(conversation__contractor=contractor)
        .annotate(
            judgement_count=Count("judgements"), mine=Exists(judged_by_me), is_gold=Exists(is_gold)
        )
        .filter(mine=False)
        .filter(
            Q(is_gold=True) | Q(judgement_count__lt=F("conversation__campaign__overlap_target"))
        )
        .select_related("conversation__campaign")
        .order_by("-is_gold", "created_at")
    )
