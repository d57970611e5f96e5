"""Dataset snapshots: the filter (validated, clear errors, never mixing imported data in),
the frozen id list, the content hash and the train/held-out split."""

import hashlib
import json
from datetime import UTC, datetime

import pytest
from django.core.exceptions import ValidationError

from collection import exports, imports, quality, snapshot_filters, snapshots
from collection.dataset_errors import SnapshotFilterError
from collection.models import Conversation, DatasetSnapshot, GoldAnswer, Judgement, Response, Turn
from tests.collection.dataset_builders import collected, hh_line, judgement_write, write_lines
from tests.data import HHH_DIR

# Snapshots write their frozen id lists under MEDIA_ROOT: `media_root` keeps them in the
# test's folder (tests/collection/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]

HHH_HARMLESS = HHH_DIR / "harmless" / "task.json"


# --- Snapshot filters ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ({"campaign": [1]}, "unknown filter key(s): campaign"),
        ({"modes": ["nice"]}, "modes: unknown value(s) nice"),
        ({"sources": "imported"}, "sources must be a non-empty list"),
        ({"campaigns": ["1"]}, "campaigns must be a list of ids"),
        ({"date_from": "yesterday"}, "date_from: 'yesterday' is not an ISO date"),
        ({"min_gold_accuracy": 2}, "min_gold_accuracy must be between 0 and 1"),
        ({"consensus_only": "yes"}, "consensus_only must be true or false"),
        ({"imports": [1], "sources": ["collected"]}, 'add "imported" to sources'),
        ({"exclude_eval_prompts": "/no/such/task.json"}, "exclude_eval_prompts must be the name"),
        ({"exclude_eval_prompts": ["x" * 10_001]}, "of at most 10,000 characters each"),
    ],
)
def test_a_bad_filter_is_a_clear_validation_error(rita, bad, message):
    with pytest.raises(SnapshotFilterError) as raised:
        snapshots.snapshot_create(filter=bad, created_by=rita)
    assert message in str(raised.value)
    assert isinstance(raised.value, ValidationError)  # the API answers 400
    assert not DatasetSnapshot.objects.exists()


def test_imported_data_is_never_mixed_in_silently(alice, pairwise, tmp_path):
    collected(pairwise, alice, [("Hi", ["a", "b"], [1, 0], 2)])
    path = write_lines(tmp_path / "p.jsonl", [hh_line("imported?", "y", "n")])
    dataset_import = imports.dataset_import_create(path=path, format="hh-rlhf")
    default = snapshots.snapshot_create(filter={})
    assert default.filter["sources"] == ["collected"] and default.counts["judgements"] == 1
    both = snapshots.snapshot_create(filter={"sources": ["collected", "imported"]})
    assert both.counts["judgements"] == 2
    only = snapshots.snapshot_create(filter={"imports": [dataset_import.pk]})
    assert only.filter["sources"] == ["imported"] and only.counts["judgements"] == 1
    with pytest.raises(SnapshotFilterError, match="no judgements match"):
        snapshots.snapshot_create(filter={"imports": [dataset_import.pk + 100]})


def test_filters_by_campaign_mode_and_date(alice, pairwise, ranking_campaign):
    collected(pairwise, alice, [("Hi", ["a", "b"], [0, 1], 1)])
    collected(ranking_campaign, alice, [("Yo", ["a", "b", "c"], [2, 0, 1], None)])
    assert snapshots.snapshot_create(filter={"modes": ["honest"]}).counts["judgements"] == 1
    by_campaign = snapshots.snapshot_create(filter={"campaigns": [pairwise.pk]})
    assert by_campaign.counts["judgements"] == 1
    later = Judgement.objects.get(turn__conversation__campaign=ranking_campaign)
    Judgement.objects.filter(pk=later.pk).update(created_at=datetime(2031, 5, 2, 12, tzinfo=UTC))
    windowed = snapshots.snapshot_create(
        filter={"date_from": "2031-05-02", "date_to": "2031-05-02"}
    )
    assert snapshots.snapshot_judgement_ids(windowed) == [later.pk]


def test_a_date_with_any_rfc3339_offset_is_read_as_its_instant(alice, pairwise):
    # PostgreSQL refuses offsets past ±15:59 in a query; RFC 3339 allows them (SECURITY.md ST101).
    collected(pairwise, alice, [("Hi", ["a", "b"], [0, 1], 1)])
    judgement = Judgement.objects.get()
    Judgement.objects.filter(pk=judgement.pk).update(
        created_at=datetime(2031, 5, 2, 12, tzinfo=UTC)
    )
    # 2031-05-01T13:13-22:47 is 2031-05-02T12:00 UTC
    since = snapshots.snapshot_create(filter={"date_from": "2031-05-01T13:13:00-22:47"})
    assert snapshots.snapshot_judgement_ids(since) == [judgement.pk]
    with pytest.raises(SnapshotFilterError, match="no judgements match"):
        snapshots.snapshot_create(filter={"date_to": "2031-05-01T13:12:59-22:47"})
    with pytest.raises(SnapshotFilterError, match="date_to: '9999-12-31T23:59:59-23:59' is out"):
        snapshot_filters.snapshot_filter_clean({"date_to": "9999-12-31T23:59:59-23:59"})


