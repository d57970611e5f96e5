"""Actions that change collected data, each in one transaction.

Views, the API and Celery tasks all call these; they check ownership and state themselves, so
a caller cannot skip a rule. Errors a contractor can fix are `CollectionError`s with a message
meant for them.
"""

from __future__ import annotations

import logging
import random
import time
from datetime import timedelta

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from assistant import jobs, runtime
from assistant.backends import BackendError, Message

from .models import FLAGS, Campaign, Conversation, GoldAnswer, Judgement, Response, Turn

logger = logging.getLogger(__name__)

QUEUE_UNAVAILABLE = "The model queue is unavailable; your message is kept: try again."
WORKER_LOST = "The model stopped before it finished; your message is kept: try again."


class CollectionError(Exception):
    """A request a contractor made that the rules refuse; the message says why, and `field`
    names the form field it is about (None: the request as a whole)."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def campaign_save(*, campaign: Campaign) -> Campaign:
    """Validate (`full_clean()`) and save a new or changed campaign; when its overlap target
    changed, recompute its review queue. The admin and the API both save campaigns here.

    Raises `ValidationError` with the messages per field.
    """
    campaign.full_clean()
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


def conversation_start(*, campaign: Campaign, contractor) -> Conversation:
    """Open a new conversation in `campaign`, within the contractor's quota."""
    with transaction.atomic():
        campaign = Campaign.objects.select_for_update().get(pk=campaign.pk)
        if not campaign.is_active:
            raise CollectionError("This campaign is closed.")
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


def _check_owner(conversation: Conversation, contractor) -> None:
    if conversation.contractor_id != contractor.pk:
        raise PermissionError("not your conversation")


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
        _lock_contractor(contractor)
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        _check_owner(conversation, contractor)
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
        _queue_generation(turn)
    turn.refresh_from_db(fields=["status", "error"])  # the broker may have refused the task
    return turn


def _lock_contractor(contractor) -> None:
    """Lock the contractor's user row until the transaction ends (serialises their writes)."""
    get_user_model().objects.select_for_update().filter(pk=contractor.pk).first()


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
        turn = Turn.objects.select_for_update().select_related("conversation").get(pk=turn.pk)
        _check_owner(turn.conversation, contractor)
        if turn.status != Turn.Status.FAILED:
            return turn  # already queued or done: retrying twice is harmless
        turn.status, turn.error, turn.celery_task_id = Turn.Status.QUEUED, "", ""
        turn.save(update_fields=["status", "error", "celery_task_id"])
        _queue_generation(turn)
    turn.refresh_from_db(fields=["status", "error"])  # the broker may have refused the task
    return turn


def _queue_generation(turn: Turn) -> None:
    transaction.on_commit(lambda: _send_generation(turn.pk))


def _send_generation(turn_id: int) -> bool:
    """Send the turn's generation task; when the broker refuses it, fail the turn with a
    message the contractor can act on (the message is kept, and `turn_retry` sends it again)."""
    from .tasks import generate_responses

    task_id = jobs.enqueue_safely(generate_responses, turn_id)
    if task_id:
        Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED).update(celery_task_id=task_id)
    else:
        Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED).update(
            status=Turn.Status.FAILED, error=QUEUE_UNAVAILABLE
        )
    return bool(task_id)


def turns_sweep() -> dict:
    """Recover stranded turns; returns what was done, as lists of turn ids.

    - queued for over `JOBS_ENQUEUE_GRACE_S` with no live task (never sent, or its task ended
      without generating): sent again (a second task finds the turn claimed and does nothing);
    - generating with no word from its worker for `COLLECTION_GENERATION_TIMEOUT_S` (the worker
      died): failed, with the message kept for the contractor to retry.
    """
    from .tasks import generate_responses

    now = timezone.now()
    silent = now - timedelta(seconds=settings.COLLECTION_GENERATION_TIMEOUT_S)
    stuck = Turn.objects.filter(
        Q(heartbeat_at__lt=silent) | Q(heartbeat_at__isnull=True), status=Turn.Status.GENERATING
    )
    failed = list(stuck.values_list("pk", flat=True))
    if failed:
        logger.warning("turns %s: their generation worker went silent; failed them", failed)
        Turn.objects.filter(pk__in=failed, status=Turn.Status.GENERATING).update(
            status=Turn.Status.FAILED, partial_texts=[], error=WORKER_LOST
        )
    enqueued = []
    stale = Turn.objects.filter(
        status=Turn.Status.QUEUED,
        created_at__lt=now - timedelta(seconds=settings.JOBS_ENQUEUE_GRACE_S),
    )
    for turn_id, task_id in stale.values_list("pk", "celery_task_id"):
        if jobs.task_is_gone(generate_responses, task_id) and _send_generation(turn_id):
            enqueued.append(turn_id)
    if enqueued:
        logger.warning("turns %s: queued with no live task; sent again", enqueued)
    return {"failed": failed, "enqueued": enqueued}


