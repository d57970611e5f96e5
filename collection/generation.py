"""How a turn's responses are made: queued as a Celery task, sampled (plain, spread over a
campaign's arms, or best-of-n with the PM choosing which k to show), stored, and recovered by
the sweeper when a task or its worker is lost.

The model calls run outside any transaction: they take seconds and must not hold a lock.
"""

from __future__ import annotations

import logging
import random
import time
import uuid
from datetime import timedelta

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from assistant import jobs, runtime
from assistant.backends import BackendError, Message

from .models import Candidate, Response, Turn
from .pm_loop import (
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


def queue_generation(turn: Turn) -> None:
    """Send the turn's generation task once the current transaction commits."""
    transaction.on_commit(lambda: send_generation(turn.pk))


def send_generation(turn_id: int) -> bool:
    """Send the turn's generation task; when the broker refuses it, fail the turn with a
    message the contractor can act on (the message is kept, and `turn_retry` sends it again)."""
    from .tasks import generate_responses

    # The id is written before the task is sent (as jobs.job_enqueue does): a worker may claim
    # the turn as soon as the task is out, after which a queued-only update would be lost.
    task_id = uuid.uuid4().hex
    if not Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED).update(
        celery_task_id=task_id
    ):
        return False  # claimed or gone meanwhile: nothing to send
    if jobs.enqueue_safely(generate_responses, turn_id, task_id=task_id):
        return True
    Turn.objects.filter(pk=turn_id, status=Turn.Status.QUEUED, celery_task_id=task_id).update(
        status=Turn.Status.FAILED, error=QUEUE_UNAVAILABLE, celery_task_id=""
    )
    return False


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
        if jobs.task_is_gone(generate_responses, task_id) and send_generation(turn_id):
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

    Claims the turn with a conditional update, so a task delivered twice generates once. While
    the model streams, the text so far is saved on the turn every `COLLECTION_STREAM_SAVE_S`,
    for the contractor's page to show. A campaign comparing LM versions or sampling variants
    spreads the responses over its arms (see `assign_arms`), one batched call per arm. Whatever
    goes wrong fails the turn with a one-line reason; the message is kept for `turn_retry`.
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
    arms = campaign.arms()  # conversation_start refuses a campaign without an LM
    k = turn.offered_k
    best_of_n = candidate_count(campaign, k) > k
    if best_of_n and len(arms) > 1:
        raise RuntimeError("best-of-n samples one LM: this campaign also compares versions")
    # Best-of-n draws all n candidates in one batched call; plain sampling spreads k over arms.
    slots = (
        [0] * candidate_count(campaign, k) if best_of_n else assign_arms(len(arms), k, seed=turn.pk)
    )
    messages = conversation_messages(turn)  # one query, for the sampler and the PM
    candidates = _sample(turn, messages, arms, slots, stream=not best_of_n)
    pm, scores = _pm_scores(campaign, messages, candidates, required=best_of_n)
    if best_of_n:
        shown = choose_shown(scores, k, campaign.selection_rule, seed=turn.pk)
    else:
        shown = list(range(len(candidates)))
    rule = campaign.selection_rule if best_of_n else ""
    return _store(turn, candidates, shown, pm, scores, rule=rule, best_of_n=best_of_n)


def _sample(turn: Turn, messages, arms, slots: list[int], *, stream: bool) -> list[tuple]:
    """(sample, version, condition, params) of each slot, sampled one batched call per arm.

    The text so far is saved on the turn every `COLLECTION_STREAM_SAVE_S` (also the heartbeat
    the sweeper reads); with `stream` off (best-of-n: which candidates are shown is known only
    once all are scored) only the heartbeat.
    """
    texts = [""] * len(slots)
    samples: dict[int, tuple] = {}
    saved_at = time.monotonic()
    context = runtime.build_context(messages, turn.conversation.campaign.prompt)
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
                Turn.objects.filter(pk=turn.pk).update(
                    partial_texts=texts if stream else [], heartbeat_at=timezone.now()
                )
                saved_at = time.monotonic()
    missing = sorted(set(range(len(slots))) - set(samples))
    if missing:
        raise RuntimeError(f"the backend ended without finishing responses {missing}")
    return [samples[position] for position in range(len(slots))]


def _store(turn: Turn, candidates, shown: list[int], pm, scores, *, rule, best_of_n) -> Turn:
    """Store the shown candidates as the turn's responses (and, best-of-n, the others as
    `Candidate` rows) and mark it ready, only while the turn is still ours: the sweeper fails a
    turn whose worker went silent."""
    prompt = turn.conversation.campaign.prompt
    ranks = ranks_of(scores) if scores else None

    def pm_fields(i: int) -> dict:
        if scores is None:
            return {}
        return {"pm_version": pm, "pm_score": scores[i], "pm_rank": ranks[i]}

    with transaction.atomic():
        if not Turn.objects.filter(pk=turn.pk, status=Turn.Status.GENERATING).update(
            status=Turn.Status.READY,
            ready_at=timezone.now(),
            partial_texts=[],
            pm_uncertainty=smallest_gap([scores[i] for i in shown]) if scores else None,
        ):
            return Turn.objects.get(pk=turn.pk)
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
    return Turn.objects.get(pk=turn.pk)


def _pm_scores(campaign, messages, candidates, *, required: bool):
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
        return pm, score_turn_candidates(pm, messages, texts)
    except Exception:
        if required:
            raise
        logger.exception("PM %s could not score a turn; stored without scores", pm)
        return None, None


def _candidate(turn, prompt, sample, version, condition, params, *, rule, **pm) -> Candidate:
    return Candidate(
        turn=turn,
        **_sample_fields(prompt, sample, version, condition, params),
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
        **_sample_fields(prompt, sample, version, condition, params),
        prompt_tokens=sample.prompt_tokens,
        latency_s=sample.latency_s,
        dropped_turns=sample.dropped_turns,
    )


def _sample_fields(prompt, sample, version, condition, params) -> dict:
    """The fields of `Sample` (what a response and a candidate both store) from a backend's
    sample, without the PM's (set once the candidates are scored)."""
    return {
        "text": sample.text.strip(),  # a sampled NUL byte is replaced where it is stored (dbtext)
        "model_version": version,
        "prompt": prompt,
        "sampling_params": {
            "temperature": params.temperature,
            "top_p": params.top_p,
            "max_new_tokens": params.max_new_tokens,
            "stop": list(params.stop),
            "seed": params.seed,
        },
        "condition": condition,
        "completion_tokens": sample.completion_tokens,
        "logprob": sample.logprob,
        "finish_reason": sample.finish_reason,
    }
