"""Pairwise preference files for the preference-file eval: named under the data roots or
uploaded, checked where the request comes in, read by the worker with collection's parsers.

A file is HH-RLHF rows ({"chosen", "rejected"} transcripts) or TRL rows ({"prompt", "chosen",
"rejected"}, strings or lists of messages), as jsonl, gzip-compressed jsonl or Parquet (sniffed
by magic number). The rows are read by the import parsers (`collection.imports.formats`), so a
file scores exactly the pairs `manage.py import_dataset` would import; rows they skip (a system
message, a transcript not starting with "Human:") are counted in the results.

Where the request comes in (`check_request`, in the web process, no torch): a known format, a
path inside `ALIGNLAB_DATA_ROOTS` (after symlinks and ".."), a file that is not empty, and a
first row that reads (for Parquet: its columns). The worker reads every row (`read_pairs`);
a bad row fails the run with its line or row number, shown on the run and the leaderboard.
Uploads are kept under the uploads folder the web process and the workers share, and deleted
when their run ends (`release`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from django.conf import settings

from assistant.jobs import FINISHED
from assistant.uploads import UploadTooLarge, path_inside, remove_upload, store_upload
from collection.dataset_errors import DatasetError
from collection.imports import upload_max_bytes
from collection.imports.items import ImportItem, Skip
from collection.imports.reading import file_sha256, is_parquet, read_items, read_parquet_items

from .models import EvalRun

FORMATS = EvalRun.PairsFormat


class PreferenceFileError(Exception):
    """A preference file that cannot be scored; the message says why, `field` names the
    request's field it is about (a form or API field)."""

    def __init__(self, message: str, *, field: str = "pairs_path"):
        super().__init__(message)
        self.field = field


@dataclass
class LoadedPairs:
    """The (context messages, chosen text, rejected text) of every scorable row."""

    pairs: list[tuple[list[tuple[str, str]], str, str]] = field(default_factory=list)
    skipped: dict[str, int] = field(default_factory=dict)
    sha256: str = ""


def uploads_root() -> Path:
    return Path(settings.COLLECTION_UPLOADS_DIR) / "evals"


def _data_roots() -> str:
    return ", ".join(str(root) for root in settings.ALIGNLAB_DATA_ROOTS)


def named_file(text: str) -> Path:
    """The resolved file `text` names, refused unless it is a file inside the data roots (the
    same words whether it exists outside them or not)."""
    path = path_inside(str(text), settings.ALIGNLAB_DATA_ROOTS)
    if path is None or not path.is_file():
        raise PreferenceFileError(f"no file {str(text)!r} inside the data roots ({_data_roots()})")
    return path


def store(upload) -> Path:
    """Keep an uploaded file for the worker; refused when empty or over the upload limit."""
    limit = upload_max_bytes()
    too_large = PreferenceFileError(
        f"Uploads are limited to {settings.COLLECTION_UPLOAD_MAX_MB} MiB "
        "(ALIGNLAB_UPLOAD_MAX_MB); name a bigger file under the data roots instead.",
        field="upload",
    )
    if upload.size > limit:
        raise too_large
    if not upload.size:
        raise PreferenceFileError("The file is empty.", field="upload")
    try:
        stored, _ = store_upload(upload, uploads_root(), limit=limit, default_name="pairs.jsonl")
    except UploadTooLarge:
        raise too_large from None
    return stored


def _items(path: Path, fmt: str):
    if fmt not in FORMATS.values:
        raise PreferenceFileError(
            f"unknown format {fmt!r} (use {', '.join(FORMATS.values)})", field="pairs_format"
        )
    return read_parquet_items(path, fmt) if is_parquet(path) else read_items(path, fmt)


def check_file(path: Path, fmt: str, name: str) -> None:
    """Refuse a file the worker could not score: an unknown format, an empty file, Parquet
    without the columns, or a first row that does not read. (The rest is read by the worker.)"""
    if path.stat().st_size == 0:
        raise PreferenceFileError(f"{name}: the file is empty")
    items = _items(path, fmt)
    try:
        for _, item in items:
            if item is not None:  # the first row (blank lines are passed over)
                return
        raise PreferenceFileError(f"{name}: the file holds no rows")
    except DatasetError as error:  # "line 1: missing "rejected"", "no column 'chosen'"
        raise PreferenceFileError(f"{name}: {error}") from None
    finally:
        items.close()


def read_pairs(path: str | Path, fmt: str) -> LoadedPairs:
    """Every scorable pair of the file, in file order; raises PreferenceFileError naming the
    bad line (row), or when no row can be scored."""
    path = Path(path)
    if not path.is_file():
        raise PreferenceFileError(
            f"the file {path.name} is not on this worker: the web process and the workers must "
            "share the data roots and ALIGNLAB_UPLOADS_DIR"
        )
    loaded, skipped = LoadedPairs(sha256=file_sha256(path)), Counter()
    try:
        for _, item in _items(path, fmt):
            if isinstance(item, Skip):
                skipped[item.reason] += 1
            elif isinstance(item, ImportItem):
                loaded.pairs.append(_pair(item))
    except DatasetError as error:
        raise PreferenceFileError(f"{path.name}: {error}") from None
    loaded.skipped = dict(sorted(skipped.items()))
    if not loaded.pairs:
        reasons = ", ".join(f"{n} {reason}" for reason, n in loaded.skipped.items())
        raise PreferenceFileError(
            f"{path.name}: no pair to score" + (f" (skipped: {reasons})" if reasons else "")
        )
    return loaded


def _pair(item: ImportItem) -> tuple[list[tuple[str, str]], str, str]:
    context = [m for human, bot in item.history for m in (("user", human), ("assistant", bot))]
    context.append(("user", item.human))
    better, worse = item.ranking[0], item.ranking[1]
    return context, item.responses[better], item.responses[worse]


def release(run: EvalRun) -> None:
    """Delete the run's uploaded file once the run has ended (a named file is left alone)."""
    if run.pairs_path and run.is_finished and _is_upload(run.pairs_path):
        remove_upload(run.pairs_path, uploads_root())
        EvalRun.objects.filter(pk=run.pk).update(pairs_path="")  # handled once; the name stays
        run.pairs_path = ""


def release_finished() -> int:
    """Delete the uploads of runs that ended without their worker (cancelled by the sweeper,
    say); how many. Run by the sweeper, after the eval runs' sweep."""
    runs = EvalRun.objects.filter(
        status__in=FINISHED,
        pairs_path__startswith=str(uploads_root()),
    ).only("pk", "status", "pairs_path")
    released = 0
    for run in runs:
        release(run)
        released += 1
    return released


def _is_upload(path: str) -> bool:
    return Path(path).parent.parent == uploads_root()
