"""Evaluation suites as plain Python: data loaders and scoring loops, no Django, no database.

Each suite takes a model through a small interface and returns a JSON-ready dict:
- a preference model is anything with `score(texts) -> list[float]` (`assistant.pm.PMScorer`);
- a language model is an `assistant.backends.base.Backend` (`logprob`, `generate`).
Accuracy cells everywhere have the shape of `evals.stats.accuracy_with_ci`:
`{"accuracy", "n", "correct", "low", "high"}` (95% Wilson interval).
"""

from __future__ import annotations

from collections.abc import Sequence


def top_choice(scores: Sequence[float]) -> int | None:
    """Index of the single highest score, or None when two or more share the top.

    A tie counts as a wrong answer everywhere: a model that cannot tell two responses apart
    (a constant scorer, equal lengths for a length baseline) has not picked the better one.
    """
    best = max(scores)
    winners = [i for i, score in enumerate(scores) if score == best]
    return winners[0] if len(winners) == 1 else None
