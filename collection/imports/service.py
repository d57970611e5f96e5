"""Importing a preference file: validate every line, then write it all in one transaction.

`dataset_import_create` reads HH-RLHF, Open-Assistant and TRL preference files into a new
inactive campaign's conversations, turns, responses and judgements, tagged with their
`DatasetImport`. An import is idempotent (a file is recognised by its sha256) and
all-or-nothing: every line is validated before anything is written, a malformed line raises
`ImportFormatError` naming its line number, and the rows are written in one transaction.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from django.db import IntegrityError, transaction
from django.utils import timezone

from ..dataset_errors import DatasetError, ImportFormatError, Progress
from ..models import Campaign, Conversation, DatasetImport, Judgement, Response, Turn
from .items import ImportItem, Skip
from .reading import file_sha256, read_items

IMPORT_BATCH = 500  # items written per bulk_create round


def dataset_import_create(
    *,
    path: str | os.PathLike,
    format: str,
    mode: str = Campaign.Mode.HELPFUL,
    created_by=None,
    progress: Progress | None = None,
) -> DatasetImport:
    """Import a preference file (format "hh-rlhf", "oasst" or "trl") into a new inactive campaign.

    Idempotent: a file imported before (same sha256) returns its first import. All-or-nothing:
    every line is validated first; a bad line raises `ImportFormatError` ("line 17: …").
    """
    path = Path(path)
    _check_request(path, format, mode)
    sha256 = file_sha256(path)
    existing = DatasetImport.objects.filter(sha256=sha256).first()
    if existing is not None:
        return existing
    counts, largest_k = _validate(path, format, progress)
    try:
        with transaction.atomic():
            campaign = _import_campaign(path, format, mode, largest_k)
            dataset_import = DatasetImport.objects.create(
                format=format,
                source_name=path.name[:300],
                sha256=sha256,
                campaign=campaign,
                created_by=created_by,
            )
            counts["conversations"] = _write(path, format, dataset_import, counts, progress)
            dataset_import.counts = dict(sorted(counts.items()))
            dataset_import.save(update_fields=["counts"])
    except IntegrityError:
        # Another process imported the same file meanwhile: its import is the import.
        existing = DatasetImport.objects.filter(sha256=sha256).first()
        if existing is None:
            raise
        return existing
    return dataset_import


def _check_request(path: Path, format: str, mode: str) -> None:
    if format not in DatasetImport.Format.values:
        raise DatasetError(
            f"unknown import format {format!r} (use {', '.join(DatasetImport.Format.values)})"
        )
    if mode not in Campaign.Mode.values:
        raise DatasetError(f"unknown mode {mode!r} (use {', '.join(Campaign.Mode.values)})")
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")


def _validate(path: Path, format: str, progress: Progress | None) -> tuple[Counter, int]:
    """Pass 1: read every line and count; nothing is kept in memory. (counts, largest k)."""
    counts: Counter = Counter()
    largest_k = 2
    for number, item in read_items(path, format):
        counts["lines"] = number
        if item is None:
            counts["blank_lines"] += 1
        elif isinstance(item, Skip):
            counts[f"skipped_{item.reason}"] += 1
        else:
            counts["judgements"] += 1
            counts.update(item.notes)
            largest_k = max(largest_k, len(item.responses))
        if progress and number % 200 == 0:
            progress("validate", number, None)
    if progress:
        progress("validate", counts["lines"], counts["lines"])
    if not counts["judgements"]:
        raise ImportFormatError("the file holds no importable rows")
    return counts, largest_k


def _import_campaign(path: Path, format: str, mode: str, largest_k: int) -> Campaign:
    ranking = format == DatasetImport.Format.OASST
    return Campaign.objects.create(
        name=f"import: {path.name}"[:200],
        mode=mode,
        judgement_type=(
            Campaign.JudgementType.RANKING if ranking else Campaign.JudgementType.PAIRWISE
        ),
        k=largest_k if ranking else 2,
        lm_version=None,
        prompt=None,
        is_active=False,
        max_turns=1,
        quota_per_contractor=0,
    )


def _write(path: Path, format: str, dataset_import, counts: Counter, progress) -> int:
    """Pass 2 (inside the transaction): write every item in batches; how many were written."""
    campaign = dataset_import.campaign
    total = counts["judgements"]
    batch: list[ImportItem] = []
    done = 0
    longest = 1
    for _, item in read_items(path, format):
        if not isinstance(item, ImportItem):
            continue
        batch.append(item)
        longest = max(longest, len(item.history) + 1)
        if len(batch) == IMPORT_BATCH:
            done += _write_items(batch, campaign, dataset_import)
            batch = []
            if progress:
                progress("write", done, total)
    if batch:
        done += _write_items(batch, campaign, dataset_import)
    if progress:
        progress("write", done, total)
    Campaign.objects.filter(pk=campaign.pk).update(max_turns=longest)
    return done


def _write_items(items: list[ImportItem], campaign: Campaign, dataset_import) -> int:
    """Write a batch of items with a handful of bulk queries (pks come back on SQLite and PG)."""
    now = timezone.now()
    conversations = Conversation.objects.bulk_create(
        [
            Conversation(
                campaign=campaign,
                contractor=None,
                status=Conversation.Status.ENDED,
                source=Conversation.Source.IMPORTED,
                dataset_import=dataset_import,
                ended_at=now,
            )
            for _ in items
        ]
    )
    turns: list[Turn] = []
    for item, conversation in zip(items, conversations, strict=True):
        humans = [human for human, _ in item.history] + [item.human]
        turns.extend(
            Turn(
                conversation=conversation,
                index=i,
                human_text=human,
                status=Turn.Status.JUDGED,
                ready_at=now,
            )
            for i, human in enumerate(humans)
        )
    turns = Turn.objects.bulk_create(turns)
    responses = Response.objects.bulk_create(_responses(items, turns))
    judgements = _judgements(items, turns, responses)
    Turn.objects.bulk_update(turns, ["chosen_response", "judgement_count"], batch_size=IMPORT_BATCH)
    Judgement.objects.bulk_create(judgements)
    return len(items)


def _responses(items: list[ImportItem], turns: list[Turn]) -> list[Response]:
    responses: list[Response] = []
    position = 0
    for item in items:
        for _, assistant in item.history:  # history: the message the dialogue continued with
            responses.append(Response(turn=turns[position], index=0, text=assistant))
            position += 1
        responses.extend(
            Response(turn=turns[position], index=i, text=text)
            for i, text in enumerate(item.responses)
        )
        position += 1
    return responses


def _judgements(items, turns: list[Turn], responses: list[Response]) -> list[Judgement]:
    """The imported judgements; each turn's chosen response set on `turns` (saved by the caller)."""
    judgements: list[Judgement] = []
    position = cursor = 0
    for item in items:
        for _ in item.history:
            turns[position].chosen_response_id = responses[cursor].pk
            position, cursor = position + 1, cursor + 1
        ids = [responses[cursor + i].pk for i in range(len(item.responses))]
        ranking = [ids[i] for i in item.ranking]
        turns[position].chosen_response_id = ranking[0]
        turns[position].judgement_count = 1  # imported data is not offered for review
        judgements.append(
            Judgement(
                turn=turns[position],
                contractor=None,
                origin=Judgement.Origin.IMPORTED,
                ranking=ranking,
                submitted_ranking=ranking,
                scale=None,
                strength=None,
            )
        )
        position, cursor = position + 1, cursor + len(item.responses)
    return judgements
