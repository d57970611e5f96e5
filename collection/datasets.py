"""Datasets: importing public preference data, freezing snapshots, streaming exports.

Three parts, each usable from the API, the researcher UI, management commands and Celery tasks:

* Imports (`dataset_import_create`) read HH-RLHF, Open-Assistant and TRL preference files into
  campaigns/conversations/turns/responses/judgements tagged with their `DatasetImport`. An import
  is idempotent (a file is recognised by its sha256) and all-or-nothing: every line is validated
  before anything is written, a malformed line raises `ImportFormatError` naming its line number,
  and the rows are written in one transaction.
* Snapshots (`snapshot_create`) freeze the ids of the judgements a filter selects, with counts and
  a content hash, so that exports and training read data that never changes.
* Exports (`export_rows`, `write_jsonl`, `write_parquet`, `stream_export`, `export_write`) stream a
  snapshot as HH-RLHF, TRL, ranked or raw rows, chunk by chunk, in constant memory.

Conventions shared by the three:

* A ranking lists responses better first; "chosen" is always the better response.
* Train / held-out split, by conversation so that no conversation straddles the two:
  a conversation is held out when ``int(sha256(str(conversation_id)).hexdigest(), 16) % 10 == 0``.
* Consensus of several judgements of one turn (overlapping review): Borda count. In a ranking of
  k responses the response at position i (0 = best) gets k - 1 - i points; the consensus orders
  responses by total points, ties going to the lower response index (display position A, B, …).
  A tie judgement ("about the same") gives no points; when every judgement is a tie, so is the
  consensus. The consensus is "both bad" when any of its judgements said so (as flags add up).
* Ties and "both bad": every row carries `tie` and `both_bad`. A tie row states no preference:
  hh-rlhf/trl still write it as a chosen/rejected pair (display order A, B) so that counts and
  shapes stay fixed, and TRL users drop it with `dataset.filter(lambda row: not row["tie"])`;
  ranked/raw rows give both responses rank 0. Training and evals leave tie rows out.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import tempfile
import zlib
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, time
from itertools import combinations
from pathlib import Path
from typing import Any, BinaryIO, TextIO

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import OuterRef, Prefetch, Q, Subquery
from django.utils import timezone
from django.utils.dateparse import parse_date, parse_datetime

from .models import (
    Campaign,
    Conversation,
    DatasetImport,
    DatasetSnapshot,
    Judgement,
    Response,
    Turn,
)

# A progress callback: (stage, done, total or None when not known yet).
Progress = Callable[[str, int, "int | None"], None]

MAX_K = 8  # Campaign.k and the A…H response letters stop at 8
IMPORT_BATCH = 500  # items written per bulk_create round
EXPORT_CHUNK = 500  # judgements read per query round when exporting
SPLITS = ("train", "held_out", "all")
EXPORT_FORMATS = ("hh-rlhf", "trl", "ranked", "raw")
FILE_FORMATS = ("jsonl", "parquet")


class DatasetError(Exception):
    """A dataset request that cannot be carried out; the message says why."""


class ImportFormatError(DatasetError):
    """A file that is not in the format it was imported as; the message names the line."""

    def __init__(self, message: str, *, line: int | None = None):
        super().__init__(f"line {line}: {message}" if line is not None else message)
        self.line = line


class SnapshotFilterError(DatasetError, ValidationError):
    """A snapshot filter with an unknown key or a bad value (HTTP 400 in the API)."""

    def __init__(self, message: str):
        ValidationError.__init__(self, message)

    def __str__(self) -> str:
        return self.message


# --- Items: what an import line becomes -------------------------------------------------------


@dataclass
class ImportItem:
    """One judged turn with its history: `history` holds (human, assistant) pairs before it."""

    history: list[tuple[str, str]]
    human: str
    responses: list[str]
    ranking: list[int]  # indices into `responses`, better first
    notes: list[str] = field(default_factory=list)  # odd but accepted: counted in the import


@dataclass
class _Skip:
    reason: str


# --- HH-RLHF ----------------------------------------------------------------------------------

_HH_MARK = re.compile(r"\n\n(Human|Assistant):")
_HUMAN, _ASSISTANT = "\n\nHuman:", "\n\nAssistant:"


def _hh_text(raw: str) -> str:
    # Every message in the published files is "Speaker: text": one space, then the text verbatim.
    return raw[1:] if raw.startswith(" ") else raw


def _hh_messages(transcript: str) -> list[tuple[str, str]]:
    """Split "\\n\\nHuman: …\\n\\nAssistant: …" into (speaker, text), merging repeated speakers.

    A speaker that talks twice in a row (a few published transcripts have two Assistant
    messages in a row) becomes one message holding the second marker verbatim, so that writing
    the transcript back reproduces it exactly.
    """
    parts = _HH_MARK.split(transcript)
    messages: list[tuple[str, str]] = []
    for speaker, raw in zip(parts[1::2], parts[2::2], strict=True):
        if messages and messages[-1][0] == speaker:
            messages[-1] = (speaker, f"{messages[-1][1]}\n\n{speaker}:{raw}")
        else:
            messages.append((speaker, _hh_text(raw)))
    return messages


def _common_prefix_length(a: str, b: str) -> int:
    n = min(len(a), len(b))
    lo, hi = 0, n  # binary search on slices: fast in C even for long transcripts
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if a[:mid] == b[:mid]:
            lo = mid
        else:
            hi = mid - 1
    return lo


def _parse_hh(record: dict, line: int) -> ImportItem | _Skip:
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ImportFormatError(f'missing "{key}"', line=line)
        if not isinstance(record[key], str):
            raise ImportFormatError(f'"{key}" is not a string', line=line)
    chosen, rejected = record["chosen"], record["rejected"]
    if not (chosen.startswith(_HUMAN) and rejected.startswith(_HUMAN)):
        return _Skip("not_starting_with_human")
    notes = []
    # Split at the last Assistant marker both transcripts share. Usually that is the last one
    # of each; in a few published rows one transcript has an extra Assistant message at the end,
    # which then stays part of that response (verbatim), so the pair round-trips exactly.
    shared = _common_prefix_length(chosen, rejected)
    split = chosen.rfind(_ASSISTANT, 0, shared + len(_ASSISTANT))
    while split >= 0 and not rejected.startswith(_ASSISTANT, split):
        split = chosen.rfind(_ASSISTANT, 0, split)
    if split < 0:
        return _Skip("no_shared_assistant_turn")
    last_human = chosen.rfind(_HUMAN, 0, split)
    split = chosen.find(_ASSISTANT, last_human)  # the responses start right after a human turn
    if chosen[: chosen.rfind(_ASSISTANT)] != rejected[: rejected.rfind(_ASSISTANT)]:
        notes.append("contexts_differ")
    messages = _hh_messages(chosen[:split])
    if len(messages) != len(_HH_MARK.findall(chosen[:split])):
        notes.append("merged_repeated_speaker")
    chosen_text = _hh_text(chosen[split + len(_ASSISTANT) :])
    rejected_text = _hh_text(rejected[split + len(_ASSISTANT) :])
    if _ASSISTANT in chosen_text or _ASSISTANT in rejected_text:
        notes.append("response_with_several_assistant_messages")
    if chosen == rejected:
        notes.append("identical_pair")
    history = [(messages[i][1], messages[i + 1][1]) for i in range(0, len(messages) - 1, 2)]
    return ImportItem(history, messages[-1][1], [chosen_text, rejected_text], [0, 1], notes)


# --- Open-Assistant message trees -------------------------------------------------------------


def _oasst_groups(tree: dict, line: int) -> Iterator[ImportItem | _Skip]:
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
            yield _oasst_item(path, ranked)
        for reply in reversed(replies):  # reversed: the stack then visits them in file order
            if isinstance(reply, dict):
                stack.append((reply, path))


def _oasst_item(path: list[dict], ranked: list[dict]) -> ImportItem | _Skip:
    roles = [m["role"] for m in path]
    if roles != ["prompter" if i % 2 == 0 else "assistant" for i in range(len(roles))]:
        return _Skip("not_alternating")
    notes = []
    by_rank = sorted(range(len(ranked)), key=lambda i: (ranked[i]["rank"], i))
    if len(ranked) > MAX_K:
        notes.append("group_truncated_to_8")  # keep the 8 best: the ranking among them holds
        keep = sorted(by_rank[:MAX_K])
        ranked = [ranked[i] for i in keep]
        by_rank = sorted(range(len(ranked)), key=lambda i: (ranked[i]["rank"], i))
    texts = [m["text"] for m in path]
    history = [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
    return ImportItem(history, texts[-1], [r["text"] for r in ranked], by_rank, notes)


# --- TRL preference ---------------------------------------------------------------------------


def _trl_messages(value, key: str, line: int) -> list[tuple[str, str]]:
    if not isinstance(value, list):
        raise ImportFormatError(f'"{key}" is neither a string nor a list of messages', line=line)
    messages = []
    for message in value:
        if not (
            isinstance(message, dict)
            and isinstance(message.get("role"), str)
            and isinstance(message.get("content"), str)
        ):
            raise ImportFormatError(f'"{key}" holds a message without role/content', line=line)
        messages.append((message["role"], message["content"]))
    return messages


def _parse_trl(record: dict, line: int) -> ImportItem | _Skip:
    for key in ("chosen", "rejected"):
        if key not in record:
            raise ImportFormatError(f'missing "{key}"', line=line)
    prompt, chosen, rejected = record.get("prompt"), record["chosen"], record["rejected"]
    if isinstance(chosen, str) or isinstance(rejected, str):
        # The "standard" (string) form: a single user prompt.
        if not (isinstance(prompt, str) and isinstance(chosen, str) and isinstance(rejected, str)):
            raise ImportFormatError(
                'string rows need string "prompt", "chosen" and "rejected"', line=line
            )
        return ImportItem([], prompt, [chosen, rejected], [0, 1])
    chosen = _trl_messages(chosen, "chosen", line)
    rejected = _trl_messages(rejected, "rejected", line)
    if prompt is None:  # implicit prompt: the messages both conversations share
        shared = 0
        while shared < min(len(chosen), len(rejected)) and chosen[shared] == rejected[shared]:
            shared += 1
        prompt_messages, chosen, rejected = chosen[:shared], chosen[shared:], rejected[shared:]
    else:
        prompt_messages = _trl_messages(prompt, "prompt", line)
    if any(role == "system" for role, _ in prompt_messages):
        return _Skip("system_message")  # no place for it: a turn is a human message + responses
    roles = [role for role, _ in prompt_messages]
    if not roles or roles != ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]:
        return _Skip("prompt_not_alternating_user_first")
    if roles[-1] != "user":
        return _Skip("prompt_not_ending_with_user")
    completions = []
    for messages in (chosen, rejected):
        if len(messages) != 1 or messages[0][0] != "assistant":
            return _Skip("completion_not_one_assistant_message")
        completions.append(messages[0][1])
    texts = [text for _, text in prompt_messages]
    history = [(texts[i], texts[i + 1]) for i in range(0, len(texts) - 1, 2)]
    return ImportItem(history, texts[-1], completions, [0, 1])


# --- Reading files ----------------------------------------------------------------------------


def _open_bytes(path: Path) -> BinaryIO:
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else path.open("rb")


def _file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _parse_record(parse, record: dict, number: int) -> Iterator[tuple[int, ImportItem | _Skip]]:
    # The parsers check what they read; this net keeps anything they missed a line-numbered
    # error rather than a traceback. NUL and lone surrogates (JSON "\u0000", "\ud800") pass:
    # the database layer stores them as U+FFFD (config.dbtext).
    try:
        if parse is not None:
            yield number, parse(record, number)
        else:
            for item in _oasst_groups(record, number):
                yield number, item
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as error:
        raise ImportFormatError(
            f"malformed record ({type(error).__name__}: {error})", line=number
        ) from None


def _read_items(path: Path, fmt: str) -> Iterator[tuple[int, ImportItem | _Skip | None]]:
    """(line number, item) for every item of the file; None for a blank line."""
    parse = {"hh-rlhf": _parse_hh, "trl": _parse_trl}.get(fmt)
    with _open_bytes(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError as error:
                    raise ImportFormatError(f"not UTF-8: {error}", line=number) from None
                if not text.strip():
                    yield number, None
                    continue
                try:
                    record = json.loads(text)
                except RecursionError:
                    raise ImportFormatError("JSON nested too deeply", line=number) from None
                except ValueError as error:  # JSONDecodeError, or an integer of 5,000 digits
                    raise ImportFormatError(f"not JSON: {error}", line=number) from None
                if not isinstance(record, dict):
                    raise ImportFormatError("not a JSON object", line=number)
                yield from _parse_record(parse, record, number)
        except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt .gz
            raise ImportFormatError(f"cannot read the file: {error}") from None


# --- Imports ----------------------------------------------------------------------------------


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
    if format not in DatasetImport.Format.values:
        raise DatasetError(
            f"unknown import format {format!r} (use {', '.join(DatasetImport.Format.values)})"
        )
    if mode not in Campaign.Mode.values:
        raise DatasetError(f"unknown mode {mode!r} (use {', '.join(Campaign.Mode.values)})")
    if not path.is_file():
        raise DatasetError(f"no such file: {path}")
    sha256 = _file_sha256(path)
    existing = DatasetImport.objects.filter(sha256=sha256).first()
    if existing is not None:
        return existing

    # Pass 1: validate every line and count; nothing is kept in memory.
    counts: Counter = Counter()
    largest_k = 2
    for number, item in _read_items(path, format):
        counts["lines"] = number
        if item is None:
            counts["blank_lines"] += 1
        elif isinstance(item, _Skip):
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
    total = counts["judgements"]

    # Pass 2: write, in one transaction.
    try:
        with transaction.atomic():
            campaign = Campaign.objects.create(
                name=f"import: {path.name}"[:200],
                mode=mode,
                judgement_type=(
                    Campaign.JudgementType.RANKING
                    if format == DatasetImport.Format.OASST
                    else Campaign.JudgementType.PAIRWISE
                ),
                k=largest_k if format == DatasetImport.Format.OASST else 2,
                lm_version=None,
                prompt=None,
                is_active=False,
                max_turns=1,
                quota_per_contractor=0,
            )
            dataset_import = DatasetImport.objects.create(
                format=format,
                source_name=path.name[:300],
                sha256=sha256,
                campaign=campaign,
                created_by=created_by,
            )
            batch: list[ImportItem] = []
            done = 0
            longest = 1
            for _, item in _read_items(path, format):
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
            counts["conversations"] = done
            Campaign.objects.filter(pk=campaign.pk).update(max_turns=longest)
            dataset_import.counts = dict(sorted(counts.items()))
            dataset_import.save(update_fields=["counts"])
    except IntegrityError:
        # Another process imported the same file meanwhile: its import is the import.
        existing = DatasetImport.objects.filter(sha256=sha256).first()
        if existing is None:
            raise
        return existing
    return dataset_import


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
    responses = Response.objects.bulk_create(responses)
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
    Turn.objects.bulk_update(turns, ["chosen_response", "judgement_count"], batch_size=IMPORT_BATCH)
    Judgement.objects.bulk_create(judgements)
    return len(items)


# --- Snapshot filters -------------------------------------------------------------------------

FILTER_KEYS = (
    "campaigns",
    "modes",
    "sources",
    "imports",
    "date_from",
    "date_to",
    "min_gold_accuracy",
    "consensus_only",
    "exclude_eval_prompts",
    "weighting",
)
WEIGHTINGS = ("none", "reliability")


def _id_list(value, key: str) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(v, int) and not isinstance(v, bool) for v in value
    ):
        raise SnapshotFilterError(f"{key} must be a list of ids, got {value!r}")
    return sorted(set(value))


def _choice_list(value, key: str, allowed) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value) or not value:
        raise SnapshotFilterError(f"{key} must be a non-empty list of strings, got {value!r}")
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise SnapshotFilterError(
            f"{key}: unknown value(s) {', '.join(unknown)} (allowed: {', '.join(allowed)})"
        )
    return sorted(set(value))


def _moment(value, key: str, *, end: bool) -> datetime:
    if not isinstance(value, str):
        raise SnapshotFilterError(f"{key} must be an ISO date or datetime string, got {value!r}")
    try:  # a bare date first: parse_datetime would read "2031-05-02" as its midnight
        day = parse_date(value)
        moment = None if day else parse_datetime(value)
    except ValueError:
        moment = day = None
    if moment is None and day is None:
        raise SnapshotFilterError(f"{key}: {value!r} is not an ISO date (YYYY-MM-DD) or datetime")
    if moment is None:  # a date: from its first moment, or to its last
        moment = datetime.combine(day, time.max if end else time.min)
    if timezone.is_naive(moment):
        moment = timezone.make_aware(moment, timezone.get_default_timezone())
    return moment


def _normalize_prompt(text: str) -> str:
    return " ".join(text.split())


HHH_CATEGORIES = ("helpful", "honest", "harmless", "other")
# The shipped eval sets a filter may exclude by name: a name, never a path, so a request can
# make the server read nothing but these files (settings ALIGNLAB_HHH_DIR and
# ALIGNLAB_TRUTHFULQA_FILE).
EVAL_PROMPT_SETS = ("hhh", *(f"hhh:{category}" for category in HHH_CATEGORIES), "truthfulqa")
MAX_EVAL_PROMPTS = 10_000  # a list of prompts given inline: at most this many…
MAX_EVAL_PROMPT_CHARS = 10_000  # …of at most this many characters each
_EVAL_PROMPTS_HELP = (
    f"exclude_eval_prompts must be the name of a shipped eval set ({', '.join(EVAL_PROMPT_SETS)})"
    f" or a list of at most {MAX_EVAL_PROMPTS:,} prompt strings of at most"
    f" {MAX_EVAL_PROMPT_CHARS:,} characters each"
)


def _eval_set_prompts(name: str) -> list[str]:
    """The prompts of a shipped eval set, by name (one of EVAL_PROMPT_SETS)."""
    if name == "truthfulqa":
        rows = json.loads(Path(settings.ALIGNLAB_TRUTHFULQA_FILE).read_text(encoding="utf-8"))
        return [row["question"] for row in rows]
    categories = HHH_CATEGORIES if name == "hhh" else (name.removeprefix("hhh:"),)
    prompts = []
    for category in categories:
        task = Path(settings.ALIGNLAB_HHH_DIR) / category / "task.json"
        prompts += [e["input"] for e in json.loads(task.read_text(encoding="utf-8"))["examples"]]
    return prompts


def _eval_prompts(value) -> set[str]:
    """The normalized prompts `exclude_eval_prompts` names; opens no file but the shipped sets."""
    if isinstance(value, str):
        # The same message for every other string: nothing is opened, nothing can be probed.
        if value not in EVAL_PROMPT_SETS:
            raise SnapshotFilterError(_EVAL_PROMPTS_HELP)
        try:
            return {_normalize_prompt(prompt) for prompt in _eval_set_prompts(value)}
        except (OSError, ValueError, KeyError, TypeError):
            raise SnapshotFilterError(
                f"exclude_eval_prompts: the shipped eval set {value!r} cannot be read on this "
                "server (see the settings ALIGNLAB_HHH_DIR and ALIGNLAB_TRUTHFULQA_FILE)"
            ) from None
    if (
        not isinstance(value, list)
        or len(value) > MAX_EVAL_PROMPTS
        or not all(isinstance(v, str) and len(v) <= MAX_EVAL_PROMPT_CHARS for v in value)
    ):
        raise SnapshotFilterError(_EVAL_PROMPTS_HELP)
    return {_normalize_prompt(v) for v in value}


def snapshot_filter_clean(filter: dict) -> dict:
    """Validate a snapshot filter; return it with its defaults made explicit (JSON-ready)."""
    if not isinstance(filter, dict):
        raise SnapshotFilterError(f"the filter must be a JSON object, got {filter!r}")
    unknown = sorted(set(filter) - set(FILTER_KEYS))
    if unknown:
        raise SnapshotFilterError(
            f"unknown filter key(s): {', '.join(unknown)} (allowed: {', '.join(FILTER_KEYS)})"
        )
    clean: dict[str, Any] = {}
    if "campaigns" in filter:
        clean["campaigns"] = _id_list(filter["campaigns"], "campaigns")
    if "modes" in filter:
        clean["modes"] = _choice_list(filter["modes"], "modes", Campaign.Mode.values)
    if "imports" in filter:
        clean["imports"] = _id_list(filter["imports"], "imports")
    # Imported data is never mixed in silently: it comes only when named (sources or imports).
    default_sources = ["imported"] if "imports" in filter else ["collected"]
    clean["sources"] = _choice_list(
        filter.get("sources", default_sources), "sources", Conversation.Source.values
    )
    if "imports" in clean and "imported" not in clean["sources"]:
        raise SnapshotFilterError('imports selects imported data: add "imported" to sources')
    for key in ("date_from", "date_to"):
        if key in filter:
            _moment(filter[key], key, end=key == "date_to")
            clean[key] = filter[key]
    if "min_gold_accuracy" in filter:
        value = filter["min_gold_accuracy"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
            raise SnapshotFilterError(f"min_gold_accuracy must be between 0 and 1, got {value!r}")
        clean["min_gold_accuracy"] = float(value)
    consensus = filter.get("consensus_only", False)
    if not isinstance(consensus, bool):
        raise SnapshotFilterError(f"consensus_only must be true or false, got {consensus!r}")
    clean["consensus_only"] = consensus
    if "exclude_eval_prompts" in filter:
        _eval_prompts(filter["exclude_eval_prompts"])
        clean["exclude_eval_prompts"] = filter["exclude_eval_prompts"]
    weighting = filter.get("weighting", "none")
    if weighting not in WEIGHTINGS:
        raise SnapshotFilterError(
            f"weighting must be one of {', '.join(WEIGHTINGS)}, got {weighting!r}"
        )
    if weighting != "none":  # only when asked, so the filters of older snapshots read the same
        clean["weighting"] = weighting
    return clean


def contractor_gold_accuracy() -> dict[int, tuple[int, int]]:
    """Per contractor: (correct, answered) on gold items, as the quality page counts them."""
    from .quality import contractor_stats

    return {
        row["contractor_id"]: (row["gold_correct"], row["gold_judged"])
        for row in contractor_stats()
        if row["gold_judged"]
    }


def _selected_judgements(clean: dict):
    """The judgements a clean filter selects, before eval-prompt exclusion."""
    judgements = Judgement.objects.all()
    source_q = Q()
    for source in clean["sources"]:
        if source == "imported" and "imports" in clean:
            source_q |= Q(
                turn__conversation__source=source,
                turn__conversation__dataset_import__in=clean["imports"],
            )
        else:
            source_q |= Q(turn__conversation__source=source)
    judgements = judgements.filter(source_q)
    if "campaigns" in clean:
        judgements = judgements.filter(turn__conversation__campaign__in=clean["campaigns"])
    if "modes" in clean:
        judgements = judgements.filter(turn__conversation__campaign__mode__in=clean["modes"])
    if "date_from" in clean:
        judgements = judgements.filter(created_at__gte=_moment(clean["date_from"], "", end=False))
    if "date_to" in clean:
        judgements = judgements.filter(created_at__lte=_moment(clean["date_to"], "", end=True))
    if "min_gold_accuracy" in clean:
        # Contractors with no gold answers have no measured accuracy and are left out; imported
        # judgements have no contractor and are not subject to this filter.
        threshold = clean["min_gold_accuracy"]
        accurate = [
            contractor
            for contractor, (right, total) in contractor_gold_accuracy().items()
            if right / total >= threshold
        ]
        judgements = judgements.filter(Q(contractor__isnull=True) | Q(contractor__in=accurate))
    return judgements


# --- Snapshots --------------------------------------------------------------------------------


def held_out(conversation_id: int) -> bool:
    """The split rule: a tenth of conversations, chosen by a hash of the id, is held out."""
    return int(hashlib.sha256(f"{conversation_id}".encode()).hexdigest(), 16) % 10 == 0


def split_of(conversation_id: int) -> str:
    return "held_out" if held_out(conversation_id) else "train"


def snapshot_create(*, filter: dict, created_by=None, name: str = "") -> DatasetSnapshot:
    """Freeze the judgements `filter` selects: their ids (a file), counts and a content hash."""
    clean = snapshot_filter_clean(filter)
    excluded = set()
    if "exclude_eval_prompts" in clean:
        excluded = _eval_prompts(clean["exclude_eval_prompts"])
    # One group per turn: (conversation id, turn id, [judgement ids]), in a fixed order.
    groups: dict[int, tuple[int, int, list[int]]] = {}
    rows = _selected_judgements(clean).order_by("turn__conversation_id", "turn_id", "pk")
    if excluded:
        first = Turn.objects.filter(conversation_id=OuterRef("turn__conversation_id"), index=0)
        rows = rows.annotate(first_human=Subquery(first.values("human_text")[:1]))
        rows = rows.values_list("turn__conversation_id", "turn_id", "pk", "first_human")
    else:
        rows = rows.values_list("turn__conversation_id", "turn_id", "pk")
    skipped = 0
    for conversation_id, turn_id, judgement_id, *first_human in rows.iterator(chunk_size=5000):
        if first_human and _normalize_prompt(first_human[0] or "") in excluded:
            skipped += 1
            continue
        groups.setdefault(turn_id, (conversation_id, turn_id, []))[2].append(judgement_id)
    if not groups:
        raise SnapshotFilterError("no judgements match this filter")
    frozen = sorted(groups.values())
    weights = _reliability_weights(frozen) if clean.get("weighting") == "reliability" else None
    counts, content_hash = _snapshot_digest(
        frozen, consensus_only=clean["consensus_only"], weights=weights
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
        _write_atomically(Path(settings.MEDIA_ROOT) / relative, json.dumps(frozen_file).encode())
        snapshot.files = {"judgements": relative}
        DatasetSnapshot.objects.filter(pk=snapshot.pk).update(files=snapshot.files)
    return snapshot


def _write_atomically(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile(dir=path.parent, delete=False, suffix=".tmp") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(handle.name, path)


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


def snapshot_groups(snapshot: DatasetSnapshot) -> list[tuple[int, int, list[int]]]:
    """The frozen selection: (conversation id, turn id, judgement ids) per turn, in order."""
    return [(c, t, list(j)) for c, t, j in _snapshot_file(snapshot)["groups"]]


def snapshot_weights(snapshot: DatasetSnapshot) -> dict[int, float] | None:
    """The per-judgement reliability weights a `"weighting": "reliability"` snapshot froze;
    None for an unweighted snapshot (every judgement counts once)."""
    weights = _snapshot_file(snapshot).get("weights")
    return None if weights is None else {int(jid): float(w) for jid, w in weights.items()}


def snapshot_judgement_ids(snapshot: DatasetSnapshot) -> list[int]:
    """Every judgement id the snapshot froze."""
    return [jid for _, _, ids in snapshot_groups(snapshot) for jid in ids]


def _snapshot_digest(groups, *, consensus_only: bool, weights=None) -> tuple[dict, str]:
    """Counts, and a hash of the rows' content that ignores ids and row order."""
    counts: Counter = Counter()
    digests = []
    for item in _iter_turn_items(groups, chunk_size=EXPORT_CHUNK, weights=weights):
        split = item.split
        counts["judgements"] += len(item.judgements)
        counts[f"{split}_judgements"] += len(item.judgements)
        counts["turns"] += 1
        if len(item.judgements) > 1:
            counts["overlapping_turns"] += 1
            counts[f"{split}_overlapping_turns"] += 1
        for row in item.rows(consensus_only=consensus_only):
            k = len(row.ranking)
            counts["rows"] += 1
            counts[f"{split}_rows"] += 1
            counts["pairs"] += k * (k - 1) // 2
            counts[f"{split}_pairs"] += k * (k - 1) // 2
            counts["adjacent_pairs"] += k - 1
            counts[f"{split}_adjacent_pairs"] += k - 1
            canonical = {
                "context": item.context,
                "human": item.human,
                "responses": [r.text for r in item.responses],
                "ranking": [item.position(rid) for rid in row.ranking],  # indices, not ids
                "strength": row.strength,
            }
            # Only when set, so the hashes of snapshots without either stay what they were.
            canonical.update({name: True for name in ("tie", "both_bad") if getattr(row, name)})
            if weights is not None:
                canonical["weight"] = round(row.weight, 9)
            payload = json.dumps(canonical, ensure_ascii=False, sort_keys=True)
            digests.append(hashlib.sha256(payload.encode()).digest())
    conversations = {c for c, _, _ in groups}
    counts["conversations"] = len(conversations)
    counts["held_out_conversations"] = sum(held_out(c) for c in conversations)
    counts["train_conversations"] = len(conversations) - counts["held_out_conversations"]
    for split in ("train", "held_out"):
        for name in ("judgements", "rows", "pairs", "adjacent_pairs", "overlapping_turns"):
            counts.setdefault(f"{split}_{name}", 0)
    counts.setdefault("overlapping_turns", 0)
    content = hashlib.sha256(b"alignlab-snapshot-v1" + bytes([consensus_only]))
    for digest in sorted(digests):
        content.update(digest)
    return dict(sorted(counts.items())), content.hexdigest()


