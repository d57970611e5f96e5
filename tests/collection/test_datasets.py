"""Datasets: imports (HH-RLHF, Open-Assistant, TRL), snapshots, streaming exports, commands."""

import gzip
import hashlib
import inspect
import io
import json
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pytest
from django.core.exceptions import ValidationError
from django.core.management import CommandError, call_command

from collection import dataset_errors, exports, imports, quality, snapshot_filters, snapshots
from collection.dataset_errors import ImportFormatError, SnapshotFilterError
from collection.models import (
    Campaign,
    Conversation,
    DatasetImport,
    DatasetSnapshot,
    GoldAnswer,
    Judgement,
    Response,
    Turn,
)
from tests.data import HH_TEST, HHH_DIR, OASST

pytestmark = pytest.mark.django_db

HHH_HARMLESS = HHH_DIR / "harmless" / "task.json"
MODELS = (Campaign, Conversation, Turn, Response, Judgement, DatasetImport)


@pytest.fixture(autouse=True)
def media_root(settings, tmp_path):
    """Snapshots write their frozen id lists under MEDIA_ROOT: keep them in the test's folder."""
    settings.MEDIA_ROOT = tmp_path / "media"


def row_counts() -> dict:
    return {model.__name__: model.objects.count() for model in MODELS}


def hh_line(human: str, chosen: str, rejected: str) -> str:
    context = f"\n\nHuman: {human}"
    return json.dumps(
        {
            "chosen": f"{context}\n\nAssistant: {chosen}",
            "rejected": f"{context}\n\nAssistant: {rejected}",
        }
    )


