"""Querysets whose SQL the ORM writes once per thread and database, then run with new values.

The review queue's hot path runs the same few querysets on every judgement with only ids and a
time changing. Building each one's SQL costs far more than running it: on the review queue's
claim (a gold lookup, the uncertainty campaigns, the open-turn lookup), the ORM took 6.6-8.8 ms
of CPU a call where the very same SQL sent by hand took 0.7-1.0 ms (PostgreSQL, 2026-12-02,
BENCHMARKS.md "Session 13"). No maintained library caches compiled ORM SQL (django-cachalot and
the like cache results, which must not be stale here), so this module does, narrowly:

    GOLD = QueryShape(lambda contractor: Turn.objects.filter(...)[:1], contractor=PK)
    turns = GOLD.fetch(contractor=request.user)        # a list, as list(queryset) gives

A shape's `build` is called once per thread and database alias with *marker* values: distinct
ids and times that the compiled parameters are searched for. Each later call copies the
parameters with the markers replaced by the call's values (adapted as the ORM adapts them) and
runs the compiled SQL through the ORM's own iterable, so rows become model instances,
`select_related` objects, annotations or `values_list` tuples exactly as the queryset would
make them. What may change between calls is only what a parameter carries: anything that
changes the SQL itself (a list's length, a branch in `build`) must go in the `shape` key
passed to `fetch`. The SQL text of a shape is the same on every call, which also lets psycopg
prepare it once per connection (`DATABASE_PREPARE_THRESHOLD`).

Kinds of values: `PK` (a model instance or an id), `PKS` (a list of them; its length is part
of the shape), `INT` (an integer that is not an id, such as a count; never a bool: a bool
shapes the SQL, so it goes in `shape`), `TIME` (an aware datetime) and `TEXT` (a string
compared as it is, by `exact`: a lookup that rewrites its string, such as `contains`, is
refused).

`UpdateShape` does the same for an UPDATE: its `build` returns the queryset and the changes, as
`queryset.update(**changes)` takes them, and `run` returns the number of rows changed. The
review queue's hold and the judged turn's update are built that way: writing the hold's UPDATE
took about a third of the claim's CPU (BENCHMARKS.md, "Session 15").
"""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

from django.db import connections, transaction
from django.db.models.sql import UpdateQuery
from django.db.transaction import TransactionManagementError

PK, PKS, INT, TIME, TEXT = "pk", "pks", "int", "time", "text"
_KINDS = (PK, PKS, INT, TIME, TEXT)
# Markers: small enough for any integer column (Django drops a comparison with a value out of
# the column's range, such as a small integer's 32,767, from the SQL), and two sets of them, so
# that a constant that happens to equal a marker shows as a slot that moves.
_MARKER_IDS = (31_101, 31_401)
_MARKER_TIMES = (
    datetime(1901, 2, 3, 4, 5, 6, tzinfo=UTC),
    datetime(1902, 3, 4, 5, 6, 7, tzinfo=UTC),
)
_INT64 = (-(2**63), 2**63 - 1)  # the widest integer column (bigint)
# With the characters a LIKE pattern escapes, so that a lookup which rewrites its string
# (`iexact` on SQLite, `contains`, `startswith`) leaves no marker to find and is refused.
_MARKER_TEXT = "%_\\alignlab-query-shape-{which}-{serial}"


class QueryShapeError(RuntimeError):
    """A shape whose compiled parameters do not hold each of its markers exactly as given."""


def _pk(value) -> int:
    return int(getattr(value, "pk", value))


def _fits(value) -> bool:
    """Whether an id (or an instance's) fits the widest integer column, bigint."""
    return _INT64[0] <= _pk(value) <= _INT64[1]


