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

from django.db.models import Prefetch

from assistant import transcripts

from .dataset_errors import DatasetError
from .models import Candidate, Judgement, Turn
from .selectors import responses_in_order
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


def _version_label(version) -> str | None:
    return None if version is None else f"{version.name}#{version.pk}"


def _prompt_label(prompt) -> str | None:
    return None if prompt is None else f"{prompt.name}@v{prompt.version}"


def iter_turn_items(
    groups, *, chunk_size: int = EXPORT_CHUNK, weights: dict[int, float] | None = None
) -> Iterator[TurnItem]:
    """The frozen turns with everything exports need: a few queries per chunk, none per row.
    `weights` (judgement id → weight) comes from a weighted snapshot; left out, each is 1."""
    for chunk in _chunks(groups, chunk_size):
        by_id = _turns(chunk)
        history = _histories(chunk)
        for conversation_id, turn_id, _ in chunk:
            turn = by_id.get(turn_id)
            if turn is None:
                raise DatasetError(f"turn {turn_id} of this snapshot no longer exists")
            campaign = turn.conversation.campaign
            yield TurnItem(
                conversation_id=conversation_id,
                turn_id=turn_id,
                campaign_id=campaign.pk,
                campaign=campaign.name,
                mode=campaign.mode,
                source=turn.conversation.source,
                context=[(h, a) for i, h, a in history[conversation_id] if i < turn.index],
                human=turn.human_text,
                responses=[
                    ResponseRow(
                        r.pk,
                        r.index,
                        r.text,
                        _version_label(r.model_version),
                        _prompt_label(r.prompt),
                        r.pm_score,
                        r.pm_rank,
                    )
                    for r in turn.responses.all()
                ],
                judgements=[_judgement_row(j, weights) for j in turn.judgements.all()],
                candidates=[
                    {"text": c.text, "pm_score": c.pm_score, "pm_rank": c.pm_rank}
                    for c in turn.candidates.all()
                ],
            )


def _turns(chunk) -> dict[int, Turn]:
    """The chunk's turns by id, with their campaign, responses and frozen judgements."""
    judgement_ids = [jid for _, _, ids in chunk for jid in ids]
    turn_ids = [turn_id for _, turn_id, _ in chunk]
    turns = (
        Turn.objects.filter(pk__in=turn_ids)
        .select_related("conversation__campaign")
        .prefetch_related(
            responses_in_order(),
            Prefetch("candidates", queryset=Candidate.objects.order_by("pm_rank", "pk")),
            Prefetch(
                "judgements",
                queryset=Judgement.objects.filter(pk__in=judgement_ids).order_by("pk"),
            ),
        )
    )
    return {turn.pk: turn for turn in turns.iterator(chunk_size=len(turn_ids))}


def _histories(chunk) -> dict[int, list[tuple[int, str, str]]]:
    """Per conversation of the chunk: (turn index, human text, chosen response text), in order."""
    history: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
    earlier = (
        Turn.objects.filter(conversation_id__in={c for c, _, _ in chunk})
        .order_by("conversation_id", "index")
        .values_list("conversation_id", "index", "human_text", "chosen_response__text")
    )
    for conversation_id, index, human, assistant in earlier:
        history[conversation_id].append((index, human, assistant or ""))
    return history


def _judgement_row(judgement: Judgement, weights: dict[int, float] | None) -> JudgementRow:
    return JudgementRow(
        judgement.pk,
        [int(r) for r in judgement.ranking],
        judgement.strength,
        list(judgement.flags or []),
        judgement.contractor_id,
        judgement.origin,
        [judgement.pk],
        tie=judgement.tie,
        both_bad=judgement.both_bad,
        weight=weights.get(judgement.pk, 1.0) if weights is not None else 1.0,
    )
