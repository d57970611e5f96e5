"""Text that a database refuses never reaches it: one guard on every write, for every path.

PostgreSQL stores no NUL character in text or JSON (`DataError: unsupported Unicode escape
sequence`), and no database takes an unpaired UTF-16 surrogate (Python strings can hold one, say
from a JSON `"\\ud800"`; UTF-8 cannot encode it). Both come from outside: sampled model text,
contractors' messages, imported files, eval results. Rather than remember a `.replace` on each
path (and crash on the one forgotten), every statement's parameters pass through
`clean_parameters` on their way to the driver (a Django execute wrapper, installed on each new
connection): each such character becomes U+FFFD, the replacement character, which shows the
reader that something was there. Each replacement is counted (`REPLACED`) and logged.

JSON on SQLite reaches the driver already dumped, as escaped ASCII that SQLite stores as it is
(`"\u0000"`), so there a JSON value keeps what it had; PostgreSQL's JSON parameters are the
values themselves (psycopg's Jsonb), cleaned like any text.
"""

from __future__ import annotations

import logging
import re
from collections import Counter

logger = logging.getLogger(__name__)

_REFUSED = re.compile("[\x00\ud800-\udfff]")
REPLACEMENT = "\ufffd"
# Characters replaced in this process, by kind ("nul", "surrogate"): for logs and tests.
REPLACED: Counter = Counter()

try:  # PostgreSQL's JSON parameters are psycopg Jsonb wrappers around the Python value.
    from psycopg.types.json import Jsonb
except ImportError:  # pragma: no cover - psycopg is a dependency; SQLite-only installs work too
    Jsonb = None


def clean_text(value: str, counts: Counter) -> str:
    """`value` with NUL and unpaired surrogates replaced by U+FFFD, counted in `counts`."""
    if value.isascii() and "\x00" not in value:  # the common case, at C speed
        return value

    def replace(match):
        counts["nul" if match.group() == "\x00" else "surrogate"] += 1
        return REPLACEMENT

    return _REFUSED.sub(replace, value)


def _clean(value, counts: Counter):
    if isinstance(value, str):
        return clean_text(value, counts)
    if isinstance(value, dict):
        return {_clean(k, counts): _clean(v, counts) for k, v in value.items()}
    if isinstance(value, list):
        return [_clean(v, counts) for v in value]
    if isinstance(value, tuple):
        return tuple(_clean(v, counts) for v in value)
    if Jsonb is not None and isinstance(value, Jsonb):
        before = sum(counts.values())
        cleaned = _clean(value.obj, counts)
        return Jsonb(cleaned, dumps=value.dumps) if sum(counts.values()) > before else value
    return value


def clean_parameters(params, many: bool = False, counts: Counter | None = None):
    """A statement's parameters (a sequence, a mapping, or for `executemany` a list of either),
    with refused characters replaced. Values of other types pass unchanged."""
    counts = Counter() if counts is None else counts
    if params is None:
        return params
    if many:
        return [_clean(row, counts) for row in params]
    return _clean(params, counts)


def guard(execute, sql, params, many, context):
    """The execute wrapper: clean, count and log, then run the statement."""
    counts: Counter = Counter()
    params = clean_parameters(params, many, counts)
    if counts:
        REPLACED.update(counts)
        logger.warning(
            "replaced %s in a write the database would refuse: %.80s",
            ", ".join(f"{n} {kind} character(s)" for kind, n in sorted(counts.items())),
            sql,
        )
    return execute(sql, params, many, context)


def install(sender=None, connection=None, **kwargs) -> None:
    """Receiver of `connection_created`: put the guard on the new connection once."""
    if guard not in connection.execute_wrappers:
        connection.execute_wrappers.append(guard)
