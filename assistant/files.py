"""Folders written whole or not at all: model artifacts are read by other processes."""

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
