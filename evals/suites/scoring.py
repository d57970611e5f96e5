"""Scoring many responses per conversation with a preference model, whatever the scorer."""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from assistant.pm import format_for_pm


def score_groups(scorer, groups: Sequence[tuple[Iterable, Sequence[str]]]) -> list[list[float]]:
    """Rewards per (messages, responses) group: `scorer.score_groups` where the scorer has it
    (`assistant.pm.PMScorer`: each conversation computed once), else one `score(texts)` call."""
    if hasattr(scorer, "score_groups"):
        return scorer.score_groups(groups)
    groups = [(list(messages), responses) for messages, responses in groups]
    texts = [format_for_pm(msgs, response) for msgs, responses in groups for response in responses]
    flat = iter(scorer.score(texts))
    return [[next(flat) for _ in responses] for _, responses in groups]