def write_lines(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


# --- Collected data, written directly (the judging services are tested elsewhere) -------------


def collected(campaign, contractor, turns, *, judges=()):
    """A conversation whose turns are (human, [responses], better-first indices, strength).

    `judges` adds review judgements of the LAST turn: (contractor, better-first indices).
    """
    conversation = Conversation.objects.create(
        campaign=campaign, contractor=contractor, status=Conversation.Status.ENDED
    )
    for index, (human, texts, order, strength) in enumerate(turns):
        turn = Turn.objects.create(
            conversation=conversation, index=index, human_text=human, status=Turn.Status.JUDGED
        )
        responses = [
            Response.objects.create(turn=turn, index=i, text=t) for i, t in enumerate(texts)
        ]
        ranking = [responses[i].pk for i in order]
        Judgement.objects.create(
            turn=turn,
            contractor=contractor,
            origin=Judgement.Origin.CONVERSATION,
            ranking=ranking,
            submitted_ranking=ranking,
            strength=strength,
        )
        turn.chosen_response_id = ranking[0]
        turn.save(update_fields=["chosen_response"])
    for judge, order in judges:
        ranking = [responses[i].pk for i in order]
        Judgement.objects.create(
            turn=turn,
            contractor=judge,
            origin=Judgement.Origin.REVIEW,
            ranking=ranking,
            submitted_ranking=ranking,
        )
    return conversation


@pytest.fixture
def pairwise():
    return Campaign.objects.create(name="pairs", k=2)


@pytest.fixture
def ranking_campaign():
    return Campaign.objects.create(name="ranks", k=3, judgement_type="ranking", mode="honest")


# --- HH-RLHF: the real file round-trips ----------------------------------------------------------


def test_it_round_trips_the_real_hh_rlhf_file(rita, tmp_path):
    original = [json.loads(line) for line in gzip.open(HH_TEST, "rt", encoding="utf-8")]
    assert len(original) == 2312
    started = time.monotonic()
    dataset_import = imports.dataset_import_create(path=HH_TEST, format="hh-rlhf", created_by=rita)
    import_s = time.monotonic() - started
    assert import_s < 30
    counts = dataset_import.counts
    assert counts["judgements"] == counts["conversations"] == counts["lines"] == 2312
    # The odd rows of the published file are kept, counted, and still round-trip exactly.
    assert counts["contexts_differ"] == 5 and counts["merged_repeated_speaker"] == 4
    campaign = dataset_import.campaign
    assert (campaign.is_active, campaign.judgement_type, campaign.k, campaign.mode) == (
        False,
        "pairwise",
        2,
        "helpful",
    )
    assert campaign.lm_version is None and campaign.prompt is None
    assert Judgement.objects.filter(origin="imported", contractor=None).count() == 2312

    started = time.monotonic()
    snapshot = snapshots.snapshot_create(filter={"sources": ["imported"]}, created_by=rita)
    snapshot_s = time.monotonic() - started
    assert snapshot.counts["judgements"] == snapshot.counts["pairs"] == 2312
    started = time.monotonic()
    out = tmp_path / "hh.jsonl"
    written = exports.export_write(snapshot=snapshot, fmt="hh-rlhf", file_format="jsonl", path=out)
    export_s = time.monotonic() - started
    exported = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert written == len(exported) == 2312
    # The file has no duplicate pairs, so multiset and set comparisons agree; compare multisets.
    as_pairs = Counter((row["chosen"], row["rejected"]) for row in original)
    assert len(as_pairs) == 2312
    assert Counter((row["chosen"], row["rejected"]) for row in exported) == as_pairs
    print(f"hh-rlhf: import {import_s:.1f}s, snapshot {snapshot_s:.1f}s, export {export_s:.1f}s")


def test_it_splits_each_pair_into_shared_history_and_two_responses(tmp_path):
    line = json.dumps(
        {
            "chosen": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Rob it?\n\nAssistant: No.",
            "rejected": "\n\nHuman: Hi\n\nAssistant: Hello!\n\nHuman: Rob it?\n\nAssistant: Yes",
        }
    )
    imports.dataset_import_create(
        path=write_lines(tmp_path / "one.jsonl", [line]), format="hh-rlhf", mode="red_team"
    )
    conversation = Conversation.objects.get()
    assert (conversation.source, conversation.status, conversation.contractor) == (
        "imported",
        "ended",
        None,
    )
    first, last = conversation.turns.order_by("index")
    assert (first.human_text, first.status, first.chosen_response.text) == (
        "Hi",
        "judged",
        "Hello!",
    )
    assert list(first.responses.values_list("index", flat=True)) == [0]
    assert not first.judgements.exists()
    chosen, rejected = last.responses.order_by("index")
    assert (last.human_text, chosen.text, rejected.text) == ("Rob it?", "No.", "Yes")
    judgement = last.judgements.get()
    assert judgement.ranking == judgement.submitted_ranking == [chosen.pk, rejected.pk]
    assert (judgement.origin, judgement.scale, judgement.strength) == ("imported", None, None)
    assert last.chosen_response_id == chosen.pk
    assert conversation.campaign.mode == "red_team"


def test_it_counts_rows_it_cannot_split_instead_of_failing(tmp_path):
    path = write_lines(
        tmp_path / "odd.jsonl",
        [
            hh_line("Hi", "Hello", "Go away"),
            json.dumps({"chosen": "Assistant: no human", "rejected": "Assistant: none"}),
            "",
        ],
    )
    dataset_import = imports.dataset_import_create(path=path, format="hh-rlhf")
    assert dataset_import.counts["judgements"] == 1
    assert dataset_import.counts["skipped_not_starting_with_human"] == 1
    assert dataset_import.counts["blank_lines"] == 1


# --- All-or-nothing and idempotent ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ('{"chosen": "\\n\\nHuman: a\\n\\nAssistant: b", ', "line 3: not JSON"),
        (json.dumps({"chosen": "\n\nHuman: a\n\nAssistant: b"}), 'line 3: missing "rejected"'),
        (json.dumps({"chosen": 1, "rejected": "x"}), 'line 3: "chosen" is not a string'),
    ],
)
def test_a_malformed_line_is_named_and_nothing_is_imported(tmp_path, broken, message):
    lines = [hh_line(f"question {i}", "good", "bad") for i in range(5)]
    lines[2] = broken
    before = row_counts()
    with pytest.raises(ImportFormatError, match=message) as raised:
        imports.dataset_import_create(
            path=write_lines(tmp_path / "bad.jsonl", lines), format="hh-rlhf"
        )
    assert raised.value.line == 3
    assert row_counts() == before


def test_the_command_reports_the_bad_line_as_a_command_error(tmp_path):
    lines = [hh_line("a", "b", "c"), "not json at all"]
    before = row_counts()
    with pytest.raises(CommandError, match="line 2: not JSON"):
        call_command(
            "import_dataset",
            "--format",
            "hh-rlhf",
            "--file",
            str(write_lines(tmp_path / "x", lines)),
        )
    assert row_counts() == before


