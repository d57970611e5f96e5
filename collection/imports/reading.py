"""Reading an import file: jsonl or gzip-compressed jsonl, line by line, every error numbered;
Parquet row by row (`read_parquet_items`: the preference-file eval reads TRL Parquet files)."""

from __future__ import annotations

import gzip
import hashlib
import json
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import BinaryIO

from ..dataset_errors import ImportFormatError
from .formats import PARSERS, Parser
from .items import ImportItem, Skip


def open_bytes(path: Path) -> BinaryIO:
    """The file's bytes, decompressed when it is gzip (sniffed by its magic number, not name)."""
    with path.open("rb") as probe:
        is_gzip = probe.read(2) == b"\x1f\x8b"
    return gzip.open(path, "rb") if is_gzip else path.open("rb")


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def read_items(path: Path, fmt: str) -> Iterator[tuple[int, ImportItem | Skip | None]]:
    """(line number, item) for every item of the file; None for a blank line."""
    parse = PARSERS[fmt]
    with open_bytes(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                record = _record(raw, number)
                if record is None:
                    yield number, None
                else:
                    yield from _parse_record(parse, record, number)
        except (OSError, EOFError, zlib.error) as error:  # a truncated or corrupt .gz
            raise ImportFormatError(f"cannot read the file: {error}") from None


PARQUET_MAGIC = b"PAR1"
PARQUET_BATCH = 1000  # rows decoded at a time


def is_parquet(path: Path) -> bool:
    """Whether the file is Parquet (sniffed by its magic number, not its name)."""
    with path.open("rb") as probe:
        return probe.read(4) == PARQUET_MAGIC


def read_parquet_items(
    path: Path, fmt: str, *, required: tuple[str, ...] = ("chosen", "rejected")
) -> Iterator[tuple[int, ImportItem | Skip]]:
    """(row number, item) for every row of a Parquet file, each row a record of its columns
    read by the format's parser; a file without the `required` columns is refused first."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    parse = PARSERS[fmt]
    try:
        parquet = pq.ParquetFile(path)
        names = parquet.schema_arrow.names
        missing = [name for name in required if name not in names]
        if missing:
            raise ImportFormatError(
                f"the Parquet file has no column {', '.join(map(repr, missing))} "
                f"(its columns: {', '.join(map(repr, names)) or 'none'})"
            )
        number = 0
        for batch in parquet.iter_batches(batch_size=PARQUET_BATCH):
            for record in batch.to_pylist():
                number += 1
                try:
                    yield from _parse_record(parse, record, number)
                except ImportFormatError as error:  # the parsers say "line": here it is a row
                    raise ImportFormatError(
                        f"row {number}: {str(error).removeprefix(f'line {number}: ')}"
                    ) from None
    except (pa.ArrowException, OSError) as error:  # not Parquet after all, or truncated
        raise ImportFormatError(f"cannot read the Parquet file: {error}") from None


def _record(raw: bytes, number: int) -> dict | None:
    """The line's JSON object; None for a blank line."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        raise ImportFormatError(f"not UTF-8: {error}", line=number) from None
    if not text.strip():
        return None
    try:
        record = json.loads(text)
    except RecursionError:
        raise ImportFormatError("JSON nested too deeply", line=number) from None
    except ValueError as error:  # JSONDecodeError, or an integer of 5,000 digits
        raise ImportFormatError(f"not JSON: {error}", line=number) from None
    if not isinstance(record, dict):
        raise ImportFormatError("not a JSON object", line=number)
    return record


def _parse_record(
    parse: Parser, record: dict, number: int
) -> Iterator[tuple[int, ImportItem | Skip]]:
    # The parsers check what they read; this net keeps anything they missed a line-numbered
    # error rather than a traceback. NUL and lone surrogates (JSON "\u0000", "\ud800") pass:
    # the database layer stores them as U+FFFD (config.dbtext).
    try:
        for item in parse(record, number):
            yield number, item
    except (KeyError, TypeError, AttributeError, ValueError, RecursionError) as error:
        raise ImportFormatError(
            f"malformed record ({type(error).__name__}: {error})", line=number
        ) from None
