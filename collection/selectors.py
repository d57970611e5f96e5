"""Read queries of the collection app."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Count, Exists, F, OuterRef, Prefetch, Q
from django.utils import timezone

from config.query_shapes import PK, PKS, TIME, QueryShape, UpdateShape

from .models import Campaign, Conversation, Judgement, Response, ReviewOrder, Turn


def responses_in_order() -> Prefetch:
    """A turn's responses in display order (A, B, …), with their model version and prompt."""
    return Prefetch(
        "responses",
        queryset=Response.objects.select_related("model_version", "prompt").order_by("index"),
    )


def open_campaigns() -> list[Campaign]:
    return list(
        Campaign.objects.filter(is_active=True, closed_at__isnull=True).select_related(
            "lm_version", "prompt"
        )
    )


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
    """Turns this contractor may judge from the review queue (unordered; see `review_next`).

    A turn qualifies when it is a gold item or still wants judgements for its campaign's
    overlap target (`Turn.needs_review`, kept by `judgements.judgement_submit`), its campaign is
    active, and this contractor neither wrote it nor judged it yet.
    """
    return reviewable_turns(contractor=contractor).filter(
        Q(needs_review=True) | Q(gold__isnull=False)
    )


def review_queue_count(*, contractor, at_most: int | None = None) -> int:
    """How many turns `review_queue` holds, as two counts that each walk one small set (gold
    answers; the partial index of open turns) instead of one OR over the join of all turns.

    With `at_most`, counting stops there (the dashboard says "more than 100"): an exact count
    walks every open turn, 200,000 of them in a million judgements (0.4–1.5 s), and a LIMIT
    lets the database stop at the first `at_most`."""
    reviewable = reviewable_turns(contractor=contractor).order_by()  # no sort before the LIMIT
    gold = reviewable.filter(gold__isnull=False)
    open_turns = reviewable.filter(needs_review=True, gold__isnull=True)
    if at_most is None:
        return gold.count() + open_turns.count()
    found = gold[:at_most].count()
    return found + open_turns[: at_most - found].count() if found < at_most else found


def review_next(*, contractor, lock: bool = False) -> Turn | None:
    """The next turn for this contractor: the oldest gold item; else, in campaigns that review
    by PM uncertainty (active selection), the open turn whose shown responses the PM scored
    closest (unscored turns after the scored ones); else the oldest open turn.

    Each query walks one small set in index order (gold answers; the partial indexes of open
    turns by `created_at` and by `pm_uncertainty`) and stops at the first fit, so the cost
    does not grow with the number of finished turns.

    With `lock` (inside a transaction) an open turn is locked and ones that other
    transactions hold locked are skipped (PostgreSQL's FOR UPDATE SKIP LOCKED; SQLite, which
    runs one writer at a time, has no such clause and needs none).

    The querysets' SQL is written once per thread (`config.query_shapes`): this runs on every
    judgement, and building it cost several times what running it does.
    """
    gold = _GOLD_NEXT.fetch(contractor=contractor)
    if gold:
        return gold[0]
    # The campaigns first (a few rows): when none reviews by uncertainty the query below would
    # walk the whole uncertainty index only to drop every turn on the campaign's order.
    by_uncertainty = uncertainty_campaigns()
    now, uncertain = timezone.now(), []
    if by_uncertainty:
        uncertain = _UNCERTAIN_NEXT.fetch(
            contractor=contractor, now=now, campaigns=by_uncertainty, shape=lock
        )
    return (uncertain or _OPEN_NEXT.fetch(contractor=contractor, now=now, shape=lock) or [None])[0]


def _gold_next(contractor):
    return (
        reviewable_turns(contractor=contractor)
        .select_related("conversation__campaign")
        .filter(gold__isnull=False)
        .order_by("created_at")[:1]
    )


def _open_turns(contractor, now, lock: bool):
    """Open turns nobody else holds (handed out, not yet judged: they wait for that one)."""
    turns = (
        reviewable_turns(contractor=contractor)
        .select_related("conversation__campaign")
        .filter(needs_review=True)
        .filter(_unclaimed(contractor, now))
    )
    return turns.select_for_update(skip_locked=True, of=("self",)) if lock else turns


def _uncertain_next(contractor, now, campaigns, shape):
    return (
        _open_turns(contractor, now, shape)
        .filter(conversation__campaign_id__in=campaigns)
        .order_by(F("pm_uncertainty").asc(nulls_last=True), "created_at")[:1]
    )


_GOLD_NEXT = QueryShape(_gold_next, contractor=PK)
_UNCERTAINTY_CAMPAIGNS = QueryShape(
    lambda: Campaign.objects.filter(
        is_active=True, review_order=ReviewOrder.PM_UNCERTAINTY
    ).values_list("pk", flat=True)
)
_UNCERTAIN_NEXT = QueryShape(_uncertain_next, contractor=PK, now=TIME, campaigns=PKS)