# --- Reading a snapshot back, chunk by chunk ---------------------------------------------------


@dataclass
class _ResponseRow:
    id: int
    index: int
    text: str
    model_version: str | None
    prompt_version: str | None


@dataclass
class _JudgementRow:
    id: int | None  # None: the consensus of several judgements
    ranking: list[int]  # response ids, better first
    strength: int | None
    flags: list[str]
    contractor_id: int | None
    origin: str
    judgement_ids: list[int]
    tie: bool = False  # "about the same": `ranking` is the display order, no preference
    both_bad: bool = False
    weight: float = 1.0  # the contractor's reliability weight in a weighted snapshot, else 1


@dataclass
class _TurnItem:
    conversation_id: int
    turn_id: int
    campaign_id: int
    campaign: str
    mode: str
    source: str
    context: list[tuple[str, str]]  # (human, assistant) before this turn
    human: str
    responses: list[_ResponseRow]
    judgements: list[_JudgementRow]

    @property
    def split(self) -> str:
        return split_of(self.conversation_id)

    def position(self, response_id: int) -> int:
        return next(r.index for r in self.responses if r.id == response_id)

    def consensus(self) -> _JudgementRow:
        """The one consensus rule (`agreement.consensus_ranking`: Bradley–Terry over the
        judgements' preferences, each weighted by its row's weight); ties in strength go to the
        lower mean position, then the lower response id.

        Tie judgements state no preference and are left out; a consensus of ties only is a tie
        (display order)."""
        from .agreement import consensus_ranking

        preferences = [j for j in self.judgements if not j.tie]
        ranked = consensus_ranking(
            [j.ranking for j in preferences], [j.weight for j in preferences]
        )
        by_id = {r.id: r for r in self.responses}
        order = [by_id[rid] for rid in ranked if rid in by_id]
        order += [r for r in self.responses if r.id not in ranked]
        flags = sorted({flag for j in self.judgements for flag in j.flags})
        ids = [j.id for j in self.judgements]
        return _JudgementRow(
            None,
            [r.id for r in order],
            None,
            flags,
            None,
            "consensus",
            ids,
            tie=not preferences,
            both_bad=any(j.both_bad for j in self.judgements),
        )

    def rows(self, *, consensus_only: bool) -> list[_JudgementRow]:
        if consensus_only and len(self.judgements) > 1:
            return [self.consensus()]
        return self.judgements

    def messages(self) -> list[dict]:
        messages = []
        for human, assistant in self.context:
            messages.append({"role": "user", "content": human})
            messages.append({"role": "assistant", "content": assistant})
        messages.append({"role": "user", "content": self.human})
        return messages

    def transcript(self) -> str:
        text = "".join(f"\n\nHuman: {h}\n\nAssistant: {a}" for h, a in self.context)
        return f"{text}\n\nHuman: {self.human}"


