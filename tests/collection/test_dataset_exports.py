"""Dataset exports: streamed rows and files, pairs from rankings, margins, the consensus,
pseudonyms; the import, snapshot and export commands."""

import hashlib
import inspect
import io
import json

import pytest
from django.core.management import CommandError, call_command

from collection import dataset_errors, exports, snapshots
from collection.models import (
    DatasetImport,
    DatasetSnapshot,
)
from tests.collection.dataset_builders import collected, hh_line, write_lines

# Snapshots write their frozen id lists under MEDIA_ROOT: `media_root` keeps them in the
# test's folder (tests/collection/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


# --- Exports -------------------------------------------------------------------------------------


def test_export_rows_is_a_generator_and_stream_export_yields_bytes(alice, pairwise):
    for i in range(30):
        collected(pairwise, alice, [(f"q{i}", ["a", "b"], [0, 1], 1)])
    snapshot = snapshots.snapshot_create(filter={})
    rows = exports.export_rows(snapshot, "hh-rlhf", chunk_size=7)
    assert inspect.isgenerator(rows)
    assert len(list(rows)) == 30
    blocks = list(exports.stream_export(snapshot, "trl", "jsonl", block_size=256))
    assert len(blocks) > 1 and all(isinstance(b, bytes) for b in blocks)
    assert len(b"".join(blocks).decode().splitlines()) == 30
    parquet = b"".join(exports.stream_export(snapshot, "ranked", "parquet", block_size=512))
    assert parquet[:4] == b"PAR1" and parquet[-4:] == b"PAR1"
    with pytest.raises(dataset_errors.DatasetError, match="unknown export format"):
        exports.export_rows(snapshot, "csv")


def test_a_ranking_expands_to_all_or_adjacent_pairs(alice, ranking_campaign):
    collected(
        ranking_campaign,
        alice,
        [
            ("Hi", ["first", "second", "third"], [2, 0, 1], None),
            ("Then?", ["x", "y", "z"], [0, 1, 2], None),
        ],
    )
    snapshot = snapshots.snapshot_create(filter={})
    last = {"chosen", "rejected", "tie", "both_bad"}
    rows = [r for r in exports.export_rows(snapshot, "hh-rlhf") if "Then?" not in r["chosen"]]
    assert [(r["chosen"][-5:], r["rejected"][-6:]) for r in rows] == [
        ("third", " first"),
        ("third", "second"),
        ("first", "second"),
    ]
    adjacent = exports.export_rows(snapshot, "hh-rlhf", pairs="adjacent")
    assert len(list(adjacent)) == 4 == snapshot.counts["adjacent_pairs"]
    # History: the later turn's transcript carries the response the first turn continued with.
    second = next(r for r in exports.export_rows(snapshot, "hh-rlhf") if "Then?" in r["chosen"])
    assert second["chosen"] == "\n\nHuman: Hi\n\nAssistant: third\n\nHuman: Then?\n\nAssistant: x"
    assert set(second) == last


def test_trl_rows_carry_the_margin_from_the_strength(alice, pairwise):
    collected(
        pairwise, alice, [("Hi", ["weak", "strong"], [1, 0], 4), ("Ok", ["c", "d"], [0, 1], 1)]
    )
    snapshot = snapshots.snapshot_create(filter={})
    rows = list(exports.export_rows(snapshot, "trl", margin=True))
    assert [(r["chosen"][0]["content"], r["margin"]) for r in rows] == [("strong", 1.0), ("c", 0.0)]
    assert rows[1]["prompt"] == [
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "strong"},
        {"role": "user", "content": "Ok"},
    ]
    assert "margin" not in next(exports.export_rows(snapshot, "trl"))


