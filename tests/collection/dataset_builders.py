"""Collected data and import files written directly, for the dataset tests (the judging
services are tested elsewhere): rows counted, HH-RLHF lines, conversations with judgements."""

import json
from pathlib import Path

from collection.models import Campaign, Conversation, DatasetImport, Judgement, Response, Turn

MODELS = (Campaign, Conversation, Turn, Response, Judgement, DatasetImport)


def row_counts() -> dict:
    return {model.__name__: model.objects.count() for model in MODELS}


def hh_line(human: str, chosen: str, rejected: str) -> str:
    context = f"\n\nHuman: {human}"
    return json.dumps(
        {
            "chosen": f"{context}\n\nAssistant: {chosen}",
            "rejected": f"{context}\n\nAssistant: {rejected}",
        }
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def judgement_write(turn, contractor, ranking, **fields):
    """A judgement stored as submitted: its ranking is the one the contractor gave."""
    return Judgement.objects.create(
        turn=turn, contractor=contractor, ranking=ranking, submitted_ranking=ranking, **fields
    )


def collected(campaign, contractor, turns, *, judges=()):
    """A conversation whose turns are (human, [responses], better-first indices, strength).

    `judges` adds review judgements of the LAST turn: (contractor, better-first indices).
    """
    conversation = Conversation.objects.create(
        campaign=campaign, contractor=contractor, status=Conversation.Status.ENDED
    )
    for index, (human, texts, order, strength) in enumerate(turns):
        turn = Turn.objects.create(
            conversation=conversation, index=index, human_text=human, status=Turn.Status.JUDGED
        )
        responses = [
            Response.objects.create(turn=turn, index=i, text=t) for i, t in enumerate(texts)
        ]
        ranking = [responses[i].pk for i in order]
        judgement_write(
            turn, contractor, ranking, origin=Judgement.Origin.CONVERSATION, strength=strength
        )
        turn.chosen_response_id = ranking[0]
        turn.save(update_fields=["chosen_response"])
    for judge, order in judges:
        ranking = [responses[i].pk for i in order]
        judgement_write(turn, judge, ranking, origin=Judgement.Origin.REVIEW)
    return conversation
