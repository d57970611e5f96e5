"""Hostile input (issue 18), written as the attacks: no path a request names is opened by the web
process (snapshot filters, PMP sources), and hostile import files give line-numbered errors."""

from __future__ import annotations

import json
import os
import sys
import time
from contextlib import contextmanager

import pytest
from django.core.management import CommandError, call_command

from collection import imports
from collection.dataset_errors import ImportFormatError
from collection.models import Campaign, DatasetSnapshot, Response
from config import dbtext
from tests.collection.dataset_builders import collected, hh_line, row_counts, write_lines
from tests.data import HHH_DIR

pytestmark = [pytest.mark.django_db, pytest.mark.usefixtures("media_root")]

# Paths an attacker names: one that never ends, one that is secret, one that is missing, a folder,
# and traversals out of the repository.
HOSTILE_PATHS = [
    "/dev/zero",
    "/etc/shadow",
    "/nonexistent/x",
    "/root",
    "../../../../etc/passwd",
    str(HHH_DIR / ".." / ".." / ".." / "README.md"),
]

# --- What the process opens: an audit hook (CPython's own record of every open) -----------------

_opened: list[str] | None = None


def _audit(event: str, args: tuple) -> None:
    if _opened is not None and event == "open" and args and isinstance(args[0], str | bytes):
        _opened.append(os.fsdecode(args[0]))


sys.addaudithook(_audit)  # cannot be removed; it records only inside `opened_paths()`


@contextmanager
def opened_paths():
    """The paths this process opens inside the block."""
    global _opened
    _opened = seen = []
    try:
        yield seen
    finally:
        _opened = None


# --- Snapshot filter: eval prompts by name, never by path ---------------------------------------


def test_a_researcher_cannot_make_the_server_open_a_path(anon_api, rita):
    anon_api.force_authenticate(rita)
    answers = []
    with opened_paths() as opened:
        for path in HOSTILE_PATHS:
            started = time.monotonic()
            response = anon_api.post(
                "/api/snapshots/", {"filter": {"exclude_eval_prompts": path}}, format="json"
            )
            assert time.monotonic() - started < 2, path  # /dev/zero read would never end
            assert response.status_code == 400, (path, response.content[:300])
            answers.append(response.json())
    hostile = set(HOSTILE_PATHS) | {os.path.realpath(p) for p in HOSTILE_PATHS}
    touched = set(opened) | {os.path.realpath(p) for p in opened}
    assert not hostile & touched
    # One answer whatever the path: no way to tell which exist, which are readable.
    assert all(answer == answers[0] for answer in answers)
    message = "".join(answers[0]["filter"])  # a string, or a list of one
    assert message.startswith("exclude_eval_prompts must be the name of a shipped eval set")
    assert "hhh:harmless" in message and "truthfulqa" in message
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.parametrize(
    "value",
    [
        ["x" * 10_001],  # one prompt too long
        ["a prompt"] * 10_001,  # too many prompts
        {"path": "/etc/passwd"},
        7,
        ["fine", 7],
    ],
)
def test_inline_prompt_lists_are_size_limited(anon_api, rita, value):
    anon_api.force_authenticate(rita)
    response = anon_api.post(
        "/api/snapshots/", {"filter": {"exclude_eval_prompts": value}}, format="json"
    )
    assert response.status_code == 400
    assert "exclude_eval_prompts must be the name" in str(response.json())


@pytest.mark.parametrize(
    ("name", "excluded"),
    [("hhh", 2), ("hhh:harmless", 1), ("hhh:helpful", 1), ("hhh:honest", 0), ("truthfulqa", 1)],
)
def test_the_shipped_eval_sets_are_excluded_by_name(
    anon_api, rita, alice, name, excluded, settings
):
    harmless = json.loads((HHH_DIR / "harmless" / "task.json").read_text())["examples"][0]
    helpful = json.loads((HHH_DIR / "helpful" / "task.json").read_text())["examples"][0]
    truthful = json.loads(settings.ALIGNLAB_TRUTHFULQA_FILE.read_text())[0]["question"]
    campaign = Campaign.objects.create(name="pairs", k=2)
    for human in (harmless["input"], helpful["input"], "unrelated", truthful):
        collected(campaign, alice, [(human, ["a", "b"], [0, 1], 1)])
    anon_api.force_authenticate(rita)
    made = anon_api.post(
        "/api/snapshots/", {"filter": {"exclude_eval_prompts": name}}, format="json"
    )
    assert made.status_code == 201, made.json()
    assert made.json()["counts"]["excluded_eval_prompts"] == excluded
    assert made.json()["counts"]["judgements"] == 4 - excluded


# --- PMP sources: inside the data roots only -----------------------------------------------------


def pmp_launch(anon_api, sources):
    return anon_api.post(
        "/api/training-runs/", {"kind": "pmp", "pmp_sources": sources}, format="json"
    )