def test_overlapping_judgements_give_a_borda_consensus(alice, bob, rita, ranking_campaign):
    # alice: C > A > B; bob: A > C > B; rita: A > B > C. Borda: A 5, C 3, B 1 -> A, C, B.
    collected(
        ranking_campaign,
        alice,
        [("Hi", ["A", "B", "C"], [2, 0, 1], None)],
        judges=[(bob, [0, 2, 1]), (rita, [0, 1, 2])],
    )
    every = snapshots.snapshot_create(filter={})
    ranked = list(exports.export_rows(every, "ranked"))
    assert len(ranked) == 3 and {r["origin"] for r in ranked} == {"conversation", "review"}
    raw = list(exports.export_rows(every, "raw"))
    assert [r["kind"] for r in raw] == ["judgement", "judgement", "judgement", "consensus"]
    consensus = raw[-1]
    assert consensus["ranking"] == [0, 2, 1] and consensus["ranks"] == [0, 2, 1]
    assert consensus["judgement_id"] is None and len(consensus["judgement_ids"]) == 3
    only = snapshots.snapshot_create(filter={"consensus_only": True})
    rows = list(exports.export_rows(only, "ranked"))
    assert len(rows) == 1 and rows[0]["ranking"] == [0, 2, 1]
    assert only.counts["rows"] == 1 and only.content_hash != every.content_hash
    pairs = list(exports.export_rows(only, "hh-rlhf"))
    assert [(p["chosen"][-1], p["rejected"][-1]) for p in pairs] == [
        ("A", "C"),
        ("A", "B"),
        ("C", "B"),
    ]


def test_ties_in_the_consensus_go_to_the_lower_response_index(alice, bob, pairwise):
    collected(pairwise, alice, [("Hi", ["A", "B"], [1, 0], 1)], judges=[(bob, [0, 1])])
    snapshot = snapshots.snapshot_create(filter={"consensus_only": True})
    assert next(exports.export_rows(snapshot, "ranked"))["ranking"] == [0, 1]


def test_ranked_rows_describe_who_judged_what_with_a_pseudonym(alice, pairwise, settings):
    collected(pairwise, alice, [("Hi", ["a", "b"], [1, 0], 3)])
    row = next(exports.export_rows(snapshots.snapshot_create(filter={}), "ranked"))
    expected = hashlib.sha256(f"{settings.SECRET_KEY}{alice.pk}".encode()).hexdigest()[:12]
    assert row["contractor"] == expected and "alice" not in json.dumps(row)
    assert (row["responses"], row["ranks"], row["ranking"], row["strength"]) == (
        ["a", "b"],
        [1, 0],
        [1, 0],
        3,
    )
    assert (row["campaign"], row["mode"], row["source"]) == ("pairs", "helpful", "collected")
    assert row["context"] == [{"role": "user", "content": "Hi"}]


# --- Commands ------------------------------------------------------------------------------------


def test_the_commands_import_snapshot_and_export(tmp_path):
    path = write_lines(tmp_path / "p.jsonl", [hh_line(str(i), "y", "n") for i in range(5)])
    out, err = io.StringIO(), io.StringIO()
    call_command(
        "import_dataset", "--format", "hh-rlhf", "--file", str(path), stdout=out, stderr=err
    )
    assert '"judgements": 5' in out.getvalue() and "write" in err.getvalue()
    dataset_import = DatasetImport.objects.get()
    out = io.StringIO()
    call_command(
        "make_snapshot", "--filter", json.dumps({"imports": [dataset_import.pk]}), stdout=out
    )
    snapshot = DatasetSnapshot.objects.get()
    assert snapshot.content_hash in out.getvalue()
    with pytest.raises(CommandError, match="unknown filter key"):
        call_command("make_snapshot", "--filter", '{"colour": 1}')
    for file_format in ("jsonl", "parquet"):
        target = tmp_path / f"out.{file_format}"
        out, err = io.StringIO(), io.StringIO()
        call_command(
            "export_dataset",
            "--snapshot",
            str(snapshot.pk),
            "--format",
            "hh-rlhf",
            "--file-format",
            file_format,
            "--out",
            str(target),
            stdout=out,
            stderr=err,
        )
        assert "wrote 5 rows" in out.getvalue() and "5/5" in err.getvalue()
        assert target.exists()
