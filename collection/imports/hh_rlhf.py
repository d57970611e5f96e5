"""HH-RLHF rows: {"chosen": transcript, "rejected": transcript}, the two sharing all but the end."""

from __future__ import annotations

from collections.abc import Iterator

from assistant.transcripts import ASSISTANT, HUMAN, common_prefix_length, message_text, parse

from ..dataset_errors import ImportFormatError
from .items import ImportItem, Skip, history_pairs


def parse_hh_rlhf(record: dict, line: int) -> Iterator[ImportItem | Skip]:
    """The row's one judged turn: chosen better than rejected, after their shared context."""
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ImportFormatError(f'missing "{key}"', line=line)
        if not isinstance(record[key], str):
            raise ImportFormatError(f'"{key}" is not a string', line=line)
    chosen, rejected = record["chosen"], record["rejected"]
    if not (chosen.startswith(HUMAN) and rejected.startswith(HUMAN)):
        yield Skip("not_starting_with_human")
        return
    split = _response_start(chosen, rejected)
    if split < 0:
        yield Skip("no_shared_assistant_turn")
        return
    notes = []
    if chosen[: chosen.rfind(ASSISTANT)] != rejected[: rejected.rfind(ASSISTANT)]:
        notes.append("contexts_differ")
    context = chosen[:split]
    messages = parse(context)
    if len(messages) != context.count(HUMAN) + context.count(ASSISTANT):
        notes.append("merged_repeated_speaker")
    chosen_text = message_text(chosen[split + len(ASSISTANT) :])
    rejected_text = message_text(rejected[split + len(ASSISTANT) :])
    if ASSISTANT in chosen_text or ASSISTANT in rejected_text:
        notes.append("response_with_several_assistant_messages")
    if chosen == rejected:
        notes.append("identical_pair")
    texts = [text for _, text in messages]
    yield ImportItem(history_pairs(texts), texts[-1], [chosen_text, rejected_text], [0, 1], notes)


def _response_start(chosen: str, rejected: str) -> int:
    """Where the two responses' Assistant marker starts; -1 when the transcripts share none.

    The last Assistant marker both transcripts share: usually the last one of each; in a few
    published rows one transcript has an extra Assistant message at the end, which then stays
    part of that response (verbatim), so the pair round-trips exactly. The responses start right
    after a human turn.
    """
    shared = common_prefix_length(chosen, rejected)
    split = chosen.rfind(ASSISTANT, 0, shared + len(ASSISTANT))
    while split >= 0 and not rejected.startswith(ASSISTANT, split):
        split = chosen.rfind(ASSISTANT, 0, split)
    if split < 0:
        return -1
    return chosen.find(ASSISTANT, chosen.rfind(HUMAN, 0, split))