def conversation_messages(turn: Turn) -> list[Message]:
    """The dialogue up to and including `turn`'s human message, as the model sees it."""
    messages = []
    earlier = turn.conversation.turns.filter(index__lt=turn.index).select_related("chosen_response")
    for previous in earlier.order_by("index"):
        messages.append(Message("user", previous.human_text))
        messages.append(Message("assistant", previous.chosen_response.text))
    messages.append(Message("user", turn.human_text))
    return messages


def turn_generate(*, turn_id: int) -> Turn | None:
    """Sample the turn's responses for a queued turn (called by the generation task).

    Claims the turn with a conditional update, so a task delivered twice generates once. The
    model calls run outside any transaction: they take seconds and must not hold a lock. While
    they stream, the text so far is saved on the turn every `COLLECTION_STREAM_SAVE_S`, for the
    contractor's page to show. A campaign comparing LM versions or sampling variants spreads the
    responses over its arms (see `assign_arms`), one batched call per arm. Whatever goes wrong
    fails the turn with a one-line reason; the message is kept for `turn_retry`.
    """
    claimed = Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED).update(
        status=Turn.Status.GENERATING, partial_texts=[], heartbeat_at=timezone.now()
    )
    if not claimed:
        return None
    try:
        return _generate(turn_id)
    except BackendError as error:
        return _generation_failed(
            turn_id,
            f"The model is not answering right now ({error}). Your message is kept: try again.",
        )
    except Exception as error:  # anything else: the turn must not stay "generating"
        logger.exception("generation of turn %s failed", turn_id)
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        return _generation_failed(
            turn_id, f"The model could not answer ({reason}). Your message is kept: try again."
        )


def _generate(turn_id: int) -> Turn:
    turn = Turn.objects.select_related(
        "conversation__campaign__lm_version", "conversation__campaign__prompt"
    ).get(pk=turn_id)
    campaign = turn.conversation.campaign
    prompt = campaign.prompt
    arms = campaign.arms()  # conversation_start refuses a campaign without an LM
    slots = assign_arms(len(arms), turn.offered_k, seed=turn.pk)
    texts = [""] * len(slots)
    samples: dict[int, tuple] = {}
    saved_at = time.monotonic()
    context = runtime.build_context(conversation_messages(turn), prompt)
    for arm, positions in _positions_per_arm(slots).items():
        version, condition, overrides = arms[arm]
        params = runtime.sampling_params(version, **overrides)
        backend = runtime.lm_backend(version)
        for event in backend.stream(context, len(positions), params):
            position = positions[event.index]
            texts[position] += event.delta
            if event.sample is not None:
                samples[position] = (event.sample, version, condition, params)
            if time.monotonic() - saved_at >= settings.COLLECTION_STREAM_SAVE_S:
                # Also the heartbeat the sweeper reads: this worker is still writing.
                Turn.objects.filter(pk=turn_id).update(
                    partial_texts=texts, heartbeat_at=timezone.now()
                )
                saved_at = time.monotonic()
    missing = sorted(set(range(len(slots))) - set(samples))
    if missing:
        raise RuntimeError(f"the backend ended without finishing responses {missing}")
    with transaction.atomic():
        # Only while the turn is still ours: the sweeper fails a turn whose worker went silent.
        if not Turn.objects.filter(pk=turn_id, status=Turn.Status.GENERATING).update(
            status=Turn.Status.READY, ready_at=timezone.now(), partial_texts=[]
        ):
            return Turn.objects.get(pk=turn_id)
        Response.objects.bulk_create(
            [
                _response(turn, position, prompt, *samples[position])
                for position in range(len(slots))
            ]
        )
    return Turn.objects.get(pk=turn_id)


def _generation_failed(turn_id: int, error: str) -> Turn:
    Turn.objects.filter(pk=turn_id, status=Turn.Status.GENERATING).update(
        status=Turn.Status.FAILED, partial_texts=[], error=error
    )
    return Turn.objects.get(pk=turn_id)


