"""The HH-RLHF transcript format: "\\n\\nHuman: …\\n\\nAssistant: …", rendered and read back.

Plain Python, no torch, no Django. The one place this format is written: the PM's input
(`assistant.pm.format_for_pm`), the completion prompt (`assistant.prompting`), the hh-rlhf
export and import (`collection.exports`, `collection.imports.hh_rlhf`), the HHH suite's
dialogue inputs (`evals.suites.hhh`) and the training rankings (`training.data`) all go
through these functions.

A message is a (role, text) pair, a `{"role", "content"}` dict or an object with `.role` and
`.content` (`assistant.backends.base.Message`); the roles are "user" (or "human") and
"assistant".
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

HUMAN = "\n\nHuman:"
ASSISTANT = "\n\nAssistant:"
_MARKERS = {"user": HUMAN, "human": HUMAN, "assistant": ASSISTANT}
_MARK = re.compile(r"\n\n(Human|Assistant):")
_ROLES = {"Human": "user", "Assistant": "assistant"}


def _role_and_text(message) -> tuple[str, str]:
    if isinstance(message, tuple):
        return message
    # Backends trade in `Message` objects; exports and APIs in plain dicts.
    if isinstance(message, dict):
        return message["role"], message["content"]
    return message.role, message.content


def render(messages: Iterable, *, strip: bool = False) -> str:
    """The transcript of `messages`: "\\n\\nHuman: text" / "\\n\\nAssistant: text" each.

    `strip=True` strips each text first (the PM's and the sampler's input: a sampler's leading
    space or trailing newline must not move a score); without it the text is written verbatim
    (exports: what was imported comes back out byte for byte). Raises ValueError for a role
    with no place in the format (a system message).
    """
    parts = []
    for message in messages:
        role, text = _role_and_text(message)
        if role not in _MARKERS:
            raise ValueError(f"a PM transcript has no place for role {role!r}")
        parts.append(f"{_MARKERS[role]} {text.strip() if strip else text}")
    return "".join(parts)


def reply_split(context: str, replies: Sequence[str]) -> tuple[str, list[str]]:
    """A rendered context and its candidate replies → (prefix, rests): `prefix + rest` is the
    transcript ending in that reply, as the PM reads it.

    The prefix is the context and the "\\n\\nAssistant:" tag; each rest is " " + the stripped
    reply. The prefix ends on ":" and every rest starts with a space, so no BPE merge crosses
    the border: the prefix can be tokenized once for all replies (packed scoring).
    """
    return context + ASSISTANT, [f" {reply.strip()}" for reply in replies]


def message_text(raw: str) -> str:
    """A message's text as written after its marker: every message in the published files is
    "Speaker: text", one space then the text verbatim."""
    return raw[1:] if raw.startswith(" ") else raw


def parse(transcript: str) -> list[tuple[str, str]]:
    """The (role, text) messages of a transcript; the inverse of `render`.

    Text before the first marker, if any, is a first human message (the HHH inputs start so;
    HH-RLHF transcripts start with the marker). Each text loses the one space after its marker
    (`message_text`). A speaker that talks twice in a row (a few published transcripts have
    two Assistant messages in a row) becomes one message holding the second marker verbatim,
    so that rendering the messages back reproduces the transcript exactly.
    """
    parts = _MARK.split(transcript)
    messages: list[tuple[str, str]] = [("user", parts[0])] if parts[0] else []
    for speaker, raw in zip(parts[1::2], parts[2::2], strict=True):
        role = _ROLES[speaker]
        if messages and messages[-1][0] == role:
            messages[-1] = (role, f"{messages[-1][1]}\n\n{speaker}:{raw}")
        else:
            messages.append((role, message_text(raw)))
    return messages


def common_prefix_length(a: Sequence, b: Sequence) -> int:
    """How many leading items (characters of two strings, messages of two lists) a and b share."""
    lo, hi = 0, min(len(a), len(b))
    while lo < hi:  # binary search on slices: fast in C even for long transcripts
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo
