"""The pair exports (hh-rlhf and TRL) as JSON lines rendered by PostgreSQL.

`exports.export_rows` builds each row in Python and `json.dumps` writes it: about 60 µs of
Python per pair, 9–13k pairs/s at a million judgements (bench/scale.py, BENCHMARKS.md
"Scale"), against a goal of 50,000. Here one query per chunk of the snapshot's turns joins the
judgements, the turns, their conversations' earlier turns and the responses, expands every
ranking into its better/worse pairs, renders each pair as the JSON line
`json.dumps(row, ensure_ascii=False)` writes, and hands the chunk back as one bytea value:
Python only writes it out. Two connections render chunks side by side (one backend per core).

The bytes are the Python path's, byte for byte (tests/collection/test_export_sql.py compares
the two on text with quotes, backslashes, control characters and non-ASCII):

* `to_json(text)` escapes what Python's `json.dumps(..., ensure_ascii=False)` escapes — `"`,
  `\\`, `\\b`, `\\f`, `\\n`, `\\r`, `\\t` and the other characters below U+0020 as `\\u00xx`
  (lower case in both) — and nothing else; text in PostgreSQL holds no NUL.
* The separators are json.dumps's defaults (", " and ": "), written out literally.
* TRL's margin is one of a few floats, rendered by Python (`repr`) and passed in.

What stays in Python: the split filter and the order (from the frozen file), and the consensus
of an overlapping turn in a consensus-only snapshot (`TurnItem.consensus`, Bradley–Terry),
computed for those turns only and passed in as explicit rows.
"""

from __future__ import annotations

import json
import queue
import threading
from collections.abc import Iterator

import psycopg
from django.conf import settings
from django.db import connection, transaction

from .dataset_errors import DatasetError
from .frozen_turns import iter_turn_items
from .models import Turn

SQL_CHUNK = 4000  # turns per query: ~4 MB of hh-rlhf lines at bench/scale.py's lengths
MAX_MARGIN_STRENGTH = 16  # strengths are 1…4; a larger one is refused, not rendered wrongly


def supported(fmt: str, file_format: str) -> bool:
    """Whether this path renders `fmt` as `file_format` on the current database."""
    return (
        connection.vendor == "postgresql" and fmt in ("hh-rlhf", "trl") and file_format == "jsonl"
    )


def _int_array(values) -> str:
    return "{" + ",".join("NULL" if v is None else str(v) for v in values) + "}"


def _margins() -> list[str]:
    from .exports import strength_margin

    # margins[1] for no strength, margins[s + 2] for strength s (PostgreSQL arrays count from 1)
    return [json.dumps(strength_margin(None))] + [
        json.dumps(strength_margin(s)) for s in range(MAX_MARGIN_STRENGTH + 1)
    ]


_BOOL = "CASE WHEN {0} THEN 'true' ELSE 'false' END"
_BOOL_BYTES = "CASE WHEN {0} THEN 'true'::bytea ELSE 'false'::bytea END"

# The rows of a chunk (one per judgement, or an overlapping turn's consensus), in export order.
_ROWS = """
WITH x AS (  -- shorter arrays read as NULLs: rankings, ties, bads come with consensus rows only
    SELECT *
    FROM unnest(%(turns)s::bigint[], %(jids)s::bigint[], %(rankings)s::text[],
                %(ties)s::bool[], %(bads)s::bool[]) WITH ORDINALITY
         AS x(turn_id, jid, ranking, tie, both_bad, ord)
),
r AS (
    SELECT x.ord, x.turn_id,
           CASE WHEN x.jid IS NULL THEN x.ranking::jsonb ELSE j.ranking END AS ranking,
           CASE WHEN x.jid IS NULL THEN x.tie ELSE j.tie END AS tie,
           CASE WHEN x.jid IS NULL THEN x.both_bad ELSE j.both_bad END AS both_bad,
           CASE WHEN x.jid IS NULL THEN NULL ELSE j.strength END AS strength
    FROM x LEFT JOIN collection_judgement j ON j.id = x.jid
    WHERE x.jid IS NULL OR j.id IS NOT NULL
),
p AS (
    SELECT r.ord, a.n AS i, b.n AS k, a.v::bigint AS better, b.v::bigint AS worse,
           r.turn_id, r.tie, r.both_bad, r.strength
    FROM r
    CROSS JOIN LATERAL jsonb_array_elements_text(r.ranking) WITH ORDINALITY AS a(v, n)
    CROSS JOIN LATERAL jsonb_array_elements_text(r.ranking) WITH ORDINALITY AS b(v, n)
    WHERE {pairs}
),
c AS (
    SELECT t.id, {context} AS context
    FROM collection_turn t
    WHERE t.id = ANY(%(turn_ids)s::bigint[])
),
lines AS (
    SELECT p.ord, p.i, p.k, {line} AS line
    FROM p
    JOIN c ON c.id = p.turn_id
    JOIN collection_response rb ON rb.id = p.better AND rb.turn_id = p.turn_id
    JOIN collection_response rw ON rw.id = p.worse AND rw.turn_id = p.turn_id
)
SELECT (SELECT count(*) FROM c), (SELECT count(*) FROM p), count(line),
       string_agg(line, ''::bytea ORDER BY ord, i, k)
FROM lines
"""

# The turns before this one in its conversation (human text, chosen response), in order; a
# first turn (index 0) has none, and the CASE around it spares half the turns the lookup.
_EARLIER = """
    FROM collection_turn h
    LEFT JOIN collection_response hr ON hr.id = h.chosen_response_id
    WHERE h.conversation_id = t.conversation_id AND h.index < t.index
"""

# Lines are built as bytea, from `textsend(text)` (the text's bytes as the client reads
# them: UTF-8, which Django's connection sets), because bytea's length and substring count
# bytes: on text, `left(…, -1)` and `substr(…, 2)` count the characters of the whole string
# (pg_utf_mblen and friends were 11 % of the export's profile, perf).
#
# The context, escaped, without its closing quote: once per turn.
_HH_CONTEXT = f"""
    (SELECT substring(e FROM 1 FOR length(e) - 1) FROM (SELECT textsend(to_json(
        COALESCE(CASE WHEN t.index > 0 THEN
                     (SELECT string_agg(E'\\n\\nHuman: ' || h.human_text
                                        || E'\\n\\nAssistant: ' || COALESCE(hr.text, ''),
                                        '' ORDER BY h.index)
                      {_EARLIER}) END, '')
        || E'\\n\\nHuman: ' || t.human_text
    )::text) AS e) AS escaped)
"""

# JSON escaping goes character by character, so the escaped context (without its closing
# quote) followed by the escaped reply (without its opening quote) is the escaped transcript:
# the context is escaped once per turn, not once per response of every pair.
_HH_LINE = f"""
    '{{"chosen": '::bytea || c.context
    || substring(textsend(to_json(E'\\n\\nAssistant: ' || rb.text)::text) FROM 2)
    || ', "rejected": '::bytea || c.context
    || substring(textsend(to_json(E'\\n\\nAssistant: ' || rw.text)::text) FROM 2)
    || ', "tie": '::bytea || {_BOOL_BYTES.format("p.tie")}
    || ', "both_bad": '::bytea || {_BOOL_BYTES.format("p.both_bad")} || E'}}\\n'::bytea
"""

_TRL_CONTEXT = f"""
    '[' || COALESCE(CASE WHEN t.index > 0 THEN
                        (SELECT string_agg('{{"role": "user", "content": '
                                           || to_json(h.human_text)::text
                                           || '}}, {{"role": "assistant", "content": '
                                           || to_json(COALESCE(hr.text, ''))::text || '}}',
                                           ', ' ORDER BY h.index)
                         {_EARLIER}) || ', ' END, '')
    || '{{"role": "user", "content": ' || to_json(t.human_text)::text || '}}]'
"""

