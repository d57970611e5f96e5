"""Exports: a snapshot streamed as HH-RLHF, TRL, ranked or raw rows, chunk by chunk, in constant
memory (`export_rows`), and written as jsonl or Parquet (`jsonl_chunks`, `write_parquet`,
`export_write`, `stream_export`). On PostgreSQL the hh-rlhf and TRL jsonl exports are rendered
by the database instead, to the same bytes (`export_sql`, `jsonl_chunks`).

Ties and "both bad": every row carries `tie` and `both_bad`. A tie row states no preference:
hh-rlhf/trl still write it as a chosen/rejected pair (display order A, B) so that counts and
shapes stay fixed, and TRL users drop it with `dataset.filter(lambda row: not row["tie"])`;
ranked/raw rows give both responses rank 0. Training and evals leave tie rows out. How several
judgements of one turn become one row, and the split rule: `frozen_turns`, `splits`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from itertools import combinations
from pathlib import Path

from django.conf import settings

from assistant import transcripts
from assistant.files import staged_file

from . import export_sql
from .dataset_errors import DatasetError, Progress
from .frozen_turns import EXPORT_CHUNK, JudgementRow, TurnItem, iter_turn_items
from .models import DatasetSnapshot
from .snapshots import snapshot_frozen_compact
from .splits import SPLITS, split_of

EXPORT_FORMATS = ("hh-rlhf", "trl", "ranked", "raw")
FILE_FORMATS = ("jsonl", "parquet")


# --- Rows ---------------------------------------------------------------------------------------


def contractor_pseudonym(user_id: int | None) -> str | None:
    """A stable pseudonymous contractor id for exports: sha256(SECRET_KEY + user id)[:12]."""
    if user_id is None:
        return None
    return hashlib.sha256(f"{settings.SECRET_KEY}{user_id}".encode()).hexdigest()[:12]


def strength_margin(strength: int | None) -> float:
    """TRL's reward margin from a pairwise strength: 1 slightly … 4 much better -> 0 … 1."""
    return 0.0 if strength is None else (strength - 1) / 3


def check_export_options(fmt: str, split: str, pairs: str) -> None:
    if fmt not in EXPORT_FORMATS:
        raise DatasetError(f"unknown export format {fmt!r} (use {', '.join(EXPORT_FORMATS)})")
    if split not in SPLITS:
        raise DatasetError(f"unknown split {split!r} (use {', '.join(SPLITS)})")
    if pairs not in ("all", "adjacent"):
        raise DatasetError(f"pairs must be 'all' or 'adjacent', got {pairs!r}")


def export_rows(
    snapshot: DatasetSnapshot,
    fmt: str,
    *,
    split: str = "all",
    pairs: str = "all",
    margin: bool = False,
    chunk_size: int = EXPORT_CHUNK,
) -> Iterator[dict]:
    """Stream the snapshot's rows in format "hh-rlhf", "trl", "ranked" or "raw" (a generator).

    hh-rlhf/trl expand a k-ranking into every better/worse pair (`pairs="all"`) or neighbours
    only (`pairs="adjacent"`); `margin=True` adds TRL's "margin" (see `strength_margin`).
    """
    check_export_options(fmt, split, pairs)
    return _export_rows(snapshot, fmt, split, pairs, margin, chunk_size)


def _frozen_split(snapshot, split: str):
    """The snapshot's frozen groups in `split` (arrays: ~40 bytes a turn) and its weights."""
    groups, weights = snapshot_frozen_compact(snapshot)
    if split != "all":
        groups = groups.where(lambda conversation_id: split_of(conversation_id) == split)
    return groups, weights


def _export_rows(snapshot, fmt, split, pairs, margin, chunk_size) -> Iterator[dict]:
    groups, weights = _frozen_split(snapshot, split)
    consensus_only = bool(snapshot.filter.get("consensus_only", False))
    for item in iter_turn_items(groups, chunk_size=chunk_size, weights=weights):
        if fmt == "raw":
            for row in item.judgements:
                yield _ranked_row(item, row, kind="judgement")
            if len(item.judgements) > 1:
                yield _ranked_row(item, item.consensus(), kind="consensus")
            continue
        for row in item.rows(consensus_only=consensus_only):
            if fmt == "ranked":
                yield _ranked_row(item, row)
            else:
                yield from _pair_rows(item, row, fmt, pairs, margin)


def _pair_rows(item: TurnItem, row: JudgementRow, fmt, pairs, margin) -> Iterator[dict]:
    text = {r.id: r.text for r in item.responses}
    order = row.ranking
    if pairs == "adjacent":
        chosen_rejected = list(zip(order, order[1:], strict=False))
    else:
        chosen_rejected = list(combinations(order, 2))
    if fmt == "hh-rlhf":
        context = item.transcript()
        for better, worse in chosen_rejected:
            yield {
                "chosen": context + transcripts.render([("assistant", text[better])]),
                "rejected": context + transcripts.render([("assistant", text[worse])]),
                "tie": row.tie,
                "both_bad": row.both_bad,
            }
        return
    prompt = item.messages()
    for better, worse in chosen_rejected:
        out = {
            "prompt": prompt,
            "chosen": [{"role": "assistant", "content": text[better]}],
            "rejected": [{"role": "assistant", "content": text[worse]}],
            "tie": row.tie,
            "both_bad": row.both_bad,
        }
        if margin:
            out["margin"] = strength_margin(row.strength)
        yield out