class QueryShape:
    def __init__(self, build, **kinds: str):
        unknown = {name: kind for name, kind in kinds.items() if kind not in _KINDS}
        if unknown:
            raise ValueError(f"unknown kinds {unknown}: use PK, PKS, INT, TIME or TEXT")
        self.build, self.kinds = build, kinds
        self._local = threading.local()

    def fetch(self, *, using: str = "default", shape=(), **values) -> list:
        """The queryset's rows for these values: what `list(build(**values))` returns."""
        prepared = self._prepared(using, shape, values)
        if prepared is None:
            return list(self._build(self._ids(values), shape).using(using))
        (queryset, compiler, *_), _ = prepared
        connection = connections[using]
        if queryset.query.select_for_update and connection.get_autocommit():
            # What the ORM itself refuses: a lock that would end with its statement.
            raise TransactionManagementError(
                "select_for_update cannot be used outside of a transaction."
            )
        return list(queryset._iterable_class(queryset))

    def _prepared(self, using: str, shape, values: dict):
        """(the compiled entry, its parameters for `values`), the compiler set to run them; None
        for an id that no integer column holds (twenty digits from a URL): the ORM drops an
        equality with it from the SQL rather than send it (SQLite cannot take it), so the
        caller runs the ORM's own queryset (`_ids`)."""
        if values.keys() != self.kinds.keys():
            raise TypeError(f"expected values for {sorted(self.kinds)}, got {sorted(values)}")
        if not self._ids_fit(values):
            return None
        lengths = tuple(len(values[n]) for n, kind in self.kinds.items() if kind == PKS)
        key = (using, lengths, shape)
        compiled = getattr(self._local, "compiled", None)
        if compiled is None:
            compiled = self._local.compiled = {}
        entry = compiled.get(key)
        if entry is None:
            lengths_of = dict(zip(self._pks(), lengths, strict=True))
            entry = compiled[key] = self._compile(using, lengths_of, shape)
        _, compiler, sql, slots, _, params = entry
        connection = connections[using]
        ops = connection.ops
        run_params = list(params)
        for position, name, index in slots:
            kind, value = self.kinds[name], values[name]
            if kind == PK:
                run_params[position] = _pk(value)
            elif kind == INT:
                if not isinstance(value, int) or isinstance(value, bool):
                    raise TypeError(f"{name} must be an integer, not {type(value).__name__}")
                run_params[position] = value
            elif kind == PKS:
                run_params[position] = _pk(value[index])
            elif kind == TEXT:
                if not isinstance(value, str):
                    raise TypeError(f"{name} must be a string, not {type(value).__name__}")
                run_params[position] = value
            else:
                run_params[position] = ops.adapt_datetimefield_value(value)
        compiler.connection = connection  # this thread's connection, as the ORM's would be
        compiler.as_sql = lambda *args, **kwargs: (sql, tuple(run_params))
        return entry, run_params

    def _ids(self, values: dict) -> dict:
        """`values` with ids for instances and without the ids no bigint holds (in a list; the
        ORM drops a comparison with a single one itself), as `build` gets them when compiled
        (its markers are ids too)."""
        ids = dict(values)
        for name, kind in self.kinds.items():
            if kind == PK:
                ids[name] = _pk(values[name])
            elif kind == PKS:
                ids[name] = [_pk(v) for v in values[name] if _fits(v)]
        return ids

    def _compiler(self, built, using: str):
        """(queryset, compiler) of what `build` returned, on `using`."""
        queryset = built.using(using)
        compiler = queryset.query.get_compiler(using=using)
        compiler.get_converters = _converters_kept(compiler.get_converters)
        return queryset, compiler

    def _build(self, values: dict, shape):
        return self.build(**values, **({"shape": shape} if shape != () else {}))

    def _ids_fit(self, values: dict) -> bool:
        return all(
            _fits(values[name]) if kind in (PK, INT) else all(_fits(v) for v in values[name])
            for name, kind in self.kinds.items()
            if kind in (PK, PKS, INT)
        )

    def _pks(self):
        return [name for name, kind in self.kinds.items() if kind == PKS]

    def _compile(self, using: str, lengths: dict, shape):
        first = self._compile_with(using, lengths, shape, 0)
        second = self._compile_with(using, lengths, shape, 1)
        if first[2:5] != second[2:5]:  # the SQL, the slots or the number of parameters
            raise QueryShapeError(
                "the compiled SQL or its parameters' places change with the values: a value "
                "that shapes the SQL (not a parameter) must go in `shape`"
            )
        return first

    def _compile_with(self, using: str, lengths: dict, shape, which: int):
        markers, expected, serial = {}, {}, 0
        connection = connections[using]
        for name, kind in self.kinds.items():
            if kind in (PK, INT):
                markers[name] = _MARKER_IDS[which] + serial
                expected[markers[name]] = (name, None)
                serial += 1
            elif kind == PKS:
                markers[name] = [_MARKER_IDS[which] + serial + i for i in range(lengths[name])]
                for index, marker in enumerate(markers[name]):
                    expected[marker] = (name, index)
                serial += lengths[name]
            elif kind == TEXT:
                markers[name] = _MARKER_TEXT.format(which=which, serial=serial)
                expected[markers[name]] = (name, None)
                serial += 1
            else:
                marker = _MARKER_TIMES[which] + timedelta(microseconds=serial)
                markers[name] = marker
                expected[connection.ops.adapt_datetimefield_value(marker)] = (name, None)
                serial += 1
        queryset, compiler = self._compiler(self._build(markers, shape), using)
        sql, params = compiler.as_sql()  # a lock outside a transaction is refused here
        self._check(compiler)
        slots, found = [], set()
        for position, param in enumerate(params):
            if isinstance(param, (int, str, datetime)) and not isinstance(param, bool):
                hit = expected.get(param)
                if hit is not None:
                    slots.append((position, *hit))
                    found.add(hit)
        missing = set(expected.values()) - found
        if missing:
            raise QueryShapeError(
                f"markers {sorted(m[0] for m in missing)} are not among the compiled parameters: "
                "a value that shapes the SQL (not a parameter) must go in `shape`"
            )
        queryset.query.get_compiler = lambda *args, **kwargs: compiler  # the iterable's compiler
        return queryset, compiler, sql, tuple(slots), len(params), params

    def _check(self, compiler) -> None:
        """Refuse what the compiled SQL cannot stand for on a later call (nothing, here)."""