def assign_arms(n_arms: int, k: int, *, seed: int) -> list[int]:
    """The arm (an index) of each of k response positions: as many different arms as k allows,
    spread as evenly as possible, in positions shuffled by `seed` so that no arm owns "A"."""
    if n_arms < 1:
        raise ValueError("no arm to sample from")
    rng = random.Random(seed)
    order = rng.sample(range(n_arms), n_arms)
    slots = [order[i % n_arms] for i in range(k)]
    rng.shuffle(slots)
    return slots


def _positions_per_arm(slots: list[int]) -> dict[int, list[int]]:
    positions: dict[int, list[int]] = {}
    for position, arm in enumerate(slots):
        positions.setdefault(arm, []).append(position)
    return positions


def _response(turn, position, prompt, sample, version, condition, params) -> Response:
    return Response(
        turn=turn,
        index=position,
        text=sample.text.strip(),  # a sampled NUL byte is replaced where it is stored (dbtext)
        model_version=version,
        prompt=prompt,
        sampling_params={
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            "seed": params.seed,
        },
        condition=condition,
        prompt_tokens=sample.prompt_tokens,
        completion_tokens=sample.completion_tokens,
        logprob=sample.logprob,
        finish_reason=sample.finish_reason,
        latency_s=sample.latency_s,
        dropped_turns=sample.dropped_turns,
    )


NOTE_MAX_CHARS = 500  # Judgement.note's max_length
# A tab left open overnight is still a judgement: longer times are stored as one day.
TIME_SPENT_MAX_MS = 24 * 3600 * 1000


def _clean_flags(flags) -> list[str]:
    unknown = {str(flag) for flag in flags} - set(FLAGS)
    if unknown:
        raise CollectionError(
            f"Unknown flags: {', '.join(sorted(unknown))} (known: {', '.join(FLAGS)}).",
            field="flags",
        )
    return sorted(set(flags))


def _clean_note(note: str) -> str:
    note = note.strip()
    if len(note) > NOTE_MAX_CHARS:
        raise CollectionError(
            f"Notes are limited to {NOTE_MAX_CHARS} characters (this one has {len(note)}).",
            field="note",
        )
    return note


def _clean_time_spent(time_spent_ms) -> int:
    try:
        measured = int(time_spent_ms)
    except (TypeError, ValueError):
        measured = -1
    if measured < 0:
        raise CollectionError(
            f"The time spent must be a whole number of milliseconds, at least 0 (not "
            f"{time_spent_ms!r}).",
            field="time_spent_ms",
        )
    return min(measured, TIME_SPENT_MAX_MS)


def judgement_submit(
    *,
    turn: Turn,
    contractor,
    ranking: list[int] | None = None,
    scale: int | None = None,
    flags=(),
    note: str = "",
    time_spent_ms: int = 0,
) -> Judgement:
    """Record a contractor's judgement of a turn's responses, atomically with the turn it closes.

    Pairwise campaigns give `scale` (1 = A much better … 8 = B much better); ranking campaigns
    give `ranking`, response ids in the contractor's order (their pick first). A second submit
    by the same contractor returns the first judgement unchanged.
    """
    # An unknown flag, an overlong note or a negative time is refused (not cut quietly), with
    # the field it is about named for the form to show it there.
    flags, note = _clean_flags(flags), _clean_note(note)
    time_spent_ms = _clean_time_spent(time_spent_ms)
    with transaction.atomic():
        turn = (
            Turn.objects.select_for_update()
            .select_related("conversation__campaign")
            .get(pk=turn.pk)
        )
        existing = Judgement.objects.filter(turn=turn, contractor=contractor).first()
        if existing is not None:
            return existing
        campaign = turn.conversation.campaign
        is_author = turn.conversation.contractor_id == contractor.pk
        if is_author and turn.status != Turn.Status.READY:
            raise CollectionError("These responses are not ready to judge.")
        if not is_author and turn.status != Turn.Status.JUDGED:
            raise PermissionError("not your conversation")
        # Checked here, under the turn's lock, not only by the review queue a reviewer came
        # from: reviewers who loaded the same turn at once must not overshoot the target.
        # Gold items stay open to every contractor (they measure each one's accuracy).
        if (
            not is_author
            and turn.judgement_count >= campaign.overlap_target
            and not GoldAnswer.objects.filter(turn=turn).exists()
        ):
            raise CollectionError(
                "This turn has all the judgements it needs; take the next one from the queue."
            )
        response_ids = list(turn.responses.order_by("index").values_list("pk", flat=True))
        pairwise = turn.judged_as == Campaign.JudgementType.PAIRWISE
        submitted, strength = _submitted_order(pairwise, response_ids, ranking, scale)
        # Stored better-first: a red teamer's first pick is the MORE harmful response.
        better_first = submitted[::-1] if campaign.mode == Campaign.Mode.RED_TEAM else submitted
        judgement = Judgement.objects.create(
            turn=turn,
            contractor=contractor,
            origin=Judgement.Origin.CONVERSATION if is_author else Judgement.Origin.REVIEW,
            ranking=better_first,
            submitted_ranking=submitted,
            scale=scale if pairwise else None,
            strength=strength,
            flags=flags,
            note=note,
            time_spent_ms=time_spent_ms,
        )
        turn.judgement_count += 1
        turn.needs_review = turn.judgement_count < campaign.overlap_target
        fields = ["judgement_count", "needs_review"]
        if is_author:
            turn.status, turn.chosen_response_id = Turn.Status.JUDGED, submitted[0]
            fields += ["status", "chosen_response"]
        turn.save(update_fields=fields)
        if is_author and turn.index + 1 >= campaign.max_turns:
            _end(turn.conversation)
    return judgement


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


