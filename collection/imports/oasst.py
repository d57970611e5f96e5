"""Open-Assistant message trees: one tree per line, ranked sibling assistant replies."""

from __future__ import annotations

from collections.abc import Iterator

from ..dataset_errors import ImportFormatError
from .items import MAX_K, ImportItem, Skip, history_pairs


def parse_oasst(tree: dict, line: int) -> Iterator[ImportItem | Skip]:
    """Every set of >= 2 ranked sibling assistant replies, with the path from the root to them."""
    root = tree.get("prompt")
    if not isinstance(root, dict):
        raise ImportFormatError('missing "prompt" (the root message)', line=line)
    stack: list[tuple[dict, list[dict]]] = [(root, [])]
    while stack:
        message, path = stack.pop()
        for key in ("text", "role"):
            if not isinstance(message.get(key), str):
                raise ImportFormatError(f'a message lacks "{key}"', line=line)
        replies = message.get("replies") or []
        if not isinstance(replies, list):
            raise ImportFormatError('"replies" is not a list', line=line)
        path = [*path, message]
        ranked = [
            r
            for r in replies
            if isinstance(r, dict)
            and r.get("role") == "assistant"
            and isinstance(r.get("rank"), int)
            and not r.get("deleted")
        ]
        if not all(isinstance(r.get("text"), str) for r in ranked):
            raise ImportFormatError('a message lacks "text"', line=line)
        if len(ranked) >= 2:
            yield _item(path, ranked)
        for reply in reversed(replies):  # reversed: the stack then visits them in file order
            if isinstance(reply, dict):
                stack.append((reply, path))


def _item(path: list[dict], ranked: list[dict]) -> ImportItem | Skip:
    roles = [m["role"] for m in path]
    if roles != ["prompter" if i % 2 == 0 else "assistant" for i in range(len(roles))]:
        return Skip("not_alternating")
    notes = []
    by_rank = sorted(range(len(ranked)), key=lambda i: (ranked[i]["rank"], i))
    if len(ranked) > MAX_K:
        notes.append("group_truncated_to_8")  # keep the 8 best: the ranking among them holds
        keep = sorted(by_rank[:MAX_K])
        ranked = [ranked[i] for i in keep]
        by_rank = sorted(range(len(ranked)), key=lambda i: (ranked[i]["rank"], i))
    texts = [m["text"] for m in path]
    return ImportItem(history_pairs(texts), texts[-1], [r["text"] for r in ranked], by_rank, notes)
