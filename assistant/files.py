"""Files and folders written whole or not at all: other processes read them (model artifacts,
frozen snapshot lists, export files), so each is written beside its target under a temporary
name and then renamed into place."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


@contextmanager
def staged_folder(path: str | os.PathLike, *, replace: bool = True) -> Iterator[Path]:
    """Yield an empty temporary folder beside `path`; when the block ends without an error it
    becomes `path` in one rename, so a reader sees either the old folder or the new one.

    An existing `path` is moved aside first (a folder cannot be replaced by one rename) and then
    deleted; with `replace=False` it is kept instead, and the new one dropped: another process
    got there first with an equal copy. On an error the temporary folder is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, so the final rename never crosses a filesystem.
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield staging
        if not path.exists():
            try:
                os.replace(staging, path)
                return
            except OSError:  # someone else's folder appeared in between
                if not path.exists():
                    raise
        if replace:
            old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
            os.replace(path, old / path.name)
            os.replace(staging, path)
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


@contextmanager
def staged_file(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary file name beside `path`; when the block ends without an error, the
    file written there is flushed to disk and becomes `path` in one rename, so a reader sees
    either the old file or the new one, never half of one. On an error it is deleted.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    staging = Path(name)
    try:
        yield staging
        with staging.open("rb") as written:
            os.fsync(written.fileno())
        os.replace(staging, path)
    finally:
        staging.unlink(missing_ok=True)