def _submitted_order(pairwise, response_ids, ranking, scale) -> tuple[list[int], int | None]:
    """The responses in the contractor's order, and the strength of a pairwise preference."""
    if pairwise:
        if scale is None or not 1 <= int(scale) <= 8:
            raise CollectionError(
                "Choose a point on the scale from 1 (A much better) to 8 (B much better)."
            )
        a, b = response_ids
        scale = int(scale)
        return ([a, b] if scale <= 4 else [b, a]), (5 - scale if scale <= 4 else scale - 4)
    if ranking is None or sorted(ranking) != sorted(response_ids):
        raise CollectionError(f"Rank all {len(response_ids)} responses, each once.")
    return [int(r) for r in ranking], None


def _end(conversation: Conversation) -> None:
    Conversation.objects.filter(pk=conversation.pk, status=Conversation.Status.OPEN).update(
        status=Conversation.Status.ENDED, ended_at=timezone.now()
    )


def conversation_end(*, conversation: Conversation, contractor) -> Conversation:
    """End a conversation; ending it twice is harmless."""
    with transaction.atomic():
        conversation = Conversation.objects.select_for_update().get(pk=conversation.pk)
        _check_owner(conversation, contractor)
        _end(conversation)
    conversation.refresh_from_db()
    return conversation


def gold_item_create(
    *,
    campaign: Campaign,
    admin,
    human_text: str,
    responses: list[str],
    best_index: int,
    explanation: str = "",
) -> Turn:
    """Make a gold item: a turn with fixed responses and a known best one, for the review queue."""
    kinds = Campaign.JudgementType
    judgement_type = ""
    if campaign.judgement_type == kinds.MIXED:  # a pair is judged pairwise, k are ranked
        if len(responses) not in (2, campaign.k):
            raise CollectionError(
                f"This campaign judges 2 responses (pairwise) or {campaign.k} (ranking); give "
                "either."
            )
        judgement_type = kinds.PAIRWISE if len(responses) == 2 else kinds.RANKING
    elif len(responses) != campaign.k:
        raise CollectionError(
            f"This campaign offers k = {campaign.k} responses; give {campaign.k}."
        )
    if not 0 <= best_index < len(responses):
        raise CollectionError("The best response must be one of the responses.")
    if not human_text.strip() or not all(text.strip() for text in responses):
        raise CollectionError("A gold item needs a message and non-empty responses.")
    with transaction.atomic():
        conversation = Conversation.objects.create(
            campaign=campaign,
            contractor=admin,
            source=Conversation.Source.GOLD,
            status=Conversation.Status.ENDED,
            ended_at=timezone.now(),
        )
        turn = Turn.objects.create(
            conversation=conversation,
            index=0,
            human_text=human_text.strip(),
            status=Turn.Status.JUDGED,
            ready_at=timezone.now(),
            judgement_type=judgement_type,
        )
        created = Response.objects.bulk_create(
            [
                Response(
                    turn=turn,
                    index=i,
                    text=text.strip(),
                    model_version=campaign.lm_version,
                    prompt=campaign.prompt,
                )
                for i, text in enumerate(responses)
            ]
        )
        GoldAnswer.objects.create(
            turn=turn, best_response=created[best_index], explanation=explanation, created_by=admin
        )
    return turn
