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
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Case, Q, Value, When
from django.utils import timezone

from assistant import jobs, runtime
from assistant.backends import BackendError, Message

from .models import (
    FLAGS,
    Campaign,
    Candidate,
    Conversation,
    GoldAnswer,
    Judgement,
    Response,
    Turn,
)
from .pm_loop import (
    agreement_record,
    candidate_count,
    choose_shown,
    ranks_of,
    score_turn_candidates,
    scoring_pm,
    smallest_gap,
)

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
        turn = (
            Turn.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .get(pk=turn.pk)
        )
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
    k = turn.offered_k
    best_of_n = candidate_count(campaign, k) > k
    if best_of_n and len(arms) > 1:
        raise RuntimeError("best-of-n samples one LM: this campaign also compares versions")
    # Best-of-n draws all n candidates in one batched call; plain sampling spreads k over arms.
    slots = (
        [0] * candidate_count(campaign, k) if best_of_n else assign_arms(len(arms), k, seed=turn.pk)
    )
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
                # Also the heartbeat the sweeper reads: this worker is still writing. Best-of-n
                # streams nothing: which candidates are shown is known only once all are scored.
                Turn.objects.filter(pk=turn_id).update(
                    partial_texts=[] if best_of_n else texts, heartbeat_at=timezone.now()
                )
                saved_at = time.monotonic()
    missing = sorted(set(range(len(slots))) - set(samples))
    if missing:
        raise RuntimeError(f"the backend ended without finishing responses {missing}")
    candidates = [samples[position] for position in range(len(slots))]
    pm, scores = _pm_scores(campaign, turn, candidates, required=best_of_n)
    if best_of_n:
        shown = choose_shown(scores, k, campaign.selection_rule, seed=turn.pk)
    else:
        shown = list(range(len(candidates)))
    rule = campaign.selection_rule if best_of_n else ""
    ranks = ranks_of(scores) if scores else None

    def pm_fields(i: int) -> dict:
        if scores is None:
            return {}
        return {"pm_version": pm, "pm_score": scores[i], "pm_rank": ranks[i]}

    with transaction.atomic():
        # Only while the turn is still ours: the sweeper fails a turn whose worker went silent.
        if not Turn.objects.filter(pk=turn_id, status=Turn.Status.GENERATING).update(
            status=Turn.Status.READY,
            ready_at=timezone.now(),
            partial_texts=[],
            pm_uncertainty=smallest_gap([scores[i] for i in shown]) if scores else None,
        ):
            return Turn.objects.get(pk=turn_id)
        responses = []
        for position, i in enumerate(shown):
            response = _response(turn, position, prompt, *candidates[i])
            for name, value in pm_fields(i).items():
                setattr(response, name, value)
            response.candidates_n, response.selection_rule = len(candidates), rule
            responses.append(response)
        Response.objects.bulk_create(responses)
        if best_of_n:
            Candidate.objects.bulk_create(
                _candidate(turn, prompt, *candidates[i], rule=rule, **pm_fields(i))
                for i in range(len(candidates))
                if i not in shown
            )
    return Turn.objects.get(pk=turn_id)


def _pm_scores(campaign, turn, candidates, *, required: bool):
    """(PM, its score of each candidate) for the turn, or (None, None) when no PM scores it.

    Best-of-n needs the scores (no PM, or one that fails, fails the turn with the reason);
    plain sampling stores them when a PM is there and goes on without them if it fails.
    """
    pm = scoring_pm(campaign)
    if pm is None:
        if required:
            raise RuntimeError("best-of-n needs a preference model and none is active")
        return None, None
    try:
        texts = [sample.text.strip() for sample, *_ in candidates]
        return pm, score_turn_candidates(pm, conversation_messages(turn), texts)
    except Exception:
        if required:
            raise
        logger.exception("PM %s could not score turn %s; stored without scores", pm, turn.pk)
        return None, None