def _ranked_row(item: TurnItem, row: JudgementRow, kind: str | None = None) -> dict:
    # A tie places both responses first: no preference between them.
    place = {rid: 0 if row.tie else i for i, rid in enumerate(row.ranking)}
    versions = sorted({r.model_version for r in item.responses if r.model_version})
    prompts = sorted({r.prompt_version for r in item.responses if r.prompt_version})
    out = {
        "judgement_id": row.id,
        "judgement_ids": row.judgement_ids,
        "origin": row.origin,
        "conversation_id": item.conversation_id,
        "turn_id": item.turn_id,
        "split": item.split,
        "context": item.messages(),
        "responses": [r.text for r in item.responses],
        "response_ids": [r.id for r in item.responses],
        "ranks": [place[r.id] for r in item.responses],  # 0 = best, per response in A, B, … order
        "ranking": [item.position(rid) for rid in row.ranking],  # response indices, best first
        "strength": row.strength,
        "tie": row.tie,
        "both_bad": row.both_bad,
        "weight": row.weight,
        "flags": row.flags,
        "contractor": contractor_pseudonym(row.contractor_id),
        "campaign": item.campaign,
        "campaign_id": item.campaign_id,
        "mode": item.mode,
        "source": item.source,
        "model_version": ", ".join(versions) or None,
        "prompt_version": ", ".join(prompts) or None,
    }
    if kind is not None:  # raw: everything, the PM's blind view of the turn too
        out = {
            "kind": kind,
            **out,
            "pm_scores": [r.pm_score for r in item.responses],
            "pm_ranks": [r.pm_rank for r in item.responses],
            "unshown_candidates": item.candidates,
        }
    return out


def export_row_count(snapshot: DatasetSnapshot, fmt: str, *, split="all", pairs="all") -> int:
    """How many rows `export_rows` yields (from the snapshot's frozen counts; for progress bars)."""
    check_export_options(fmt, split, pairs)
    prefix = "" if split == "all" else f"{split}_"
    counts = snapshot.counts
    if fmt == "raw":
        return counts[f"{prefix}judgements"] + counts[f"{prefix}overlapping_turns"]
    if fmt == "ranked":
        return counts[f"{prefix}rows"]
    return counts[f"{prefix}{'adjacent_pairs' if pairs == 'adjacent' else 'pairs'}"]


# --- Writers ------------------------------------------------------------------------------------


def parquet_schema(fmt: str, *, margin: bool = False):
    """The pyarrow schema of an export format's rows."""
    import pyarrow as pa

    messages = pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))
    marks = [("tie", pa.bool_()), ("both_bad", pa.bool_())]
    if fmt == "hh-rlhf":
        return pa.schema([("chosen", pa.string()), ("rejected", pa.string()), *marks])
    if fmt == "trl":
        fields = [("prompt", messages), ("chosen", messages), ("rejected", messages), *marks]
        return pa.schema(fields + ([("margin", pa.float64())] if margin else []))
    if fmt not in ("ranked", "raw"):
        raise DatasetError(f"unknown export format {fmt!r} (use {', '.join(EXPORT_FORMATS)})")
    fields = [
        ("judgement_id", pa.int64()),
        ("judgement_ids", pa.list_(pa.int64())),
        ("origin", pa.string()),
        ("conversation_id", pa.int64()),
        ("turn_id", pa.int64()),
        ("split", pa.string()),
        ("context", messages),
        ("responses", pa.list_(pa.string())),
        ("response_ids", pa.list_(pa.int64())),
        ("ranks", pa.list_(pa.int64())),
        ("ranking", pa.list_(pa.int64())),
        ("strength", pa.int64()),
        *marks,
        ("weight", pa.float64()),
        ("flags", pa.list_(pa.string())),
        ("contractor", pa.string()),
        ("campaign", pa.string()),
        ("campaign_id", pa.int64()),
        ("mode", pa.string()),
        ("source", pa.string()),
        ("model_version", pa.string()),
        ("prompt_version", pa.string()),
    ]
    if fmt == "ranked":
        return pa.schema(fields)
    candidate = pa.struct(
        [("text", pa.string()), ("pm_score", pa.float64()), ("pm_rank", pa.int64())]
    )
    pm_view = [
        ("pm_scores", pa.list_(pa.float64())),
        ("pm_ranks", pa.list_(pa.int64())),
        ("unshown_candidates", pa.list_(candidate)),
    ]
    return pa.schema([("kind", pa.string()), *fields, *pm_view])


