"""Snapshots: the judgements a filter selects, frozen so that exports and training read data
that never changes.

`snapshot_create` freezes the ids of the judgements a filter (`snapshot_filters`) selects, one
group per turn, into a file under MEDIA_ROOT, with counts and a content hash; a weighted
snapshot (`"weighting": "reliability"`) freezes each judgement's contractor weight too. The
readers (`snapshot_frozen`: groups and weights from one read; `snapshot_groups`,
`snapshot_judgement_ids`) give the frozen selection back.
"""

from __future__ import annotations

import hashlib
import json
import re
from array import array
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import OuterRef, Subquery

from assistant.files import staged_file

from .dataset_errors import DatasetError, SnapshotFilterError
from .frozen_turns import EXPORT_CHUNK, iter_turn_items
from .models import DatasetSnapshot, Judgement, Turn
from .snapshot_filters import (
    eval_prompts,
    filter_judgements,
    normalize_prompt,
    snapshot_filter_clean,
)
from .splits import held_out


def snapshot_create(
    *,
    filter: dict,
    created_by=None,
    name: str = "",
    progress: Callable[[str, int, int | None], None] | None = None,
    finishing: Callable[[DatasetSnapshot], None] | None = None,
) -> DatasetSnapshot:
    """Freeze the judgements `filter` selects: their ids (a file), counts and a content hash.

    `progress(stage, done, total)` hears how it goes ("selecting" judgements, then "hashing"
    turns); `finishing(snapshot)` runs inside the transaction that stores the snapshot, so
    that what it writes (a job's end) and the snapshot are stored together or not at all.
    """
    clean = snapshot_filter_clean(filter)
    frozen, skipped = _frozen_groups(clean, progress)
    weights = _reliability_weights(frozen) if clean.get("weighting") == "reliability" else None
    counts, content_hash = _snapshot_digest(
        frozen, consensus_only=clean["consensus_only"], weights=weights, progress=progress
    )
    counts["excluded_eval_prompts"] = skipped
    with transaction.atomic():
        snapshot = DatasetSnapshot.objects.create(
            name=name[:200],
            filter=clean,
            counts=counts,
            content_hash=content_hash,
            files={},
            created_by=created_by,
        )
        relative = f"snapshots/{snapshot.pk}/judgements.json"
        frozen_file = {"snapshot": snapshot.pk, "groups": frozen}
        if weights is not None:
            frozen_file["weights"] = {str(jid): w for jid, w in weights.items()}
        with staged_file(Path(settings.MEDIA_ROOT) / relative) as staging:
            staging.write_bytes(json.dumps(frozen_file).encode())
        snapshot.files = {"judgements": relative}
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(files=snapshot.files)
        if finishing is not None:
            finishing(snapshot)
    return snapshot


def _frozen_groups(clean: dict, progress) -> tuple[list[tuple[int, int, list[int]]], int]:
    """One group per turn, (conversation id, turn id, [judgement ids]), in a fixed order; and
    how many judgements the eval-prompt exclusion left out."""
    excluded = set()
    if "exclude_eval_prompts" in clean:
        excluded = eval_prompts(clean["exclude_eval_prompts"])
    groups: dict[int, tuple[int, int, list[int]]] = {}
    rows = filter_judgements(clean).order_by("turn__conversation_id", "turn_id", "pk")
    if excluded:
        first = Turn.objects.filter(conversation_id=OuterRef("turn__conversation_id"), index=0)
        rows = rows.annotate(first_human=Subquery(first.values("human_text")[:1]))
        rows = rows.values_list("turn__conversation_id", "turn_id", "pk", "first_human")
    else:
        rows = rows.values_list("turn__conversation_id", "turn_id", "pk")
    skipped = 0
    total = rows.count() if progress is not None else None
    for done, (conversation_id, turn_id, judgement_id, *first_human) in enumerate(
        rows.iterator(chunk_size=5000)
    ):
        if progress is not None and done % 5000 == 0:
            progress("selecting", done, total)
        if first_human and normalize_prompt(first_human[0] or "") in excluded:
            skipped += 1
            continue
        groups.setdefault(turn_id, (conversation_id, turn_id, []))[2].append(judgement_id)
    if not groups:
        raise SnapshotFilterError("no judgements match this filter")
    return sorted(groups.values()), skipped


def _reliability_weights(groups) -> dict[int, float]:
    """judgement id → its contractor's reliability weight as of now (collection/reliability.py),
    frozen into the snapshot so that its exports and training runs read the same weights."""
    from .reliability import judgement_weights

    ids = [jid for _, _, jids in groups for jid in jids]
    pairs = []
    for start in range(0, len(ids), EXPORT_CHUNK):
        chunk = ids[start : start + EXPORT_CHUNK]
        pairs += Judgement.objects.filter(pk__in=chunk).values_list("pk", "contractor_id")
    return judgement_weights(pairs)


