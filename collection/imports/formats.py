"""The import formats: format name (`DatasetImport.Format`) → the parser of one JSON record.

A parser takes a record (a JSON object) and its line number, and yields what it holds: judged
turns (`ImportItem`) and reasons to skip (`Skip`); a record it cannot read raises
`ImportFormatError` naming the line. Adding a format: a module beside these, a line here and a
`DatasetImport.Format` choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

from .hh_rlhf import parse_hh_rlhf
from .items import ImportItem, Skip
from .oasst import parse_oasst
from .trl import parse_trl

Parser = Callable[[dict, int], Iterator[ImportItem | Skip]]

PARSERS: dict[str, Parser] = {
    "hh-rlhf": parse_hh_rlhf,
    "oasst": parse_oasst,
    "trl": parse_trl,
}