class UpdateShape(QueryShape):
    """An UPDATE whose SQL the ORM writes once per thread and database (see the module's doc):

        HOLD = UpdateShape(
            lambda turn, contractor, until: (
                Turn.objects.filter(pk=turn),
                {"review_claimed_by": contractor, "review_claimed_until": until},
            ),
            turn=PK, contractor=PK, until=TIME,
        )
        changed = HOLD.run(turn=turn, contractor=user, until=later)  # what .update() returns

    Only an UPDATE of one table's rows: one over a join is refused (the ORM selects the ids
    first, a query that would be run once and kept), as is one of a sliced or ordered queryset.
    """

    def fetch(self, **values):
        raise TypeError("an UpdateShape runs an UPDATE: call run()")

    def run(self, *, using: str = "default", shape=(), **values) -> int:
        """The number of rows the UPDATE changed, as `queryset.update(**changes)` returns it."""
        prepared = self._prepared(using, shape, values)
        if prepared is None:
            queryset, changes = self._build(self._ids(values), shape)
            return queryset.using(using).update(**changes)
        (_, _, sql, *_), params = prepared
        with transaction.mark_for_rollback_on_error(using=using):
            with connections[using].cursor() as cursor:
                cursor.execute(sql, params)
                return cursor.rowcount

    def _compiler(self, built, using: str):
        queryset, changes = built
        queryset = queryset.using(using)
        if queryset.query.is_sliced or queryset.query.order_by:
            raise QueryShapeError("an UpdateShape's queryset may be neither sliced nor ordered")
        query = queryset.query.chain(UpdateQuery)
        query.add_update_values(changes)
        query.clear_select_clause()
        return queryset, query.get_compiler(using)

    def _check(self, compiler) -> None:
        if compiler.query.related_updates or compiler.query.count_active_tables() != 1:
            raise QueryShapeError(
                "an UpdateShape updates one table's rows: this one joins or updates a parent "
                "table, which the ORM does with a query of the ids first"
            )


def _converters_kept(get_converters):
    """`SQLCompiler.get_converters`, asked once per list of expressions: the compiler's
    `results_iter` asks it on every call for the same selected columns (about 250 columns'
    converters looked up per judgement, a few % of its CPU). The converters are the backend's
    and the fields' methods, bound to this thread's connection wrapper, which stays the same
    object for the thread's life (`connections[alias]`), as the compiler does."""
    kept = {}

    def converters(expressions):
        key = tuple(map(id, expressions))  # the compiler's own select list: alive as it is
        if key not in kept:
            kept[key] = get_converters(expressions)
        return kept[key]

    return converters