def test_exclude_eval_prompts_drops_conversations_opening_with_an_eval_prompt(alice, pairwise):
    task = json.loads(HHH_HARMLESS.read_text())
    eval_prompt = task["examples"][0]["input"]
    spaced = "  " + eval_prompt.replace(" ", "   \n", 1) + " "
    collected(pairwise, alice, [(spaced, ["a", "b"], [0, 1], 1), ("more", ["c", "d"], [0, 1], 1)])
    collected(pairwise, alice, [("An unrelated question", ["a", "b"], [0, 1], 1)])
    by_name = snapshots.snapshot_create(filter={"exclude_eval_prompts": "hhh:harmless"})
    assert by_name.counts["judgements"] == 1 and by_name.counts["excluded_eval_prompts"] == 2
    by_list = snapshots.snapshot_create(filter={"exclude_eval_prompts": [eval_prompt]})
    assert by_list.content_hash == by_name.content_hash
    every_hhh = snapshots.snapshot_create(filter={"exclude_eval_prompts": "hhh"})
    assert every_hhh.content_hash == by_name.content_hash


def test_min_gold_accuracy_keeps_contractors_who_answer_gold_items_well(alice, bob, adam, pairwise):
    collected(pairwise, alice, [("alice asks", ["a", "b"], [0, 1], 1)])
    collected(pairwise, bob, [("bob asks", ["a", "b"], [0, 1], 1)])
    gold = Conversation.objects.create(campaign=pairwise, contractor=adam, source="gold")
    turn = Turn.objects.create(conversation=gold, index=0, human_text="gold?", status="judged")
    best = Response.objects.create(turn=turn, index=0, text="right")
    worst = Response.objects.create(turn=turn, index=1, text="wrong")
    GoldAnswer.objects.create(turn=turn, best_response=best, created_by=adam)
    for who, ranking in ((alice, [best.pk, worst.pk]), (bob, [worst.pk, best.pk])):
        judgement_write(turn, who, ranking, origin="review")
    assert quality.contractor_gold_accuracy() == {alice.pk: (1, 1), bob.pk: (0, 1)}
    snapshot = snapshots.snapshot_create(filter={"min_gold_accuracy": 0.8})
    kept = Judgement.objects.filter(pk__in=snapshots.snapshot_judgement_ids(snapshot))
    assert {j.contractor_id for j in kept} == {alice.pk}
    assert all(j.turn.conversation.source == "collected" for j in kept)


# --- Snapshots: frozen, hashed, split ----------------------------------------------------------


def test_the_content_hash_is_stable_for_the_same_data_and_changes_with_it(alice, pairwise):
    collected(pairwise, alice, [("Hi", ["a", "b"], [1, 0], 2), ("Again", ["c", "d"], [0, 1], 4)])
    first = snapshots.snapshot_create(filter={}, name="one")
    second = snapshots.snapshot_create(filter={}, name="two")
    assert first.content_hash == second.content_hash and len(first.content_hash) == 64
    assert snapshots.snapshot_judgement_ids(first) == snapshots.snapshot_judgement_ids(second)
    collected(pairwise, alice, [("New", ["e", "f"], [0, 1], 1)])
    third = snapshots.snapshot_create(filter={})
    assert third.content_hash != first.content_hash and third.counts["judgements"] == 3
    # The earlier snapshot never changes: it still holds its own two judgements.
    first.refresh_from_db()
    assert first.counts["judgements"] == 2
    assert len(list(exports.export_rows(first, "ranked"))) == 2


def test_the_same_content_imported_twice_hashes_the_same(tmp_path):
    lines = [hh_line(str(i), "yes", "no") for i in range(4)]
    a = imports.dataset_import_create(path=write_lines(tmp_path / "a", lines), format="hh-rlhf")
    b = imports.dataset_import_create(
        path=write_lines(tmp_path / "b", lines[::-1]), format="hh-rlhf"
    )
    assert a.pk != b.pk  # different bytes (order), same content
    snap_a = snapshots.snapshot_create(filter={"imports": [a.pk]})
    snap_b = snapshots.snapshot_create(filter={"imports": [b.pk]})
    assert snap_a.content_hash == snap_b.content_hash


def test_the_split_is_deterministic_by_conversation_and_never_straddles(alice, pairwise):
    for i in range(40):
        collected(
            pairwise, alice, [(f"q{i}", ["a", "b"], [0, 1], 1), (f"r{i}", ["c", "d"], [1, 0], 1)]
        )
    snapshot = snapshots.snapshot_create(filter={})
    train = list(exports.export_rows(snapshot, "ranked", split="train"))
    held = list(exports.export_rows(snapshot, "ranked", split="held_out"))
    assert len(train) + len(held) == 80
    assert {r["conversation_id"] for r in train}.isdisjoint(r["conversation_id"] for r in held)
    for row in train + held:
        digest = int(hashlib.sha256(str(row["conversation_id"]).encode()).hexdigest(), 16)
        assert row["split"] == ("held_out" if digest % 10 == 0 else "train")
    assert (
        len(held) == snapshot.counts["held_out_rows"]
        and len(train) == snapshot.counts["train_rows"]
    )
    again = list(exports.export_rows(snapshot, "ranked", split="held_out"))
    assert [r["judgement_id"] for r in again] == [r["judgement_id"] for r in held]
