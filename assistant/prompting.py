"""Turning a `Context` into the text a language model reads. Pure functions: no torch, no model.

Two renderings:

- "completion" (the paper's raw format): the prompt text, then "\\n\\nHuman: …" and
  "\\n\\nAssistant: …" turns, ending with "\\n\\nAssistant:" for the model to continue;
- "chat": the prompt as a system message, then the turns, through the tokenizer's chat template.

Either is split into a PREFIX that depends only on the prompt (the same for every conversation,
so a backend computes its key/value cache once) and the conversation SUFFIX.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Literal

from assistant import transcripts
from assistant.backends.base import Context, Message

RenderMode = Literal["chat", "completion"]


@dataclass(frozen=True)
class RenderedContext:
    """A context rendered as text: `prefix + suffix` is exactly what the model reads."""

    prefix: str  # depends only on the prompt: identical for every conversation with it
    suffix: str  # the conversation, ending where the assistant's reply begins
    dropped_turns: int = 0  # oldest messages left out to fit the context window

    @property
    def text(self) -> str:
        return self.prefix + self.suffix


def render_completion(context: Context) -> str:
    """The paper's raw transcript: prompt, Human/Assistant turns, then "\\n\\nAssistant:"."""
    return split_completion(context).text


def render_chat(context: Context, tokenizer) -> str:
    """The tokenizer's chat template over (prompt as system message) + turns, ready to reply."""
    return split_chat(context, tokenizer).text


def render(context: Context, *, mode: RenderMode, tokenizer=None) -> str:
    """`render_chat` or `render_completion`, by `mode`."""
    return split_prefix(context, mode=mode, tokenizer=tokenizer).text


def split_prefix(context: Context, *, mode: RenderMode, tokenizer=None) -> RenderedContext:
    """Render `context` as a fixed prompt prefix and a conversation suffix."""
    if mode == "completion":
        return split_completion(context)
    if mode == "chat":
        if tokenizer is None:
            raise ValueError("chat rendering needs the tokenizer (it holds the chat template)")
        return split_chat(context, tokenizer)
    raise ValueError(f"unknown render mode {mode!r}; known: chat, completion")


def split_completion(context: Context) -> RenderedContext:
    """The completion rendering, split after the prompt text."""
    # Trailing whitespace of a prompt file would otherwise pile up before "\n\nHuman:"; ending
    # the prefix on a non-space also keeps the tokenizer from merging across the split.
    prefix = context.prompt.rstrip() if context.prompt else ""
    suffix = transcripts.render(context.messages, strip=True) + transcripts.ASSISTANT
    if not prefix:
        suffix = suffix.lstrip("\n")  # no prompt: the transcript starts at "Human:"
    return RenderedContext(prefix=prefix, suffix=suffix)


def split_chat(context: Context, tokenizer) -> RenderedContext:
    """The chat rendering, split after the system message holding the prompt."""
    full = tokenizer.apply_chat_template(
        _chat_messages(context), tokenize=False, add_generation_prompt=True
    )
    if context.prompt is None:
        return RenderedContext(prefix="", suffix=full)
    prefix = tokenizer.apply_chat_template(
        [{"role": "system", "content": context.prompt}], tokenize=False
    )
    if not full.startswith(prefix):
        # A template that renders the system message differently once turns follow it: no
        # shared prefix to cache, but the text stays right.
        return RenderedContext(prefix="", suffix=full)
    return RenderedContext(prefix=prefix, suffix=full[len(prefix) :])


def fit_to_window(
    context: Context,
    *,
    mode: RenderMode,
    max_tokens: int,
    count_tokens: Callable[[str], int],
    tokenizer=None,
    prefix_tokens: int | None = None,
) -> RenderedContext:
    """Render `context` in at most `max_tokens` tokens, dropping the oldest messages first.

    The prompt and the last (user) message are never dropped; the kept conversation starts
    with a user message. `prefix_tokens` saves counting a prefix the caller has already counted.
    Raises ValueError when even the prompt and the last message do not fit.
    """
    messages = context.messages
    dropped = 0
    while True:
        rendered = split_prefix(replace(context, messages=messages), mode=mode, tokenizer=tokenizer)
        if prefix_tokens is None:
            prefix_tokens = count_tokens(rendered.prefix)
        used = prefix_tokens + count_tokens(rendered.suffix)
        if used <= max_tokens:
            return replace(rendered, dropped_turns=dropped)
        if len(messages) == 1:
            raise ValueError(
                f"the prompt and the last message take {used} tokens; the window allows "
                f"{max_tokens}"
            )
        messages, dropped = _drop_oldest(messages, dropped)


def _drop_oldest(messages: tuple[Message, ...], dropped: int) -> tuple[tuple[Message, ...], int]:
    """Drop the oldest message, then any assistant messages that would open the conversation."""
    messages, dropped = messages[1:], dropped + 1
    while messages[0].role != "user":
        messages, dropped = messages[1:], dropped + 1
    return messages, dropped


def _chat_messages(context: Context) -> list[dict]:
    system = [] if context.prompt is None else [{"role": "system", "content": context.prompt}]
    return system + [{"role": m.role, "content": m.content} for m in context.messages]
