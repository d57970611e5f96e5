"""How a dataset request (an import, a snapshot, an export) fails, and how it reports progress.

Every refusal is a `DatasetError` whose message says why; the API answers it with a 400, the
pages and management commands show the message.
"""

from __future__ import annotations

from collections.abc import Callable

from django.core.exceptions import ValidationError

# A progress callback: (stage, done, total or None when not known yet).
Progress = Callable[[str, int, "int | None"], None]


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
