"""A contractor's judgement of a turn's responses: submitted (by its author, or by a reviewer
from the review queue), revised by its author until their next message, and the values stored
for each kind of judgement (pairwise scale or tie, ranking, red-team order).
"""

from __future__ import annotations

from django.db import transaction
from django.db.models import OuterRef, Subquery
from django.utils import timezone

from config.query_shapes import INT, PK, QueryShape, UpdateShape

from .conversations import check_owner, lock_contractor, mark_ended
from .errors import CollectionError
from .models import FLAGS, Campaign, GoldAnswer, Judgement, Response, Turn
from .pm_loop import agreement_record

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


def _locked_turn(turn: Turn, *, judged_by=None) -> Turn:
    """The turn, its row locked until the transaction ends, with its conversation and campaign.

    of=("self",): the turn's row only. Without it PostgreSQL also locks the joined conversation
    and campaign rows, and every judgement in a campaign would wait on that one campaign row.
    With `judged_by`, the turn's `judged_by_them` says the id of that contractor's judgement of
    it (None: none yet), read in the same query.
    """
    if judged_by is None:
        return _locked_turns(turn.pk).get()
    found = _LOCKED_TURN_JUDGED_BY.fetch(turn=turn, contractor=judged_by)  # on every submit
    if not found:
        raise Turn.DoesNotExist("Turn matching query does not exist.")
    return found[0]


def _locked_turns(turn):
    return (
        Turn.objects.select_for_update(of=("self",))
        .select_related("conversation__campaign")
        .filter(pk=turn)
    )


def _locked_turn_judged_by(turn, contractor):
    theirs = Judgement.objects.filter(turn=OuterRef("pk"), contractor=contractor)
    return _locked_turns(turn).annotate(judged_by_them=Subquery(theirs.values("pk")[:1]))


# Run on every submit: SQL written once per thread (config.query_shapes).
_LOCKED_TURN_JUDGED_BY = QueryShape(_locked_turn_judged_by, turn=PK, contractor=PK)


def _turn_judged(turn, count, shape):
    """The turn's UPDATE when a reviewer's judgement counts: its count, whether it waits for
    more, and the review queue's hold ended (`held`)."""
    needs_review, held = shape
    changes = {"judgement_count": count, "needs_review": needs_review}
    if held:
        changes |= {"review_claimed_by": None, "review_claimed_until": None}
    return Turn.objects.filter(pk=turn), changes


def _turn_chosen(turn, count, chosen, shape):
    """The same for its author's judgement, which also chooses the response and closes it."""
    queryset, changes = _turn_judged(turn, count, shape)
    return queryset, changes | {"status": Turn.Status.JUDGED, "chosen_response": chosen}


_TURN_JUDGED = UpdateShape(_turn_judged, turn=PK, count=INT)
_TURN_CHOSEN = UpdateShape(_turn_chosen, turn=PK, count=INT, chosen=PK)
_SHOWN = QueryShape(
    lambda turn: (
        Response.objects.filter(turn=turn)
        .order_by("index")
        .values_list("pk", "pm_score", "pm_version_id")
    ),
    turn=PK,
)


def _shown(turn: Turn) -> list[tuple[int, float | None, int | None]]:
    """(id, PM score, PM version id) of the turn's responses in display order: one query for
    both the judgement's order and the PM's blind prediction (`agreement_record`)."""
    return _SHOWN.fetch(turn=turn)


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
        turn = _locked_turn(turn, judged_by=contractor)
        if turn.judged_by_them is not None:
            return Judgement.objects.get(pk=turn.judged_by_them)
        campaign = turn.conversation.campaign
        is_author = turn.conversation.contractor_id == contractor.pk
        _check_judgeable(turn, is_author)
        shown = _shown(turn)
        values = _judgement_values(campaign, turn, ranking, scale, tie, shown=shown)
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
        held = turn.review_claimed_by_id is not None  # judged: the review queue's hold ends
        if held:
            turn.review_claimed_by, turn.review_claimed_until = None, None
        if is_author:
            turn.status, turn.chosen_response_id = Turn.Status.JUDGED, submitted[0]
        # What turn.save(update_fields=...) of the fields set above does, its SQL written once.
        shape, count = (turn.needs_review, held), turn.judgement_count
        if is_author:
            _TURN_CHOSEN.run(turn=turn, count=count, chosen=submitted[0], shape=shape)
        else:
            _TURN_JUDGED.run(turn=turn, count=count, shape=shape)
        # The PM's blind prediction of this turn, tested by the judgement (issue 14).
        agreement_record(judgement, campaign, shown=shown)
        if is_author and turn.index + 1 >= campaign.max_turns:
            mark_ended(turn.conversation)
    return judgement