def test_pmp_sources_outside_the_data_roots_are_refused(
    anon_api, adam, tmp_path, settings, django_capture_on_commit_callbacks
):
    root = tmp_path / "data"
    (root / "reddit").mkdir(parents=True)
    comments = root / "reddit" / "comments.jsonl"
    comments.write_text("")
    (root / "escape").symlink_to("/etc")
    settings.ALIGNLAB_DATA_ROOTS = [root]
    anon_api.force_authenticate(adam)
    answers = []
    for path in [
        "../../../../etc/passwd",
        str(root / ".." / ".." / "secret"),
        "/etc/passwd",
        "/nonexistent/x",
        str(root / "escape" / "passwd"),  # a symlink inside the root that leads out of it
        "/" + "a" * 299,
        "nul\x00byte",
    ]:
        response = pmp_launch(anon_api, [{"format": "reddit", "path": path}])
        assert response.status_code == 400, (path, response.content[:300])
        [message] = response.json()["pmp_sources"]
        assert message.startswith(f"source 0: no file or folder {path!r} inside the data roots")
        answers.append(message.replace(repr(path), "PATH"))
    assert len(set(answers)) == 1  # existing or not, outside is outside
    for bad in ([{"format": "csv", "path": str(comments)}], [str(comments)], "x", [{"path": 1}]):
        response = pmp_launch(anon_api, bad)
        assert response.status_code == 400 and "pmp_sources" in response.json(), bad
    with django_capture_on_commit_callbacks(execute=False):  # queued, not trained
        made = pmp_launch(
            anon_api, [{"format": "reddit", "path": str(root / "x" / ".." / "reddit")}]
        )
    assert made.status_code == 201, made.json()
    stored = [{"format": "reddit", "path": str((root / "reddit").resolve())}]
    assert made.json()["pmp_sources"] == stored


# --- Importers: hostile files give line-numbered errors or import cleanly ------------------------


def test_nul_and_lone_surrogates_import_as_replacement_characters(tmp_path):
    lines = [
        hh_line("fine", "yes", "no"),
        hh_line("a NUL\u0000 here", "good\u0000", "bad"),  # json.dumps writes "\u0000"
        hh_line("a lone \ud800 surrogate", "good", "bad\udfff"),
    ]
    assert "\\u0000" in lines[1] and "\\ud800" in lines[2]
    before = sum(dbtext.REPLACED.values())
    dataset_import = imports.dataset_import_create(
        path=write_lines(tmp_path / "odd.jsonl", lines), format="hh-rlhf"
    )
    assert dataset_import.counts["judgements"] == 3
    texts = set(Response.objects.values_list("text", flat=True))
    assert {"good\ufffd", "bad\ufffd"} <= texts
    assert sum(dbtext.REPLACED.values()) - before >= 4


@pytest.mark.parametrize(
    ("broken", "message"),
    [
        ("[" * 200_000, "line 2: JSON nested too deeply"),
        ('{"chosen": ' + "[" * 200_000, "line 2: JSON nested too deeply"),
        ('{"chosen": ' + "1" * 5000 + "}", "line 2: not JSON"),  # past Python's int digit limit
    ],
)
def test_a_hostile_line_is_a_line_numbered_error(tmp_path, broken, message):
    path = write_lines(tmp_path / "hostile.jsonl", ["", broken])  # line 1 blank: any format
    before = row_counts()
    for fmt in ("hh-rlhf", "trl", "oasst"):
        with pytest.raises(ImportFormatError, match=message) as raised:
            imports.dataset_import_create(path=path, format=fmt)
        assert raised.value.line == 2
    with pytest.raises(CommandError, match=message):
        call_command("import_dataset", "--format", "hh-rlhf", "--file", str(path))
    assert row_counts() == before


def test_an_open_assistant_reply_without_text_is_named(tmp_path):
    tree = {
        "prompt": {
            "role": "prompter",
            "text": "Hi",
            "replies": [{"role": "assistant", "rank": 0}, {"role": "assistant", "rank": 1}],
        }
    }
    path = write_lines(tmp_path / "tree.jsonl", [json.dumps(tree)])
    with pytest.raises(ImportFormatError, match='line 1: a message lacks "text"'):
        imports.dataset_import_create(path=path, format="oasst")


def test_a_corrupt_gzip_is_an_import_error(tmp_path):
    import gzip

    whole = gzip.compress(("\n".join(hh_line(str(i), "y", "n") for i in range(50))).encode())
    path = tmp_path / "corrupt.jsonl.gz"
    path.write_bytes(whole[:20] + bytes(b ^ 0x55 for b in whole[20:-8]) + whole[-8:])
    with pytest.raises(ImportFormatError):  # "cannot read the file: …", not zlib.error
        imports.dataset_import_create(path=path, format="hh-rlhf")