def test_importing_the_same_file_twice_returns_the_first_import(tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [hh_line(str(i), "y", "n") for i in range(3)])
    first = imports.dataset_import_create(path=path, format="hh-rlhf")
    before = row_counts()
    again = imports.dataset_import_create(path=path, format="hh-rlhf")
    assert again.pk == first.pk and row_counts() == before
    copy = tmp_path / "renamed.jsonl"
    copy.write_bytes(path.read_bytes())
    assert imports.dataset_import_create(path=copy, format="hh-rlhf").pk == first.pk


def test_it_imports_gzip_by_content_not_by_name(tmp_path):
    path = tmp_path / "pairs.data"
    path.write_bytes(gzip.compress((hh_line("a", "b", "c") + "\n").encode()))
    assert imports.dataset_import_create(path=path, format="hh-rlhf").counts["judgements"] == 1


# --- Open-Assistant ------------------------------------------------------------------------------


def ranked_groups_in_file(path: Path) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    """An independent reading: (path texts root..parent, ranked reply texts best first)."""
    groups = []

    def walk(message, path):
        path = (*path, message["text"])
        ranked = [
            r
            for r in message.get("replies", [])
            if r["role"] == "assistant" and r.get("rank") is not None
        ]
        if len(ranked) >= 2:
            best_first = sorted(ranked, key=lambda r: r["rank"])[:8]
            groups.append((path, tuple(r["text"] for r in best_first)))
        for reply in message.get("replies", []):
            walk(reply, path)

    for line in path.read_text(encoding="utf-8").splitlines():
        walk(json.loads(line)["prompt"], ())
    return groups


@pytest.mark.shared_data
def test_the_open_assistant_sample_gives_its_ranked_groups_as_rankings():
    expected = ranked_groups_in_file(OASST)
    assert len(expected) == 212  # as the data README says
    dataset_import = imports.dataset_import_create(path=OASST, format="oasst")
    assert dataset_import.counts["judgements"] == 212
    assert dataset_import.counts["lines"] == 100
    assert dataset_import.counts["group_truncated_to_8"] == 1  # one group ranks 9 replies
    assert dataset_import.campaign.judgement_type == "ranking" and dataset_import.campaign.k == 8
    found = []
    for judgement in Judgement.objects.filter(turn__conversation__dataset_import=dataset_import):
        turn = judgement.turn
        text = dict(turn.responses.values_list("pk", "text"))
        history = []
        for earlier in turn.conversation.turns.filter(index__lt=turn.index).order_by("index"):
            history += [earlier.human_text, earlier.chosen_response.text]
        found.append(((*history, turn.human_text), tuple(text[pk] for pk in judgement.ranking)))
    assert Counter(found) == Counter(expected)


# --- TRL preference ------------------------------------------------------------------------------


def test_it_imports_trl_conversational_and_standard_rows(tmp_path):
    rows = [
        {
            "prompt": [
                {"role": "user", "content": "Hi"},
                {"role": "assistant", "content": "Hello"},
                {"role": "user", "content": "Sky colour?"},
            ],
            "chosen": [{"role": "assistant", "content": "Blue."}],
            "rejected": [{"role": "assistant", "content": "Green."}],
        },
        {"prompt": "2+2?", "chosen": "4", "rejected": "5"},
        {
            "prompt": [{"role": "system", "content": "Be nice"}, {"role": "user", "content": "x"}],
            "chosen": [{"role": "assistant", "content": "a"}],
            "rejected": [{"role": "assistant", "content": "b"}],
        },
    ]
    path = write_lines(tmp_path / "trl.jsonl", [json.dumps(r) for r in rows])
    dataset_import = imports.dataset_import_create(path=path, format="trl")
    assert dataset_import.counts["judgements"] == 2
    assert dataset_import.counts["skipped_system_message"] == 1
    snapshot = snapshots.snapshot_create(filter={"imports": [dataset_import.pk]})
    exported = list(exports.export_rows(snapshot, "trl"))
    # Every row also says whether it is a tie or both responses are bad (never, when imported).
    assert sorted(exported, key=lambda r: len(r["prompt"]), reverse=True) == [
        {**rows[0], "tie": False, "both_bad": False},
        {
            "prompt": [{"role": "user", "content": "2+2?"}],
            "chosen": [{"role": "assistant", "content": "4"}],
            "rejected": [{"role": "assistant", "content": "5"}],
            "tie": False,
            "both_bad": False,
        },
    ]


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
        Judgement.objects.create(
            turn=turn, contractor=who, origin="review", ranking=ranking, submitted_ranking=ranking
        )
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