def _check_judgeable(turn: Turn, is_author: bool) -> None:
    """Refuse a judgement the turn's state does not allow (the turn's row is locked)."""
    if is_author and turn.status != Turn.Status.READY:
        raise CollectionError("These responses are not ready to judge.")
    if not is_author and turn.status != Turn.Status.JUDGED:
        raise PermissionError("not your conversation")
    # Checked here, under the turn's lock, not only by the review queue a reviewer came
    # from: reviewers who loaded the same turn at once must not overshoot the target.
    # Gold items stay open to every contractor (they measure each one's accuracy).
    if (
        not is_author
        and turn.judgement_count >= turn.conversation.campaign.overlap_target
        and not GoldAnswer.objects.filter(turn=turn).exists()
    ):
        raise CollectionError(
            "This turn has all the judgements it needs; take the next one from the queue."
        )


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
    message and a revision never interleave), then the turn's row (only it, as
    `judgement_submit` locks it). Refused with a `CollectionError` once a later turn exists,
    when the judgement is part of a dataset snapshot (a snapshot's rows must not change after
    it was made), and for review judgements: a reviewer's judgement is final (it measures their
    agreement and gold accuracy as given, and reviewers have no next message that would end a
    revision window). Sending the values it already holds changes nothing: revising twice is
    harmless.
    """
    flags, note = _clean_flags(flags), _clean_note(note)
    with transaction.atomic():
        lock_contractor(contractor)
        turn = _locked_turn(turn)
        check_owner(turn.conversation, contractor)
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
        shown = _shown(turn)
        values = _judgement_values(
            turn.conversation.campaign, turn, ranking, scale, tie, shown=shown
        )
        values.update(both_bad=bool(both_bad), flags=flags, note=note)
        changed = [name for name, value in values.items() if getattr(judgement, name) != value]
        if not changed:
            return judgement
        for name in changed:
            setattr(judgement, name, values[name])
        judgement.revised_at = timezone.now()
        judgement.save(update_fields=[*changed, "revised_at"])
        # The PM's prediction, tested by the judgement as it is now.
        agreement_record(judgement, turn.conversation.campaign, shown=shown)
        if turn.chosen_response_id != judgement.submitted_ranking[0]:
            turn.chosen_response_id = judgement.submitted_ranking[0]
            turn.save(update_fields=["chosen_response"])
    return judgement


def _in_a_snapshot(judgement: Judgement) -> bool:
    """Whether a snapshot froze this judgement. Only snapshots made since the judgement can
    have (usually none, so this reads no file); one whose list cannot be read counts as
    holding it. A snapshot still being made when the revision commits is not seen."""
    from .dataset_errors import DatasetError
    from .models import DatasetSnapshot
    from .snapshots import snapshot_groups

    for snapshot in DatasetSnapshot.objects.filter(created_at__gte=judgement.created_at):
        try:
            groups = snapshot_groups(snapshot)
        except (DatasetError, OSError, ValueError, KeyError):
            return True
        if any(turn_id == judgement.turn_id and judgement.pk in ids for _, turn_id, ids in groups):
            return True
    return False


def _judgement_values(campaign: Campaign, turn: Turn, ranking, scale, tie, *, shown) -> dict:
    """The stored fields of a judgement: ranking, submitted_ranking, scale, strength, tie.

    A preference: `ranking` better first (a red teamer's first pick, the MORE harmful
    response, goes last), `submitted_ranking` as picked; pairwise `scale` 1…8 and `strength`
    1…4. A tie ("about the same", pairwise only): `tie` True, `scale` and `strength` empty,
    and both rankings list the two responses in display order (A, B), which states no
    preference; consensus, training and Elo read `tie` and leave the order out. The
    conversation continues with response A.
    """
    response_ids = [pk for pk, _, _ in shown]  # `_shown(turn)`, read under the turn's lock
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