def write_parquet(
    rows: Iterable[dict], path: str | os.PathLike, schema, *, row_group_size: int = 1000
) -> int:
    """Write rows to a Parquet file, one row group per `row_group_size` rows; return how many."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    count = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        batch: list[dict] = []
        for row in rows:
            batch.append(row)
            if len(batch) == row_group_size:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                count, batch = count + len(batch), []
        if batch or count == 0:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))
            count += len(batch)
    return count


def export_write(
    *,
    snapshot: DatasetSnapshot,
    fmt: str,
    file_format: str,
    path: str | os.PathLike,
    progress: Progress | None = None,
    **options,
) -> int:
    """Export to a file (written to a temporary name, then renamed); return the row count."""
    if file_format not in FILE_FORMATS:
        raise DatasetError(f"unknown file format {file_format!r} (use jsonl or parquet)")
    split, pairs = options.get("split", "all"), options.get("pairs", "all")
    check_export_options(fmt, split, pairs)  # before anything is written
    total = None if progress is None else export_row_count(snapshot, fmt, split=split, pairs=pairs)
    with staged_file(path) as staging:
        if file_format == "parquet":
            rows = export_rows(snapshot, fmt, **options)
            if progress is not None:
                rows = _counting(rows, progress, total)
            return write_parquet(
                rows, staging, parquet_schema(fmt, margin=options.get("margin", False))
            )
        count = 0
        with staging.open("wb") as out:
            for body, written in jsonl_chunks(snapshot, fmt, **options):
                out.write(body)
                count += written
                if progress is not None:
                    progress("export", count, total)
        if progress is not None:
            progress("export", count, total)
        return count


def _counting(rows: Iterator[dict], progress: Progress, total: int | None) -> Iterator[dict]:
    done = 0
    for row in rows:
        yield row
        done += 1
        if done % 100 == 0:
            progress("export", done, total)
    progress("export", done, total)


def stream_export(
    snapshot: DatasetSnapshot,
    fmt: str,
    file_format: str = "jsonl",
    *,
    block_size: int = 1 << 16,
    **options,
) -> Iterator[bytes]:
    """Bytes of an export, block by block, for StreamingHttpResponse.

    jsonl is encoded as the rows come; Parquet is written to a temporary file first (its footer
    comes last), then streamed and removed.
    """
    if file_format not in FILE_FORMATS:
        raise DatasetError(f"unknown file format {file_format!r} (use jsonl or parquet)")
    # Both validate the options now, before the response starts.
    if file_format == "jsonl":
        return _blocks(jsonl_chunks(snapshot, fmt, block_size=block_size, **options), block_size)
    rows = export_rows(snapshot, fmt, **options)
    return _parquet_blocks(
        rows, parquet_schema(fmt, margin=options.get("margin", False)), block_size
    )


def jsonl_chunks(
    snapshot: DatasetSnapshot,
    fmt: str,
    *,
    split: str = "all",
    pairs: str = "all",
    margin: bool = False,
    block_size: int = 1 << 20,
    sql: bool | None = None,
) -> Iterator[tuple[bytes, int]]:
    """An export as JSON lines: (UTF-8 bytes, how many rows) block by block.

    On PostgreSQL the pair formats (hh-rlhf, TRL) are rendered by the database (`export_sql`:
    the same bytes, ~5x the rate at a million judgements, BENCHMARKS.md "Scale"); the rest,
    and `sql=False`, go through `export_rows` and `json.dumps`, about `block_size` bytes a
    block."""
    check_export_options(fmt, split, pairs)
    if sql is None:
        sql = export_sql.supported(fmt, "jsonl")
    if sql:
        groups, weights = _frozen_split(snapshot, split)
        consensus_only = bool(snapshot.filter.get("consensus_only", False))
        return export_sql.jsonl_chunks(groups, fmt=fmt, pairs=pairs, margin=margin,
                                       consensus_only=consensus_only, weights=weights)  # fmt: skip
    rows = _export_rows(snapshot, fmt, split, pairs, margin, EXPORT_CHUNK)
    return _jsonl_blocks(rows, block_size)


def _blocks(chunks: Iterator[tuple[bytes, int]], block_size: int) -> Iterator[bytes]:
    """The chunks' bytes in blocks of at most `block_size` (a database chunk is ~4 MB)."""
    for body, _ in chunks:
        for start in range(0, len(body), block_size):
            yield body[start : start + block_size]


def _jsonl_blocks(rows: Iterator[dict], block_size: int) -> Iterator[tuple[bytes, int]]:
    buffer, count = bytearray(), 0
    for row in rows:
        buffer += (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        count += 1
        if len(buffer) >= block_size:
            yield bytes(buffer), count
            buffer.clear()
            count = 0
    if buffer:
        yield bytes(buffer), count


def _parquet_blocks(rows: Iterator[dict], schema, block_size: int) -> Iterator[bytes]:
    handle, temporary = tempfile.mkstemp(suffix=".parquet")
    os.close(handle)
    try:
        write_parquet(rows, temporary, schema)
        with open(temporary, "rb") as parquet:
            yield from iter(lambda: parquet.read(block_size), b"")
    finally:
        Path(temporary).unlink(missing_ok=True)
