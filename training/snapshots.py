"""Training data from a dataset snapshot: exactly the rows a researcher exports as "ranked".

Rankings for preference models, conversations for context distillation."""

from collection.exports import export_rows
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


def snapshot_conversations(snapshot: DatasetSnapshot):
    """(train, held_out) conversations for distillation, split as the snapshot splits them.

    One per conversation: the latest of its turns the snapshot selected, with the turns before
    it (each with the response that continued the conversation) and its best-ranked response.
    """
    from .distill import DistillationExample  # torch and transformers: only when distilling

    latest: dict[int, dict] = {}
    for row in export_rows(snapshot, "ranked"):
        if row["both_bad"]:  # its best response is still bad: nothing to imitate
            continue
        kept = latest.get(row["conversation_id"])
        if kept is None or len(row["context"]) > len(kept["context"]):
            latest[row["conversation_id"]] = row
    splits: dict[str, list] = {"train": [], "held_out": []}
    for _, row in sorted(latest.items()):
        best = row["responses"][row["ranks"].index(min(row["ranks"]))]
        splits[row["split"]].append(
            DistillationExample(
                messages=[*row["context"], {"role": "assistant", "content": best}],
                source=f"snapshot {snapshot.pk} turn {row['turn_id']}",
            )
        )
    return splits["train"], splits["held_out"]
