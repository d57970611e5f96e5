"""A snapshot's turns read back, chunk by chunk: each turn with its context, responses and the
judgements the snapshot froze, and the consensus of several judgements of one turn.

Conventions every reader of a snapshot (its hash, its exports) shares:

* A ranking lists responses better first; "chosen" is always the better response.
* Consensus of several judgements of one turn (overlapping review): the one consensus rule,
  `agreement.consensus_ranking` (Bradley–Terry over the judgements' preferences, each weighted
  by its reliability weight in a weighted snapshot). A tie judgement ("about the same") states
  no preference and is left out; when every judgement is a tie, so is the consensus. The
  consensus is "both bad" when any of its judgements said so (as flags add up).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from assistant import transcripts

from . import id_lists  # noqa: F401 - registers the `any_of` lookup used below
from .dataset_errors import DatasetError
from .models import Campaign, Candidate, Judgement, Response, Turn
from .splits import split_of

EXPORT_CHUNK = 500  # judgements read per query round


@dataclass
class ResponseRow:
    id: int
    index: int
    text: str
    model_version: str | None
    prompt_version: str | None
    pm_score: float | None = None  # the PM's blind score (collection/pm_loop.py), if scored
    pm_rank: int | None = None  # its rank among the turn's candidates, 1 = best


@dataclass
class JudgementRow:
    id: int | None  # None: the consensus of several judgements
    ranking: list[int]  # response ids, better first
    strength: int | None
    flags: list[str]
    contractor_id: int | None
    origin: str
    judgement_ids: list[int]
    tie: bool = False  # "about the same": `ranking` is the display order, no preference
    both_bad: bool = False
    weight: float = 1.0  # the contractor's reliability weight in a weighted snapshot, else 1


@dataclass
class TurnItem:
    conversation_id: int
    turn_id: int
    campaign_id: int
    campaign: str
    mode: str
    source: str
    context: list[tuple[str, str]]  # (human, assistant) before this turn
    human: str
    responses: list[ResponseRow]
    judgements: list[JudgementRow]
    # A best-of-n turn's unshown candidates: {"text", "pm_score", "pm_rank"}, best first.
    candidates: list[dict] = field(default_factory=list)

    @property
    def split(self) -> str:
        return split_of(self.conversation_id)

    def position(self, response_id: int) -> int:
        return next(r.index for r in self.responses if r.id == response_id)

    def consensus(self) -> JudgementRow:
        """The one consensus rule (`agreement.consensus_ranking`: Bradley–Terry over the
        judgements' preferences, each weighted by its row's weight); ties in strength go to the
        lower mean position, then the lower response id.

        Tie judgements state no preference and are left out; a consensus of ties only is a tie
        (display order)."""
        from .agreement import consensus_ranking

        preferences = [j for j in self.judgements if not j.tie]
        ranked = consensus_ranking(
            [j.ranking for j in preferences], [j.weight for j in preferences]
        )
        by_id = {r.id: r for r in self.responses}
        order = [by_id[rid] for rid in ranked if rid in by_id]
        order += [r for r in self.responses if r.id not in ranked]
        flags = sorted({flag for j in self.judgements for flag in j.flags})
        ids = [j.id for j in self.judgements]
        return JudgementRow(
            None,
            [r.id for r in order],
            None,
            flags,
            None,
            "consensus",
            ids,
            tie=not preferences,
            both_bad=any(j.both_bad for j in self.judgements),
        )

    def rows(self, *, consensus_only: bool) -> list[JudgementRow]:
        if consensus_only and len(self.judgements) > 1:
            return [self.consensus()]
        return self.judgements

    def messages(self) -> list[dict]:
        messages = []
        for human, assistant in self.context:
            messages.append({"role": "user", "content": human})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": self.human})
        return messages

    def transcript(self) -> str:
        """The context and this turn's human message, verbatim, as an HH-RLHF transcript."""
        return transcripts.render(self.messages())