_TRL_LINE = f"""
    textsend('{{"prompt": ' || c.context
    || ', "chosen": [{{"role": "assistant", "content": ' || to_json(rb.text)::text
    || '}}], "rejected": [{{"role": "assistant", "content": ' || to_json(rw.text)::text
    || '}}], "tie": ' || {_BOOL.format("p.tie")}
    || ', "both_bad": ' || {_BOOL.format("p.both_bad")}
    {{margin}} || E'}}\\n')
"""

_MARGIN = """
    || ', "margin": ' || (%(margins)s::text[])[CASE WHEN p.strength IS NULL THEN 1
                                                    ELSE p.strength + 2 END]
"""


def query(fmt: str, *, pairs: str, margin: bool) -> str:
    pair_rule = "b.n = a.n + 1" if pairs == "adjacent" else "b.n > a.n"
    if fmt == "hh-rlhf":
        context, line = _HH_CONTEXT, _HH_LINE
    else:
        context, line = _TRL_CONTEXT, _TRL_LINE.replace("{margin}", _MARGIN if margin else "")
    return _ROWS.format(pairs=pair_rule, context=context, line=line)


def jsonl_chunks(
    groups, *, fmt: str, pairs: str, margin: bool, consensus_only: bool, weights=None,
    chunk_size: int | None = None, workers: int | None = None,
) -> Iterator[tuple[bytes, int]]:  # fmt: skip
    """(UTF-8 JSON lines, how many) per chunk of `groups` (the frozen (conversation id, turn
    id, judgement ids), already filtered to the split), in the Python path's order.

    `workers` connections render chunks side by side (default `ALIGNLAB_EXPORT_SQL_WORKERS`,
    2: one PostgreSQL backend per core here, bench/scale.py). Inside a transaction (a test's, or a
    caller's atomic block) the chunks are rendered on this connection, one after another:
    another connection would not see what the transaction holds."""
    render = _Renderer(fmt, pairs=pairs, margin=margin, consensus_only=consensus_only,
                       weights=weights)  # fmt: skip
    chunk_size = chunk_size or SQL_CHUNK
    chunks = [(start, min(start + chunk_size, len(groups)))
              for start in range(0, len(groups), chunk_size)]  # fmt: skip
    if workers is None:
        workers = settings.COLLECTION_EXPORT_SQL_WORKERS
    if workers <= 1 or len(chunks) <= 1 or connection.in_atomic_block:
        for start, end in chunks:
            with transaction.atomic():  # not held across the yield: the caller writes progress
                _no_jit()
                body, rendered = render(groups, start, end)
            if rendered:
                yield body, rendered
        return
    yield from _side_by_side(render, groups, chunks, workers)


def _no_jit() -> None:
    # This query's row estimates (100 per jsonb_array_elements_text) are far above the truth,
    # so PostgreSQL's JIT compiled it for each chunk: 580 ms of a 740 ms query (EXPLAIN
    # ANALYZE, 4,000 turns). Off for this transaction only.
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('jit', 'off', true)")


class _Renderer:
    """One chunk's query, run on the calling thread's connection."""

    def __init__(self, fmt, *, pairs, margin, consensus_only, weights):
        self.sql = query(fmt, pairs=pairs, margin=margin)
        self.margins = _margins() if margin else None
        self.consensus_only = consensus_only
        self.weights = weights

    def __call__(self, groups, start: int, end: int) -> tuple[bytes, int]:
        params = _chunk_rows(groups, start, end, consensus_only=self.consensus_only,
                             weights=self.weights)  # fmt: skip
        turn_ids = params["turn_ids"]
        for name in ("turns", "jids", "turn_ids"):  # as '{1,2,…}': psycopg dumps a list of
            params[name] = _int_array(params[name])  # ints value by value, in Python
        if self.margins is not None:
            params["margins"] = self.margins
        # psycopg's own cursor, not Django's: parameters bound by the server, and the body
        # comes back in binary, as bytes, with no decoding and encoding of ~4 MB a chunk. Its
        # parameters are ids and JSON of ids, which the text guard (config/dbtext.py) has
        # nothing to do for.
        connection.ensure_connection()
        with psycopg.Cursor(connection.connection) as cursor:
            cursor.execute(self.sql, params, binary=True)
            turns_found, expected, rendered, body = cursor.fetchone()
        if turns_found != len(turn_ids):
            _raise_missing_turn(turn_ids)
        if rendered != expected:
            raise DatasetError(
                f"{expected - rendered} pairs of turns {groups.turns[start]}…"
                f"{groups.turns[end - 1]} rank a response of another turn, or one with a "
                "strength this export cannot render"
            )
        return bytes(body or b""), rendered


