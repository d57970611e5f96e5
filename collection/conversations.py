"""A contractor's conversations and turns: start one, send a message, retry a turn whose model
call failed, end it. Each action is one transaction; the model's responses are made by
`collection.generation`, the judgements by `collection.judgements`.

Every writer of a conversation locks in one order, so none deadlocks: the contractor's user row
(`lock_contractor`), then the conversation's or the turn's row.
"""

from __future__ import annotations

from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.utils import timezone

from .errors import CollectionError
from .generation import queue_generation
from .models import Campaign, Conversation, Turn


def conversation_start(*, campaign: Campaign, contractor) -> Conversation:
    """Open a new conversation in `campaign`, within the contractor's quota."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if campaign.closed_at is not None:
            raise CollectionError("This campaign is closed.")
        if not campaign.is_active:
            raise CollectionError("This campaign is paused (closed for now); try again later.")
        if campaign.lm_version is None:
            raise CollectionError(
                "This campaign holds imported data; it has no model to chat with."
            )
        held = Conversation.objects.filter(
            campaign=campaign, contractor=contractor, source=Conversation.Source.COLLECTED
        ).count()
        if held >= campaign.quota_per_contractor:
            raise CollectionError(
                f"You have reached this campaign's quota of {campaign.quota_per_contractor} "
                "conversations."
            )
        return Conversation.objects.create(campaign=campaign, contractor=contractor)


def check_owner(conversation: Conversation, contractor) -> None:
    """Refuse (PermissionError) anyone but the conversation's contractor."""
    if conversation.contractor_id != contractor.pk:
        raise PermissionError("not your conversation")


def lock_contractor(contractor) -> None:
    """Lock the contractor's user row until the transaction ends (serialises their writes)."""
    get_user_model().objects.select_for_update().filter(pk=contractor.pk).first()


def turn_submit(
    *, conversation: Conversation, contractor, text: str, judgement_type: str = ""
) -> Turn:
    """Add the contractor's message as a new turn and queue the model's k responses.

    In a mixed campaign `judgement_type` says how the contractor will judge this turn
    (pairwise: two responses on the scale; ranking: all k); elsewhere it must be empty or the
    campaign's own. Submitting the same text again while its turn is still open returns that
    turn (a double click or a retried request makes one turn).
    """
    text = text.strip()
    if not text:
        raise CollectionError("Write a message first.")
    limit = settings.COLLECTION_MAX_MESSAGE_CHARS
    if len(text) > limit:
        raise CollectionError(
            f"Messages are limited to {limit} characters (this one has {len(text)})."
        )
    with transaction.atomic():
        # The per-minute limit counts the contractor's turns in every conversation, so it holds
        # only under a per-contractor lock: their user row, always taken before the
        # conversation's (every writer locks in this order, so none deadlocks).
        lock_contractor(contractor)
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        check_owner(conversation, contractor)
        last = conversation.turns.order_by("-index").first()
        if last is not None and last.status != Turn.Status.JUDGED:
            if last.human_text == text:
                return last
            raise CollectionError("Judge the responses to your last message first.")
        if conversation.status != Conversation.Status.OPEN:
            raise CollectionError("This conversation has ended.")
        count = last.index + 1 if last else 0
        if count >= conversation.campaign.max_turns:
            raise CollectionError("This conversation has reached its maximum number of turns.")
        recent = Turn.objects.filter(
            conversation__contractor=contractor,
            created_at__gte=timezone.now() - timedelta(minutes=1),
        ).count()
        if recent >= settings.COLLECTION_MESSAGES_PER_MINUTE:
            raise CollectionError(
                "You are sending messages very fast; wait a minute and try again."
            )
        turn = Turn.objects.create(
            conversation=conversation,
            index=count,
            human_text=text,
            judgement_type=_turn_judgement_type(conversation.campaign, judgement_type),
        )
        queue_generation(turn)
    turn.refresh_from_db(fields=["status", "error"])  # the broker may have refused the task
    return turn


def _turn_judgement_type(campaign: Campaign, asked: str) -> str:
    """What a new turn stores as its judgement type: the contractor's pick in a mixed campaign."""
    kinds = Campaign.JudgementType
    if campaign.judgement_type != kinds.MIXED:
        if asked and asked != campaign.judgement_type:
            raise CollectionError(f"This campaign's turns are judged {campaign.judgement_type}.")
        return ""
    if asked not in (kinds.PAIRWISE, kinds.RANKING):
        raise CollectionError(
            f"Choose how to judge this turn: pairwise (2 responses) or ranking (all {campaign.k})."
        )
    return asked


def turn_retry(*, turn: Turn, contractor) -> Turn:
    """Queue generation again for a turn whose model call failed; the message is kept."""
    with transaction.atomic():
        turn = (
            Turn.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .get(pk=turn.pk)
        )
        check_owner(turn.conversation, contractor)
        if turn.status != Turn.Status.FAILED:
            return turn  # already queued or done: retrying twice is harmless
        turn.status, turn.error, turn.celery_task_id = Turn.Status.QUEUED, "", ""
        turn.save(update_fields=["status", "error", "celery_task_id"])
        queue_generation(turn)
    turn.refresh_from_db(fields=["status", "error"])  # the broker may have refused the task
    return turn


def mark_ended(conversation: Conversation) -> None:
    """End an open conversation (no owner check: the caller made it)."""
    Conversation.objects.filter(pk=conversation.pk, status=Conversation.Status.OPEN).update(
        status=Conversation.Status.ENDED, ended_at=timezone.now()
    )


def conversation_end(*, conversation: Conversation, contractor) -> Conversation:
    """End a conversation; ending it twice is harmless."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        check_owner(conversation, contractor)
        mark_ended(conversation)
    conversation.refresh_from_db()
    return conversation