def _chunks(groups, chunk_size: int) -> Iterator[list]:
    chunk, size = [], 0
    for group in groups:
        chunk.append(group)
        size += len(group[2])
        if size >= chunk_size:
            yield chunk
            chunk, size = [], 0
    if chunk:
        yield chunk


def _version_label(version) -> str | None:
    return None if version is None else f"{version.name}#{version.pk}"


def _prompt_label(prompt) -> str | None:
    return None if prompt is None else f"{prompt.name}@v{prompt.version}"


def _iter_turn_items(
    groups, *, chunk_size: int = EXPORT_CHUNK, weights: dict[int, float] | None = None
) -> Iterator[_TurnItem]:
    """The frozen turns with everything exports need: a few queries per chunk, none per row.
    `weights` (judgement id → weight) comes from a weighted snapshot; left out, each is 1."""
    for chunk in _chunks(groups, chunk_size):
        judgement_ids = [jid for _, _, ids in chunk for jid in ids]
        turn_ids = [turn_id for _, turn_id, _ in chunk]
        turns = (
            Turn.objects.filter(pk__in=turn_ids)
            .select_related("conversation__campaign")
            .prefetch_related(
                Prefetch(
                    "responses",
                    queryset=Response.objects.select_related("model_version", "prompt").order_by(
                        "index"
                    ),
                ),
                Prefetch(
                    "judgements",
                    queryset=Judgement.objects.filter(pk__in=judgement_ids).order_by("pk"),
                ),
            )
        )
        by_id = {turn.pk: turn for turn in turns.iterator(chunk_size=len(turn_ids))}
        history: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
        earlier = (
            Turn.objects.filter(conversation_id__in={c for c, _, _ in chunk})
            .order_by("conversation_id", "index")
            .values_list("conversation_id", "index", "human_text", "chosen_response__text")
        )
        for conversation_id, index, human, assistant in earlier:
            history[conversation_id].append((index, human, assistant or ""))
        for conversation_id, turn_id, _ in chunk:
            turn = by_id.get(turn_id)
            if turn is None:
                raise DatasetError(f"turn {turn_id} of this snapshot no longer exists")
            campaign = turn.conversation.campaign
            yield _TurnItem(
                conversation_id=conversation_id,
                turn_id=turn_id,
                campaign_id=campaign.pk,
                campaign=campaign.name,
                mode=campaign.mode,
                source=turn.conversation.source,
                context=[(h, a) for i, h, a in history[conversation_id] if i < turn.index],
                human=turn.human_text,
                responses=[
                    _ResponseRow(
                        r.pk,
                        r.index,
                        r.text,
                        _version_label(r.model_version),
                        _prompt_label(r.prompt),
                    )
                    for r in turn.responses.all()
                ],
                judgements=[
                    _JudgementRow(
                        j.pk,
                        [int(r) for r in j.ranking],
                        j.strength,
                        list(j.flags or []),
                        j.contractor_id,
                        j.origin,
                        [j.pk],
                        tie=j.tie,
                        both_bad=j.both_bad,
                        weight=weights.get(j.pk, 1.0) if weights is not None else 1.0,
                    )
                    for j in turn.judgements.all()
                ],
            )


