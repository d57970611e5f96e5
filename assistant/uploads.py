"""Files uploaded from the browser, kept for a worker: each in a folder of its own under a root
the web process and the workers share (`collection` import uploads, `evals` preference files),
under its own name made safe, and deleted with that folder once its job is done. Also the check
that a path a request names lies inside the folders it may name (the data roots)."""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Iterable
from pathlib import Path

from django.core.exceptions import SuspiciousFileOperation
from django.utils.text import get_valid_filename


class UploadTooLarge(Exception):
    """More bytes came than the limit allows (the size the client claimed was wrong)."""


def safe_filename(name: str, default: str) -> str:
    """The upload's own name without any folder or odd character; `default` when none is left."""
    base = Path(str(name).replace("\\", "/")).name
    try:
        safe = get_valid_filename(base)[:200]
    except SuspiciousFileOperation:  # "", "." or ".."
        safe = ""
    return safe or default


def store_upload(upload, root: str | os.PathLike, *, limit: int, default_name: str) -> tuple:
    """Write `upload` (a Django UploadedFile, read in chunks: a big file never sits in memory)
    to root/<random hex>/<its safe name>; (path, bytes written). Raises UploadTooLarge past
    `limit` bytes; on any error nothing stays behind."""
    folder = Path(root) / uuid.uuid4().hex
    folder.mkdir(parents=True)
    stored = folder / safe_filename(upload.name, default_name)
    written = 0
    try:
        with stored.open("xb") as handle:
            for chunk in upload.chunks():
                written += len(chunk)
                if written > limit:
                    raise UploadTooLarge(f"more than {limit} bytes")
                handle.write(chunk)
    except BaseException:
        shutil.rmtree(folder, ignore_errors=True)
        raise
    return stored, written


def remove_upload(path: str | os.PathLike, root: str | os.PathLike) -> None:
    """Delete a stored upload and its folder; only ever a folder right under `root`."""
    folder = Path(path).parent.resolve()
    if folder.parent == Path(root).resolve():
        shutil.rmtree(folder, ignore_errors=True)


def path_inside(path: str, roots: Iterable[str | os.PathLike]) -> Path | None:
    """`path` resolved (symlinks, "..") when it exists inside one of `roots`; else None, also
    for a name no filesystem takes (too long, a NUL byte, a symlink loop)."""
    try:
        resolved = Path(path).resolve()
        if resolved.exists() and any(
            resolved.is_relative_to(Path(root).resolve()) for root in roots
        ):
            return resolved
    except (OSError, ValueError, RuntimeError):
        pass
    return None
