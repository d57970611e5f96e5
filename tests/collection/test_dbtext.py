"""Text the database refuses (NUL, unpaired surrogates) is stored readable on every write path.

In CI these run on PostgreSQL, which refuses a NUL in text and JSON; on SQLite the surrogate
cases still bite (UTF-8 cannot encode them).
"""

import gzip
import json
from collections import Counter

import pytest
from django.db import connection
from django.urls import reverse

from collection import imports
from collection.conversations import conversation_start
from collection.models import Conversation, Response, Turn
from config import dbtext
from evals.models import EvalRun

pytestmark = pytest.mark.django_db

NUL = "\x00"
LONE = "\ud800"
R = dbtext.REPLACEMENT


def json_kept(text: str) -> str:
    """What a JSON column gives back: PostgreSQL's jsonb gets the cleaned value; SQLite stores
    JSON as escaped ASCII text, which holds any character, so the value comes back as it was."""
    return dbtext.clean_text(text, Counter()) if connection.vendor == "postgresql" else text


def test_clean_text_replaces_and_counts_each_kind():
    counts = Counter()
    assert dbtext.clean_text(f"a{NUL}b{LONE}c{NUL}é", counts) == f"a{R}b{R}c{R}é"
    assert counts == {"nul": 2, "surrogate": 1}
    assert dbtext.clean_text("plain ascii", counts) == "plain ascii"
    assert dbtext.clean_parameters([1, None, b"\x00", ("x\x00",)], counts=counts) == [
        1,
        None,
        b"\x00",  # bytes are bytes: a BinaryField may hold NUL
        (f"x{R}",),
    ]


def test_a_contractor_message_with_a_nul_byte_is_kept(client, alice, make_campaign):
    conversation = conversation_start(campaign=make_campaign(), contractor=alice)
    client.force_login(alice)
    before = dbtext.REPLACED["nul"]
    response = client.post(
        reverse("collection:message", args=[conversation.pk]), {"text": f"Hi{NUL} there"}
    )
    assert response.status_code == 302
    assert Turn.objects.get(conversation=conversation).human_text == f"Hi{R} there"
    assert dbtext.REPLACED["nul"] == before + 1
    page = client.get(reverse("collection:conversation", args=[conversation.pk]))
    assert page.status_code == 200 and f"Hi{R} there" in page.content.decode()


def test_a_model_response_with_a_nul_byte_is_stored(alice, make_campaign, tiny_lm_version):
    conversation = conversation_start(campaign=make_campaign(), contractor=alice)
    turn = Turn.objects.create(conversation=conversation, index=0, human_text="Hello")
    # The path turn_generate takes: bulk_create of the sampled texts, then the turn's update.
    Response.objects.bulk_create(
        [
            Response(turn=turn, index=0, text=f"one{NUL}", model_version=tiny_lm_version),
            Response(turn=turn, index=1, text=f"two{LONE}", model_version=tiny_lm_version),
        ]
    )
    Turn.objects.filter(pk=turn.pk).update(partial_texts=[f"one{NUL}", f"two{LONE}"])
    assert list(turn.responses.order_by("index").values_list("text", flat=True)) == [
        f"one{R}",
        f"two{R}",
    ]
    assert Turn.objects.get(pk=turn.pk).partial_texts == [
        json_kept(f"one{NUL}"),
        json_kept(f"two{LONE}"),
    ]


def test_an_imported_line_with_nul_and_a_lone_surrogate_is_imported(tmp_path):
    record = {
        "chosen": "\n\nHuman: Hello\\u0000?\n\nAssistant: Hi\\ud800 there",
        "rejected": "\n\nHuman: Hello\\u0000?\n\nAssistant: Go away",
    }
    # Written as the JSON escapes a real file would hold (json.dumps would double the \\).
    line = json.dumps(record).replace("\\\\u", "\\u")
    path = tmp_path / "nul.jsonl.gz"
    with gzip.open(path, "wt", encoding="utf-8") as out:
        out.write(line + "\n")
    imported = imports.dataset_import_create(path=path, format="hh-rlhf")
    assert imported.counts["judgements"] == 1
    conversation = Conversation.objects.get(dataset_import=imported)
    turn = conversation.turns.get()
    assert turn.human_text == f"Hello{R}?"
    assert sorted(turn.responses.values_list("text", flat=True)) == ["Go away", f"Hi{R} there"]


def test_an_eval_result_with_a_nul_byte_is_stored(tiny_lm_version):
    run = EvalRun.objects.create(suite="hhh", model_version=tiny_lm_version)
    results = {"items": [{"sample": f"bad{NUL}", f"key{NUL}": [LONE]}], "overall": {"n": 1}}
    EvalRun.objects.filter(pk=run.pk).update(status="succeeded", results=results)
    stored = EvalRun.objects.get(pk=run.pk).results
    assert stored["items"] == [
        {"sample": json_kept(f"bad{NUL}"), json_kept(f"key{NUL}"): [json_kept(LONE)]}
    ]
    run.results = {"again": NUL}
    run.save()
    assert EvalRun.objects.get(pk=run.pk).results == {"again": json_kept(NUL)}