# --- Export rows --------------------------------------------------------------------------------


def contractor_pseudonym(user_id: int | None) -> str | None:
    """A stable pseudonymous contractor id for exports: sha256(SECRET_KEY + user id)[:12]."""
    if user_id is None:
        return None
    return hashlib.sha256(f"{settings.SECRET_KEY}{user_id}".encode()).hexdigest()[:12]


def strength_margin(strength: int | None) -> float:
    """TRL's reward margin from a pairwise strength: 1 slightly … 4 much better -> 0 … 1."""
    return 0.0 if strength is None else (strength - 1) / 3


def _check_export_options(fmt: str, split: str, pairs: str) -> None:
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
    _check_export_options(fmt, split, pairs)
    return _export_rows(snapshot, fmt, split, pairs, margin, chunk_size)


def _export_rows(snapshot, fmt, split, pairs, margin, chunk_size) -> Iterator[dict]:
    groups = snapshot_groups(snapshot)
    if split != "all":
        groups = [g for g in groups if split_of(g[0]) == split]
    consensus_only = bool(snapshot.filter.get("consensus_only", False))
    weights = snapshot_weights(snapshot)
    for item in _iter_turn_items(groups, chunk_size=chunk_size, weights=weights):
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


def _pair_rows(item: _TurnItem, row: _JudgementRow, fmt, pairs, margin) -> Iterator[dict]:
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
                "chosen": f"{context}\n\nAssistant: {text[better]}",
                "rejected": f"{context}\n\nAssistant: {text[worse]}",
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