def _snapshot_file(snapshot: DatasetSnapshot) -> dict:
    relative = snapshot.files.get("judgements")
    if not relative:
        raise DatasetError(f"snapshot {snapshot.pk} has no frozen judgement list")
    return json.loads((Path(settings.MEDIA_ROOT) / relative).read_text())


def snapshot_frozen(
    snapshot: DatasetSnapshot,
) -> tuple[list[tuple[int, int, list[int]]], dict[int, float] | None]:
    """The frozen groups (conversation id, turn id, judgement ids), in order, and the
    per-judgement reliability weights a `"weighting": "reliability"` snapshot froze (None for
    an unweighted one: every judgement counts once), from one read of the frozen file (read
    twice, a million groups were held twice: ~200 MB more at the peak of an export)."""
    frozen = _snapshot_file(snapshot)
    groups = frozen["groups"]
    for index, (conversation_id, turn_id, judgement_ids) in enumerate(groups):  # in place
        groups[index] = (conversation_id, turn_id, judgement_ids)
    weights = frozen.get("weights")
    if weights is not None:
        weights = {int(jid): float(w) for jid, w in weights.items()}
    return groups, weights


class FrozenGroups(Sequence):
    """The frozen groups in ~40 bytes a turn: conversation and turn ids as int64 arrays, the
    judgement ids flat with offsets. Items and slices read as `snapshot_frozen`'s tuples.

    Why: as lists from `json.loads`, a million groups take ~280 MB, which left an export of a
    million pairs at 387 MB against its 400 MB goal (bench/scale.py); as arrays, ~40 MB."""

    def __init__(self):
        self.conversations = array("q")
        self.turns = array("q")
        self.offsets = array("q", [0])
        self.judgements = array("q")

    def add(self, conversation_id: int, turn_id: int, judgement_ids) -> None:
        self.conversations.append(conversation_id)
        self.turns.append(turn_id)
        self.judgements.extend(judgement_ids)
        self.offsets.append(len(self.judgements))

    def __len__(self) -> int:
        return len(self.turns)

    def _group(self, index: int) -> tuple[int, int, list[int]]:
        start, end = self.offsets[index], self.offsets[index + 1]
        return self.conversations[index], self.turns[index], self.judgements[start:end].tolist()

    def __getitem__(self, index):
        if isinstance(index, slice):
            return [self._group(i) for i in range(*index.indices(len(self)))]
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(index)
        return self._group(index)

    def where(self, keep: Callable[[int], bool]) -> FrozenGroups:
        """The groups whose conversation id `keep` accepts (a split), in order."""
        kept = FrozenGroups()
        for index, conversation_id in enumerate(self.conversations):
            if keep(conversation_id):
                start, end = self.offsets[index], self.offsets[index + 1]
                kept.add(conversation_id, self.turns[index], self.judgements[start:end])
        return kept


class FrozenWeights(Mapping):
    """A weighted snapshot's judgement id → weight as two sorted numpy arrays (16 bytes an
    entry; a dict of a million floats is ~100 MB, and sorting them as Python pairs ~150 MB
    more), looked up by bisection."""

    def __init__(self, ids: array, values: array):
        import numpy as np

        ids = np.frombuffer(ids, dtype=np.int64)
        order = np.argsort(ids, kind="stable")  # snapshots write them in no particular order
        self.ids = ids[order]
        self.values = np.frombuffer(values, dtype=np.float64)[order]

    def __getitem__(self, judgement_id: int) -> float:
        index = int(self.ids.searchsorted(judgement_id))
        if index < len(self.ids) and self.ids[index] == judgement_id:
            return float(self.values[index])
        raise KeyError(judgement_id)

    def __iter__(self):
        return (int(judgement_id) for judgement_id in self.ids)

    def __len__(self) -> int:
        return len(self.ids)


# How `json.dumps` writes the frozen file: {"snapshot": N, "groups": [[conversation, turn,
# [judgements]], …], and for a weighted snapshot "weights": {"judgement id": weight, …}}.
_FROZEN_GROUP = re.compile(rb"\[(\d+), (\d+), \[([0-9, ]*)\]\]")
_FROZEN_WEIGHT = re.compile(rb'"(\d+)": (-?[0-9.]+(?:[eE][-+]?[0-9]+)?)')