def _chunks(groups, chunk_size: int) -> Iterator[list]:
    chunk, size = [], 0
    for group in groups:
        chunk.append(group)
        size += len(group[2])
        if size >= chunk_size:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def iter_turn_items(
    groups, *, chunk_size: int = EXPORT_CHUNK, weights: dict[int, float] | None = None
) -> Iterator[TurnItem]:
    """The frozen turns with everything exports need: a few queries per chunk, none per row.
    `weights` (judgement id → weight) comes from a weighted snapshot; left out, each is 1.

    Plain value rows, not model instances: building a million Django objects was most of an
    export's time (bench/scale.py: 775 pairs/s that way)."""
    campaigns: dict[int, tuple[str, str]] = {}
    for chunk in _chunks(groups, chunk_size):
        turns, history = _turns_and_histories(chunk)
        responses = _responses(turns)
        judgements = _judgements(chunk, weights)
        candidates = _candidates(turns)
        missing = {campaign_id for *_, campaign_id in turns.values()} - campaigns.keys()
        if missing:
            campaigns.update(
                (pk, (name, mode))
                for pk, name, mode in Campaign.objects.filter(pk__in=missing).values_list(
                    "pk", "name", "mode"
                )
            )
        for conversation_id, turn_id, _ in chunk:
            turn = turns.get(turn_id)
            if turn is None:
                raise DatasetError(f"turn {turn_id} of this snapshot no longer exists")
            index, human, source, campaign_id = turn
            name, mode = campaigns[campaign_id]
            yield TurnItem(
                conversation_id=conversation_id,
                turn_id=turn_id,
                campaign_id=campaign_id,
                campaign=name,
                mode=mode,
                source=source,
                context=[(h, a) for i, h, a in history[conversation_id] if i < index],
                human=human,
                responses=responses.get(turn_id, []),
                judgements=judgements.get(turn_id, []),
                candidates=candidates.get(turn_id, []),
            )


def _responses(turns) -> dict[int, list[ResponseRow]]:
    """The turns' responses in display order (A, B, …), labelled with version and prompt."""
    by_turn: dict[int, list[ResponseRow]] = defaultdict(list)
    rows = (
        Response.objects.filter(turn_id__any_of=turns.keys())
        .order_by("turn_id", "index")
        .values_list(
            "turn_id",
            "pk",
            "index",
            "text",
            "model_version_id",
            "model_version__name",
            "prompt_id",
            "prompt__name",
            "prompt__version",
            "pm_score",
            "pm_rank",
        )
    )
    for turn_id, pk, index, text, version_id, version, prompt_id, prompt, v, score, rank in rows:
        by_turn[turn_id].append(
            ResponseRow(
                pk,
                index,
                text,
                None if version_id is None else f"{version}#{version_id}",
                None if prompt_id is None else f"{prompt}@v{v}",
                score,
                rank,
            )
        )
    return by_turn


def _judgements(chunk, weights: dict[int, float] | None) -> dict[int, list[JudgementRow]]:
    """The judgements the chunk froze, per turn, in id order."""
    by_turn: dict[int, list[JudgementRow]] = defaultdict(list)
    rows = (
        Judgement.objects.filter(pk__any_of={jid for _, _, ids in chunk for jid in ids})
        .order_by("pk")
        .values_list(
            "turn_id",
            "pk",
            "ranking",
            "strength",
            "flags",
            "contractor_id",
            "origin",
            "tie",
            "both_bad",
        )
    )
    for turn_id, pk, ranking, strength, flags, contractor_id, origin, tie, both_bad in rows:
        by_turn[turn_id].append(
            JudgementRow(
                pk,
                [int(r) for r in ranking],
                strength,
                list(flags or []),
                contractor_id,
                origin,
                [pk],
                tie=tie,
                both_bad=both_bad,
                weight=weights.get(pk, 1.0) if weights is not None else 1.0,
            )
        )
    return by_turn


def _candidates(turns) -> dict[int, list[dict]]:
    """A best-of-n turn's unshown candidates, best first."""
    by_turn: dict[int, list[dict]] = defaultdict(list)
    rows = (
        Candidate.objects.filter(turn_id__any_of=turns.keys())
        .order_by("turn_id", "pm_rank", "pk")
        .values_list("turn_id", "text", "pm_score", "pm_rank")
    )
    for turn_id, text, score, rank in rows:
        by_turn[turn_id].append({"text": text, "pm_score": score, "pm_rank": rank})
    return by_turn


def _turns_and_histories(chunk) -> tuple[dict, dict]:
    """In one query, every turn of the chunk's conversations: the chunk's turns by id, (index,
    human text, conversation source, campaign id); and per conversation (turn index, human
    text, chosen response text), in order."""
    wanted = {turn_id for _, turn_id, _ in chunk}
    turns: dict[int, tuple[int, str, str, int]] = {}
    history: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    rows = (
        Turn.objects.filter(conversation_id__any_of={c for c, _, _ in chunk})
        .order_by("conversation_id", "index")
        .values_list(
            "conversation_id",
            "pk",
            "index",
            "human_text",
            "chosen_response__text",
            "conversation__source",
            "conversation__campaign_id",
        )
    )
    for conversation_id, pk, index, human, assistant, source, campaign_id in rows:
        history[conversation_id].append((index, human, assistant or ""))
        if pk in wanted:
            turns[pk] = (index, human, source, campaign_id)
    return turns, history
