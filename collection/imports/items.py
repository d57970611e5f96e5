"""What an import line becomes: judged turns (`ImportItem`) or a counted reason to skip it."""

from __future__ import annotations

from dataclasses import dataclass, field

MAX_K = 8  # Campaign.k and the A…H response letters stop at 8


@dataclass
class ImportItem:
    """One judged turn with its history: `history` holds (human, assistant) pairs before it."""

    history: list[tuple[str, str]]
    human: str
    responses: list[str]
    ranking: list[int]  # indices into `responses`, better first
    notes: list[str] = field(default_factory=list)  # odd but accepted: counted in the import


@dataclass
class Skip:
    """A well-formed record the importer has no place for; `reason` is counted as skipped_…"""

    reason: str


def history_pairs(texts: list[str]) -> list[tuple[str, str]]:
    """Alternating human, assistant, human, … texts → the (human, assistant) pairs before the
    last human text."""
    return [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