def _side_by_side(render, groups, chunks, workers: int) -> Iterator[tuple[bytes, int]]:
    """Chunk i is rendered by worker i % workers, each worker on its own connection and at
    most `_AHEAD` chunks ahead of the reader (constant memory); read back in order."""
    stop = threading.Event()
    outboxes = [queue.Queue(maxsize=_AHEAD) for _ in range(workers)]

    def work(index: int) -> None:
        outbox = outboxes[index]

        def put(item) -> bool:
            while not stop.is_set():
                try:
                    outbox.put(item, timeout=0.5)
                    return True
                except queue.Full:
                    continue
            return False

        try:
            with transaction.atomic():
                _no_jit()
                for number in range(index, len(chunks), workers):
                    if not put(render(groups, *chunks[number])):
                        return
        except BaseException as error:  # handed to the reader, which raises it
            put(error)
        finally:
            connection.close()  # this thread's own connection

    threads = [
        threading.Thread(target=work, args=(i,), name=f"export-sql-{i}", daemon=True)
        for i in range(workers)
    ]
    for thread in threads:
        thread.start()
    try:
        for number in range(len(chunks)):
            item = outboxes[number % workers].get()
            if isinstance(item, BaseException):
                raise item
            body, rendered = item
            if rendered:
                yield body, rendered
    finally:
        stop.set()
        for thread in threads:
            thread.join()


_AHEAD = 2  # chunks a worker renders ahead of the reader


def _chunk_rows(groups, start: int, end: int, *, consensus_only: bool, weights) -> dict:
    """The query's parameters for groups[start:end] (`FrozenGroups`): a row per judgement, in
    id order (the frozen file's order within a turn); an overlapping turn of a consensus-only
    snapshot gets one row, its consensus (computed here, in Python)."""
    offsets = groups.offsets
    turns = groups.turns[start:end].tolist()
    jids = groups.judgements[offsets[start] : offsets[end]].tolist()
    counts = [offsets[i + 1] - offsets[i] for i in range(start, end)]
    params = {"turns": turns, "jids": jids, "rankings": [], "ties": [], "bads": [],
              "turn_ids": turns}  # fmt: skip
    if all(count == 1 for count in counts):  # the common chunk: one judgement per turn
        return params
    consensus = {}
    if consensus_only:
        overlapping = [
            groups[i] for i, count in zip(range(start, end), counts, strict=True) if count > 1
        ]
        consensus = {
            item.turn_id: item.consensus()
            for item in iter_turn_items(overlapping, weights=weights)
            if len(item.judgements) > 1  # as `TurnItem.rows`: of those that still exist
        }
    row_turns, row_jids, rankings, ties, bads = [], [], [], [], []
    first = 0
    for turn_id, count in zip(turns, counts, strict=True):
        ids, first = jids[first : first + count], first + count
        row = consensus.get(turn_id)
        if row is not None:
            row_turns.append(turn_id)
            row_jids.append(None)
            rankings.append(json.dumps(row.ranking))
            ties.append(row.tie)
            bads.append(row.both_bad)
            continue
        for jid in sorted(ids) if count > 1 else ids:  # the Python path reads them by id
            row_turns.append(turn_id)
            row_jids.append(jid)
            if consensus:
                rankings.append(None)
                ties.append(None)
                bads.append(None)
    params.update(turns=row_turns, jids=row_jids, rankings=rankings, ties=ties, bads=bads)
    return params


def _raise_missing_turn(turn_ids) -> None:
    found = set(Turn.objects.filter(pk__any_of=set(turn_ids)).values_list("pk", flat=True))
    missing = min(set(turn_ids) - found)
    raise DatasetError(f"turn {missing} of this snapshot no longer exists")
