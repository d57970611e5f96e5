"""The pair exports rendered by PostgreSQL (collection/export_sql.py) write the bytes the Python
path writes (`exports.jsonl_chunks(..., sql=False)`: `export_rows` and `json.dumps`), for
every format and option, on text that JSON must escape; chunk by chunk, on this connection or
on worker connections side by side; and a snapshot whose turn is gone fails as the Python
path does. The compact frozen groups read as `snapshot_frozen`'s.

Only PostgreSQL has this path; elsewhere the Python path is the only one (CI runs these on
PostgreSQL).
"""

import threading

import pytest
from django.db import connection

from collection import export_sql, exports, snapshots
from collection.dataset_errors import DatasetError
from collection.models import Judgement, Response, Turn
from tests.collection.dataset_builders import collected

on_postgresql = pytest.mark.skipif(
    connection.vendor != "postgresql", reason="the SQL export path is PostgreSQL's"
)
pytestmark = [pytest.mark.usefixtures("media_root")]

# What JSON escapes (quotes, backslashes, control characters) and what it leaves as it is
# (non-ASCII, U+2028, DEL), in human texts, responses and chosen responses of earlier turns.
ODD = 'say "hi" \\ back\x01\x1f\b\f\t\r\nnext é ü 😀 \u2028 \x7f end'


def dataset(alice, bob, rita, pairwise, ranking_campaign):
    """Multi-turn pairwise conversations, rankings of 3, a tie, "both bad", and overlapping
    judgements (a consensus) in a turn of each campaign."""
    for i in range(4):
        collected(
            pairwise,
            alice,
            [
                (f"q{i} {ODD}", [f"a{i} {ODD}", f"b{i}"], [1, 0], 1 + i % 4),
                (f"then {i}", [f"c{i}", f"d{i} {ODD}"], [0, 1], None),
                (f"last {i} {ODD}", ["e", "f"], [1, 0], 4),
            ],
            judges=[(bob, [0, 1])] if i == 2 else (),
        )
    collected(
        ranking_campaign,
        alice,
        [
            ("rank", ["A", f"B {ODD}", "C"], [2, 0, 1], None),
            ("again", ["x", "y", "z"], [0, 1, 2], None),
        ],
        judges=[(bob, [0, 2, 1]), (rita, [1, 0, 2])],
    )
    first = Judgement.objects.order_by("pk")
    Judgement.objects.filter(pk=first[1].pk).update(tie=True)
    Judgement.objects.filter(pk=first[2].pk).update(both_bad=True)


def both_paths(snapshot, fmt, **options):
    sql = b"".join(body for body, _ in exports.jsonl_chunks(snapshot, fmt, sql=True, **options))
    python = b"".join(body for body, _ in exports.jsonl_chunks(snapshot, fmt, sql=False, **options))
    return sql, python


OPTIONS = [
    ("hh-rlhf", {}),
    ("hh-rlhf", {"pairs": "adjacent"}),
    ("hh-rlhf", {"split": "train"}),
    ("hh-rlhf", {"split": "held_out"}),
    ("trl", {}),
    ("trl", {"margin": True}),
    ("trl", {"pairs": "adjacent", "margin": True}),
]


@on_postgresql
@pytest.mark.django_db
@pytest.mark.parametrize("snapshot_filter", [{}, {"consensus_only": True}])
def test_the_database_writes_the_python_paths_bytes(
    alice, bob, rita, pairwise, ranking_campaign, monkeypatch, snapshot_filter
):
    dataset(alice, bob, rita, pairwise, ranking_campaign)
    snapshot = snapshots.snapshot_create(filter=snapshot_filter)
    monkeypatch.setattr(export_sql, "SQL_CHUNK", 4)  # chunks with and without overlapping turns
    for fmt, options in OPTIONS:
        sql, python = both_paths(snapshot, fmt, **options)
        assert sql == python, (fmt, options)
        expected = exports.export_row_count(snapshot, fmt, split=options.get("split", "all"),
                                            pairs=options.get("pairs", "all"))  # fmt: skip
        assert sql.count(b"\n") == expected, (fmt, options)
        assert expected > 0 or options.get("split") == "held_out"  # a tenth: maybe none here
    # The escapes JSON needs are there, and the rest is written as it is.
    hh, _ = both_paths(snapshot, "hh-rlhf")
    assert b'\\"hi\\" \\\\ back\\u0001\\u001f\\b\\f\\t\\r\\nnext \xc3\xa9' in hh
    assert "😀 \u2028 \x7f".encode() in hh
    # The consensus-only snapshot has fewer rows: its overlapping turns give one ranking each.
    if snapshot_filter:
        every = snapshots.snapshot_create(filter={})
        assert exports.export_row_count(snapshot, "hh-rlhf") < exports.export_row_count(
            every, "hh-rlhf"
        )


