"""TRL preference rows: {"prompt", "chosen", "rejected"}, as strings or lists of messages."""

from __future__ import annotations

from collections.abc import Iterator

from assistant.transcripts import common_prefix_length

from ..dataset_errors import ImportFormatError
from .items import ImportItem, Skip, history_pairs


def parse_trl(record: dict, line: int) -> Iterator[ImportItem | Skip]:
    """The row's one judged turn: chosen better than rejected, after the prompt."""
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ImportFormatError(f'missing "{key}"', line=line)
    prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
    if isinstance(chosen, str) or isinstance(rejected, str):
        # The "standard" (string) form: a single user prompt.
        if not (isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str)):
            raise ImportFormatError(
                'string rows need string "prompt", "chosen" and "rejected"', line=line
            )
        yield ImportItem([], prompt, [chosen, rejected], [0, 1])
        return
    chosen = _messages(chosen, "chosen", line)
    rejected = _messages(rejected, "rejected", line)
    if prompt is None:  # implicit prompt: the messages both conversations share
        shared = common_prefix_length(chosen, rejected)
        prompt_messages, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    else:
        prompt_messages = _messages(prompt, "prompt", line)
    yield _item(prompt_messages, chosen, rejected)


def _messages(value, key: str, line: int) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise ImportFormatError(f'"{key}" is neither a string nor a list of messages', line=line)
    messages = []
    for message in value:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ImportFormatError(f'"{key}" holds a message without role/content', line=line)
        messages.append((message["role"], message["content"]))
    return messages


def _item(prompt: list[tuple[str, str]], chosen, rejected) -> ImportItem | Skip:
    if any(role == "system" for role, _ in prompt):
        return Skip("system_message")  # no place for it: a turn is a human message + responses
    roles = [role for role, _ in prompt]
    if not roles or roles != ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]:
        return Skip("prompt_not_alternating_user_first")
    if roles[-1] != "user":
        return Skip("prompt_not_ending_with_user")
    completions = []
    for messages in (chosen, rejected):
        if len(messages) != 1 or messages[0][0] != "assistant":
            return Skip("completion_not_one_assistant_message")
        completions.append(messages[0][1])
    texts = [text for _, text in prompt]
    return ImportItem(history_pairs(texts), texts[-1], completions, [0, 1])
