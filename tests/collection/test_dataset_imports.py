"""Dataset imports: HH-RLHF (the real file round-trips), all-or-nothing and idempotent,
Open-Assistant, TRL preference."""

import gzip
import json
import time
from collections import Counter
from pathlib import Path

import pytest
from django.core.management import CommandError, call_command

from collection import exports, imports, snapshots
from collection.dataset_errors import ImportFormatError
from collection.models import (
    Conversation,
    Judgement,
)
from tests.collection.dataset_builders import hh_line, row_counts, write_lines
from tests.data import HH_TEST, OASST

# Snapshots write their frozen id lists under MEDIA_ROOT: `media_root` keeps them in the
# test's folder (tests/collection/conftest.py).
pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]


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