def _ranked_row(item: _TurnItem, row: _JudgementRow, kind: str | None = None) -> dict:
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
    if kind is not None:
        out = {"kind": kind, **out}
    return out


def export_row_count(snapshot: DatasetSnapshot, fmt: str, *, split="all", pairs="all") -> int:
    """How many rows `export_rows` yields (from the snapshot's frozen counts; for progress bars)."""
    _check_export_options(fmt, split, pairs)
    prefix = "" if split == "all" else f"{split}_"
    counts = snapshot.counts
    if fmt == "raw":
        return counts[f"{prefix}judgements"] + counts[f"{prefix}overlapping_turns"]
    if fmt == "ranked":
        return counts[f"{prefix}rows"]
    return counts[f"{prefix}{'adjacent_pairs' if pairs == 'adjacent' else 'pairs'}"]


# --- Writers ----------------------------------------------------------------------------------


def write_jsonl(rows: Iterable[dict], fileobj: BinaryIO | TextIO) -> int:
    """Write rows as JSON lines to a binary or text file object; return how many."""
    binary = not isinstance(fileobj, io.TextIOBase)
    count = 0
    for row in rows:
        line = json.dumps(row, ensure_ascii=False) + "\n"
        fileobj.write(line.encode("utf-8") if binary else line)
        count += 1
    return count


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
    return pa.schema(([("kind", pa.string())] if fmt == "raw" else []) + fields)


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
    path = Path(path)
    rows = export_rows(snapshot, fmt, **options)
    if progress is not None:
        total = export_row_count(
            snapshot, fmt, split=options.get("split", "all"), pairs=options.get("pairs", "all")
        )
        rows = _counting(rows, progress, total)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        if file_format == "jsonl":
            with os.fdopen(handle, "wb") as out:
                count = write_jsonl(rows, out)
        else:
            os.close(handle)
            schema = parquet_schema(fmt, margin=options.get("margin", False))
            count = write_parquet(rows, temporary, schema)
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
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
    rows = export_rows(snapshot, fmt, **options)  # validates the options before streaming
    if file_format == "jsonl":
        return _jsonl_blocks(rows, block_size)
    return _parquet_blocks(
        rows, parquet_schema(fmt, margin=options.get("margin", False)), block_size
    )


