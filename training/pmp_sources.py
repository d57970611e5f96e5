"""Where the files of a preference-model pre-training run may be: inside the data roots.

Checked when a run is launched, in the web process (no torch here), so that a request can name
no file outside `settings.ALIGNLAB_DATA_ROOTS` for a worker to read.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from assistant.uploads import path_inside

PMP_FORMATS = ("stackexchange", "reddit", "ukpconvarg")
MAX_PMP_SOURCES = 1000


def pmp_sources_confined(sources, *, roots: Iterable[str | os.PathLike]) -> list[dict]:
    """`sources` ([{"format": …, "path": …}, …]) with every path resolved (symlinks, ".."), or a
    ValueError unless each is a PMP format and a file or folder that exists inside `roots`."""
    roots = [Path(root).resolve() for root in roots]
    if not isinstance(sources, list) or not 0 < len(sources) <= MAX_PMP_SOURCES:
        raise ValueError(f"a list of 1 to {MAX_PMP_SOURCES} sources")
    confined = []
    for index, source in enumerate(sources):
        if not (
            isinstance(source, dict)
            and set(source) == {"format", "path"}
            and source["format"] in PMP_FORMATS
            and isinstance(source["path"], str)
        ):
            raise ValueError(
                f'source {index}: an object {{"format": {" | ".join(PMP_FORMATS)}, "path": …}}'
            )
        # The same message for a path outside the roots, whether it exists or not.
        outside = ValueError(
            f"source {index}: no file or folder {source['path']!r} inside the data roots "
            f"({', '.join(map(str, roots))})"
        )
        path = path_inside(source["path"], roots)
        if path is None:
            raise outside
        confined.append({"format": source["format"], "path": str(path)})
    return confined
