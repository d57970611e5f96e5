"""Training data from a dataset snapshot: exactly the rows a researcher exports as "ranked"."""

from collection.datasets import export_rows
from collection.models import DatasetSnapshot

from .data import Ranking


def snapshot_rankings(snapshot: DatasetSnapshot, split: str) -> list[Ranking]:
    """The snapshot's rankings of one split ("train", "held_out" or "all"), better first.

    Tie rows ("about the same") are left out: they state no preference to learn from."""
    return [
        Ranking(
            responses=row["responses"],
            ranks=row["ranks"],
            context=row["context"],
            strength=row["strength"],
            weight=row["weight"],
            source=f"snapshot {snapshot.pk} judgement {row['judgement_id']}",
        )
        for row in export_rows(snapshot, "ranked", split=split)
        if not row["tie"]
    ]