def _jsonl_blocks(rows: Iterator[dict], block_size: int) -> Iterator[bytes]:
    buffer = bytearray()
    for row in rows:
        buffer += (json.dumps(row, ensure_ascii=False) + "\n").encode("utf-8")
        if len(buffer) >= block_size:
            yield bytes(buffer)
            buffer.clear()
    if buffer:
        yield bytes(buffer)


def _parquet_blocks(rows: Iterator[dict], schema, block_size: int) -> Iterator[bytes]:
    handle, temporary = tempfile.mkstemp(suffix=".parquet")
    os.close(handle)
    try:
        write_parquet(rows, temporary, schema)
        with open(temporary, "rb") as parquet:
            yield from iter(lambda: parquet.read(block_size), b"")
    finally:
        Path(temporary).unlink(missing_ok=True)


__all__ = [
    "DatasetError",
    "ImportFormatError",
    "SnapshotFilterError",
    "contractor_gold_accuracy",
    "contractor_pseudonym",
    "dataset_import_create",
    "export_row_count",
    "export_rows",
    "export_write",
    "held_out",
    "parquet_schema",
    "snapshot_create",
    "snapshot_filter_clean",
    "snapshot_groups",
    "snapshot_judgement_ids",
    "split_of",
    "stream_export",
    "strength_margin",
    "write_jsonl",
    "write_parquet",
]