# The active campaigns that review by PM uncertainty, asked on every claim, change when an
# admin edits a campaign: kept per process for COLLECTION_QUEUE_CAMPAIGNS_S seconds and
# forgotten at once when a campaign is saved or deleted here (collection.apps connects it).
# A list older than that costs only order: the queue's queries still take active campaigns
# only, and another process's edit (or a queryset .update()) shows within the seconds. A
# statement less per judgement (BENCHMARKS.md "Session 15"). Hand-written: cachetools'
# TTLCache would need the same lock and a signal all the same.
_uncertainty = {"until": 0.0, "campaigns": [], "generation": 0}
_uncertainty_lock = threading.Lock()


def uncertainty_campaigns() -> list[int]:
    """Ids of the active campaigns whose review queue goes by PM uncertainty, newest first."""
    now = time.monotonic()
    if now < _uncertainty["until"]:
        return _uncertainty["campaigns"]
    generation = _uncertainty["generation"]
    campaigns = list(_UNCERTAINTY_CAMPAIGNS.fetch())
    with _uncertainty_lock:
        if _uncertainty["generation"] == generation:  # not forgotten while it was asked
            _uncertainty.update(
                campaigns=campaigns, until=now + settings.COLLECTION_QUEUE_CAMPAIGNS_S
            )
    return campaigns


def uncertainty_campaigns_forget(**signal) -> None:
    """Ask the database again on the next claim (a campaign was saved or deleted): now, and
    after the transaction commits, when other threads see the change."""
    with _uncertainty_lock:
        _uncertainty.update(until=0.0, generation=_uncertainty["generation"] + 1)
    if transaction.get_connection(signal.get("using") or "default").in_atomic_block:
        transaction.on_commit(uncertainty_campaigns_forget, using=signal.get("using"))


_OPEN_NEXT = QueryShape(
    lambda contractor, now, shape: _open_turns(contractor, now, shape).order_by("created_at")[:1],
    contractor=PK,
    now=TIME,
)


CLAIM_TRIES = 5  # lost races for a hold before a turn is shown unheld


def review_claim_next(*, contractor) -> Turn | None:
    """`review_next`, held for this contractor for COLLECTION_REVIEW_CLAIM_S seconds, so that
    reviewers who open the queue at the same moment are handed different turns (gold items
    come first whoever holds them: every contractor judges them).

    The turn is found and held in one short transaction: on PostgreSQL the lookup skips the
    turns other reviewers are taking at that instant (SKIP LOCKED), so 50 reviewers opening
    the queue at once take 50 turns in one try each instead of racing for the oldest. The
    hold itself is a conditional UPDATE (only while nobody else holds the turn), so a turn is
    never held twice; a lost race tries the next, and after CLAIM_TRIES the turn is shown
    unheld (the submit refuses an overshoot with a message).
    """
    for _ in range(CLAIM_TRIES):
        with transaction.atomic():
            turn = review_next(contractor=contractor, lock=True)
            if turn is None or not turn.needs_review:  # none, or a gold item: everyone's
                return turn
            now = timezone.now()
            until = now + timedelta(seconds=settings.COLLECTION_REVIEW_CLAIM_S)
            held = _HOLD.run(turn=turn, contractor=contractor, now=now, until=until)
        if held:
            turn.review_claimed_by, turn.review_claimed_until = contractor, until
            return turn
    return turn


# The hold: only while nobody else holds the turn (SQL written once, config.query_shapes).
_HOLD = UpdateShape(
    lambda turn, contractor, now, until: (
        Turn.objects.filter(pk=turn).filter(_unclaimed(contractor, now)),
        {"review_claimed_by": contractor, "review_claimed_until": until},
    ),
    turn=PK,
    contractor=PK,
    now=TIME,
    until=TIME,
)


def _unclaimed(contractor, now=None) -> Q:
    """Turns nobody else holds: never handed out, the hold expired, or it is this contractor's."""
    return (
        Q(review_claimed_until__isnull=True)
        | Q(review_claimed_until__lt=now or timezone.now())
        | Q(review_claimed_by=contractor)
    )


def reviewable_turn(*, contractor, turn_id: int) -> Turn | None:
    """One turn this contractor may review (`reviewable_turns` with `judged_by_me`: a second
    submit finds the first judgement), with its conversation and campaign; None if not."""
    found = _REVIEWABLE_TURN.fetch(contractor=contractor, turn=turn_id)
    return found[0] if found else None


_REVIEWABLE_TURN = QueryShape(
    lambda contractor, turn: (
        reviewable_turns(contractor=contractor, judged_by_me=True)
        .select_related("conversation__campaign")
        .filter(pk=turn)
    ),
    contractor=PK,
    turn=PK,
)


def reviewable_turns(*, contractor, judged_by_me: bool = False):
    """Turns this contractor may give a second judgement to, in the queue or not (the submit
    refuses one that already has every judgement its campaign wants, saying so); with
    `judged_by_me`, also those they judged already."""
    turns = Turn.objects.filter(
        status=Turn.Status.JUDGED, conversation__campaign__is_active=True
    ).exclude(conversation__contractor=contractor)
    if judged_by_me:
        return turns
    mine = Judgement.objects.filter(turn=OuterRef("pk"), contractor=contractor)
    return turns.filter(~Exists(mine))