def _candidate(turn, prompt, sample, version, condition, params, *, rule, **pm) -> Candidate:
    shown = _response(turn, 0, prompt, sample, version, condition, params)
    return Candidate(
        turn=turn,
        text=shown.text,
        model_version=version,
        prompt=prompt,
        sampling_params=shown.sampling_params,
        condition=condition,
        completion_tokens=shown.completion_tokens,
        logprob=shown.logprob,
        finish_reason=shown.finish_reason,
        selection_rule=rule,
        **pm,
    )


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
    tie: bool = False,
    both_bad: bool = False,
) -> Judgement:
    """Record a contractor's judgement of a turn's responses, atomically with the turn it closes.

    Pairwise campaigns give `scale` (1 = A much better … 8 = B much better) or `tie` ("about
    the same", the middle of the scale; see `_judgement_values` for how it is stored); ranking
    campaigns give `ranking`, response ids in the contractor's order (their pick first).
    `both_bad` ("both are bad") goes with any judgement. A second submit by the same contractor
    returns the first judgement unchanged.
    """
    # An unknown flag, an overlong note or a negative time is refused (not cut quietly), with
    # the field it is about named for the form to show it there.
    flags, note = _clean_flags(flags), _clean_note(note)
    time_spent_ms = _clean_time_spent(time_spent_ms)
    with transaction.atomic():
        turn = (
            # of=("self",): the turn's row only. Without it PostgreSQL also locks the joined
            # conversation and campaign rows, and every judgement in a campaign would wait on
            # that one campaign row.
            Turn.objects.select_for_update(of=("self",))
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
        values = _judgement_values(campaign, turn, ranking, scale, tie)
        submitted = values["submitted_ranking"]
        judgement = Judgement.objects.create(
            turn=turn,
            contractor=contractor,
            origin=Judgement.Origin.CONVERSATION if is_author else Judgement.Origin.REVIEW,
            **values,
            both_bad=bool(both_bad),
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
        # The PM's blind prediction of this turn, tested by the judgement (issue 14).
        agreement_record(judgement)
        if is_author and turn.index + 1 >= campaign.max_turns:
            _end(turn.conversation)
    return judgement


def judgement_revise(
    *,
    turn: Turn,
    contractor,
    ranking: list[int] | None = None,
    scale: int | None = None,
    tie: bool = False,
    both_bad: bool = False,
    flags=(),
    note: str = "",
) -> Judgement:
    """Change the contractor's own judgement of their latest turn, until they send the next
    message: the scale point or tie (or the ranking), both-bad, flags and note. The
    conversation continues with the new first choice; `revised_at` says when it changed (the
    time spent stays the first judgement's).

    One transaction, under the locks the writers of a conversation take, in their order: the
    contractor's user row (`turn_submit` holds it while it adds the next message, so a next
    message and a revision never interleave), then the turn's row with its conversation's and
    campaign's (locked through the join, as `judgement_submit` locks them). Refused with a
    `CollectionError` once a later turn exists, when the judgement is part of a dataset
    snapshot (a snapshot's rows must not change after it was made), and for review
    judgements: a reviewer's judgement is final (it measures their agreement and gold accuracy
    as given, and reviewers have no next message that would end a revision window). Sending
    the values it already holds changes nothing: revising twice is harmless.
    """
    flags, note = _clean_flags(flags), _clean_note(note)
    with transaction.atomic():
        _lock_contractor(contractor)
        turn = (
            # of=("self",): the turn's row only. Without it PostgreSQL also locks the joined
            # conversation and campaign rows, and every judgement in a campaign would wait on
            # that one campaign row.
            Turn.objects.select_for_update(of=("self",))
            .select_related("conversation__campaign")
            .get(pk=turn.pk)
        )
        _check_owner(turn.conversation, contractor)
        judgement = Judgement.objects.filter(
            turn=turn, contractor=contractor, origin=Judgement.Origin.CONVERSATION
        ).first()
        if judgement is None or turn.status != Turn.Status.JUDGED:
            raise CollectionError("You have not judged these responses yet: judge them first.")
        if Turn.objects.filter(conversation_id=turn.conversation_id, index__gt=turn.index).exists():
            raise CollectionError(
                "You have sent your next message since this judgement, so it can no longer "
                "be changed."
            )
        if _in_a_snapshot(judgement):
            raise CollectionError(
                "This judgement is already part of a dataset snapshot, so it can no longer be "
                "changed."
            )
        values = _judgement_values(turn.conversation.campaign, turn, ranking, scale, tie)
        values.update(both_bad=bool(both_bad), flags=flags, note=note)
        changed = [name for name, value in values.items() if getattr(judgement, name) != value]
        if not changed:
            return judgement
        for name in changed:
            setattr(judgement, name, values[name])
        judgement.revised_at = timezone.now()
        judgement.save(update_fields=[*changed, "revised_at"])
        agreement_record(judgement)  # the PM's prediction, tested by the judgement as it is now
        if turn.chosen_response_id != judgement.submitted_ranking[0]:
            turn.chosen_response_id = judgement.submitted_ranking[0]
            turn.save(update_fields=["chosen_response"])
    return judgement


def _in_a_snapshot(judgement: Judgement) -> bool:
    """Whether a snapshot froze this judgement. Only snapshots made since the judgement can
    have (usually none, so this reads no file); one whose list cannot be read counts as
    holding it. A snapshot still being made when the revision commits is not seen."""
    from .datasets import DatasetError, snapshot_groups
    from .models import DatasetSnapshot

    for snapshot in DatasetSnapshot.objects.filter(created_at__gte=judgement.created_at):
        try:
            groups = snapshot_groups(snapshot)
        except (DatasetError, OSError, ValueError, KeyError):
            return True
        if any(turn_id == judgement.turn_id and judgement.pk in ids for _, turn_id, ids in groups):
            return True
    return False


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


def _judgement_values(campaign: Campaign, turn: Turn, ranking, scale, tie) -> dict:
    """The stored fields of a judgement: ranking, submitted_ranking, scale, strength, tie.

    A preference: `ranking` better first (a red teamer's first pick, the MORE harmful
    response, goes last), `submitted_ranking` as picked; pairwise `scale` 1…8 and `strength`
    1…4. A tie ("about the same", pairwise only): `tie` True, `scale` and `strength` empty,
    and both rankings list the two responses in display order (A, B), which states no
    preference; consensus, training and Elo read `tie` and leave the order out. The
    conversation continues with response A.
    """
    response_ids = list(turn.responses.order_by("index").values_list("pk", flat=True))
    pairwise = turn.judged_as == Campaign.JudgementType.PAIRWISE
    submitted, strength = _submitted_order(pairwise, response_ids, ranking, scale, tie)
    reverse = campaign.mode == Campaign.Mode.RED_TEAM and not tie
    return {
        "ranking": submitted[::-1] if reverse else submitted,
        "submitted_ranking": submitted,
        "scale": int(scale) if pairwise and not tie else None,
        "strength": strength,
        "tie": bool(tie),
    }


def _submitted_order(
    pairwise, response_ids, ranking, scale, tie=False
) -> tuple[list[int], int | None]:
    """The responses in the contractor's order, and the strength of a pairwise preference."""
    if tie:
        if not pairwise:
            raise CollectionError(
                "About the same is a point of the pairwise scale; rank the responses instead."
            )
        if scale is not None:
            raise CollectionError(
                "Choose one point: a side of the scale or about the same, not both.",
                field="scale",
            )
        return list(response_ids), None
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