def snapshot_frozen_compact(
    snapshot: DatasetSnapshot,
) -> tuple[FrozenGroups, FrozenWeights | dict[int, float] | None]:
    """`snapshot_frozen` as `FrozenGroups` (and `FrozenWeights`), read from the file's text
    without building a list per group or a dict of weights. A file this reader does not
    recognise (its counts disagree) is read by `json.loads`, with the same result."""
    relative = snapshot.files.get("judgements")
    if not relative:
        raise DatasetError(f"snapshot {snapshot.pk} has no frozen judgement list")
    data = (Path(settings.MEDIA_ROOT) / relative).read_bytes()
    start = data.find(b'"groups": [')
    weights_at = data.find(b'"weights": {')
    end = len(data) if weights_at < 0 else weights_at
    if start >= 0:
        groups = FrozenGroups()
        for match in _FROZEN_GROUP.finditer(data, start, end):
            conversation_id, turn_id, judgement_ids = match.groups()
            ids = map(int, judgement_ids.split(b",")) if judgement_ids else ()
            groups.add(int(conversation_id), int(turn_id), ids)
        weights, read_all = None, True
        if weights_at >= 0:
            ids, values = array("q"), array("d")
            for match in _FROZEN_WEIGHT.finditer(data, weights_at):
                ids.append(int(match[1]))
                values.append(float(match[2]))
            weights = FrozenWeights(ids, values)
            # As many as there are keys after "weights" (every key but "weights" itself).
            read_all = len(weights) == data.count(b'": ', weights_at) - 1
        if read_all and len(groups) == snapshot.counts.get("turns"):
            return groups, weights
    listed, weights = snapshot_frozen(snapshot)
    groups = FrozenGroups()
    for conversation_id, turn_id, judgement_ids in listed:
        groups.add(conversation_id, turn_id, judgement_ids)
    return groups, weights


def snapshot_groups(snapshot: DatasetSnapshot) -> list[tuple[int, int, list[int]]]:
    """The frozen selection: (conversation id, turn id, judgement ids) per turn, in order."""
    return snapshot_frozen(snapshot)[0]


def snapshot_judgement_ids(snapshot: DatasetSnapshot) -> list[int]:
    """Every judgement id the snapshot froze."""
    return [jid for _, _, ids in snapshot_groups(snapshot) for jid in ids]


_SPLIT_COUNTS = ("judgements", "rows", "pairs", "adjacent_pairs", "overlapping_turns")


def _snapshot_digest(
    groups, *, consensus_only: bool, weights=None, progress=None
) -> tuple[dict, str]:
    """Counts, and a hash of the rows' content that ignores ids and row order."""
    counts: Counter = Counter()
    digests = []
    items = iter_turn_items(groups, chunk_size=EXPORT_CHUNK, weights=weights)
    for done, item in enumerate(items):
        if progress is not None and done % 1000 == 0:
            progress("hashing", done, len(groups))
        split = item.split
        counts["judgements"] += len(item.judgements)
        counts[f"{split}_judgements"] += len(item.judgements)
        counts["turns"] += 1
        if len(item.judgements) > 1:
            counts["overlapping_turns"] += 1
            counts[f"{split}_overlapping_turns"] += 1
        for row in item.rows(consensus_only=consensus_only):
            k = len(row.ranking)
            for prefix in ("", f"{split}_"):
                counts[f"{prefix}rows"] += 1
                counts[f"{prefix}pairs"] += k * (k - 1) // 2
                counts[f"{prefix}adjacent_pairs"] += k - 1
            digests.append(_row_digest(item, row, weighted=weights is not None))
    conversations = {c for c, _, _ in groups}
    counts["conversations"] = len(conversations)
    counts["held_out_conversations"] = sum(held_out(c) for c in conversations)
    counts["train_conversations"] = len(conversations) - counts["held_out_conversations"]
    for split in ("train", "held_out"):
        for name in _SPLIT_COUNTS:
            counts.setdefault(f"{split}_{name}", 0)
    counts.setdefault("overlapping_turns", 0)
    content = hashlib.sha256(b"alignlab-snapshot-v1" + bytes([consensus_only]))
    for digest in sorted(digests):
        content.update(digest)
    return dict(sorted(counts.items())), content.hexdigest()


def _row_digest(item, row, *, weighted: bool) -> bytes:
    canonical = {
        "context": item.context,
        "human": item.human,
        "responses": [r.text for r in item.responses],
        "ranking": [item.position(rid) for rid in row.ranking],  # indices, not ids
        "strength": row.strength,
    }
    # Only when set, so the hashes of snapshots without either stay what they were.
    canonical.update({name: True for name in ("tie", "both_bad") if getattr(row, name)})
    if weighted:
        canonical["weight"] = round(row.weight, 9)
    payload = json.dumps(canonical, ensure_ascii=False, sort_keys=True)
    return hashlib.sha256(payload.encode()).digest()