@on_postgresql
@pytest.mark.django_db
def test_a_weighted_consensus_and_the_parquet_and_ranked_formats_keep_their_paths(
    alice, bob, rita, pairwise, ranking_campaign, monkeypatch
):
    dataset(alice, bob, rita, pairwise, ranking_campaign)
    weighted = snapshots.snapshot_create(
        filter={"consensus_only": True, "weighting": "reliability"}
    )
    monkeypatch.setattr(export_sql, "SQL_CHUNK", 3)
    sql, python = both_paths(weighted, "trl", margin=True)
    assert sql == python and sql
    assert not export_sql.supported("ranked", "jsonl")
    assert not export_sql.supported("trl", "parquet")
    assert export_sql.supported("hh-rlhf", "jsonl") and export_sql.supported("trl", "jsonl")


def erase(turn) -> None:
    """The turn gone, with what protects it (its responses, its judgements)."""
    Judgement.objects.filter(turn=turn).delete()
    Turn.objects.filter(pk=turn.pk).update(chosen_response=None)
    Response.objects.filter(turn=turn).delete()
    Turn.objects.filter(pk=turn.pk).delete()


def other_sessions() -> int:
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return cursor.fetchone()[0]


@on_postgresql
@pytest.mark.django_db(transaction=True)
def test_worker_connections_render_chunks_side_by_side_in_order(
    alice, bob, rita, pairwise, ranking_campaign, monkeypatch, settings
):
    """Outside a transaction the chunks go to `ALIGNLAB_EXPORT_SQL_WORKERS` connections of
    their own; the reader puts them back in order, and the workers close their connections."""
    dataset(alice, bob, rita, pairwise, ranking_campaign)
    snapshot = snapshots.snapshot_create(filter={"consensus_only": True})
    monkeypatch.setattr(export_sql, "SQL_CHUNK", 2)
    settings.COLLECTION_EXPORT_SQL_WORKERS = 3
    started = []
    real_thread = threading.Thread

    def counting_thread(*args, **kwargs):
        started.append(kwargs.get("name"))
        return real_thread(*args, **kwargs)

    monkeypatch.setattr(export_sql.threading, "Thread", counting_thread)
    before = other_sessions()
    sql, python = both_paths(snapshot, "hh-rlhf")
    assert other_sessions() == before  # each worker closed its connection
    assert sql == python and sql.count(b"\n") == exports.export_row_count(snapshot, "hh-rlhf")
    assert started == ["export-sql-0", "export-sql-1", "export-sql-2"]
    assert not [t for t in threading.enumerate() if t.name.startswith("export-sql-")]

    # A failure in a worker reaches the reader, as the Python path's would.
    erase(Turn.objects.get(human_text="again"))
    with pytest.raises(DatasetError, match="of this snapshot no longer exists"):
        b"".join(body for body, _ in exports.jsonl_chunks(snapshot, "hh-rlhf", sql=True))
    assert not [t for t in threading.enumerate() if t.name.startswith("export-sql-")]


@on_postgresql
@pytest.mark.django_db
def test_a_turn_gone_or_a_response_of_another_turn_is_a_clear_error(
    alice, bob, rita, pairwise, ranking_campaign
):
    dataset(alice, bob, rita, pairwise, ranking_campaign)
    snapshot = snapshots.snapshot_create(filter={})
    turn = Turn.objects.get(human_text="rank")
    other = Turn.objects.get(human_text="again").responses.first()
    judgement = Judgement.objects.filter(turn=turn).order_by("pk").first()
    ranking = judgement.ranking
    Judgement.objects.filter(pk=judgement.pk).update(ranking=[other.pk, *ranking[1:]])
    with pytest.raises(DatasetError, match="2 pairs of turns .* rank a response of another turn"):
        list(exports.jsonl_chunks(snapshot, "hh-rlhf", sql=True))
    Judgement.objects.filter(pk=judgement.pk).update(ranking=ranking)
    erase(turn)
    for sql in (True, False):
        with pytest.raises(DatasetError, match=f"turn {turn.pk} of this snapshot no longer"):
            list(exports.jsonl_chunks(snapshot, "hh-rlhf", sql=sql))


@pytest.mark.django_db
def test_the_compact_frozen_groups_read_as_the_lists(alice, bob, rita, pairwise, ranking_campaign):
    dataset(alice, bob, rita, pairwise, ranking_campaign)
    for snapshot_filter in ({}, {"consensus_only": True, "weighting": "reliability"}):
        snapshot = snapshots.snapshot_create(filter=snapshot_filter)
        listed, weights = snapshots.snapshot_frozen(snapshot)
        compact, compact_weights = snapshots.snapshot_frozen_compact(snapshot)
        assert compact[:] == listed and len(compact) == len(listed)
        assert [compact[i] for i in range(-1, len(compact) - 1)] == [listed[-1], *listed[:-1]]
        assert compact_weights == weights
        if weights is not None:  # read into arrays, looked up as the dict was
            assert isinstance(compact_weights, snapshots.FrozenWeights) and len(weights) > 1
            assert all(compact_weights.get(jid) == w for jid, w in weights.items())
            assert compact_weights.get(max(weights) + 1, 1.0) == 1.0
        assert any(len(ids) > 1 for _, _, ids in listed)
        train = compact.where(lambda c: c % 2 == 0)
        assert train[:] == [g for g in listed if g[0] % 2 == 0]
    with pytest.raises(IndexError):
        compact[len(compact)]
