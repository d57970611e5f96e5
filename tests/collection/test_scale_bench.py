"""bench/scale.py's builder at a tiny size (200 judgements), so the bench cannot rot: the COPY
load gives the counts it promises, rows the app accepts (a snapshot and an export of them, the
review queue, model validation) and sequences past its ids. PostgreSQL only (COPY)."""

import importlib.util
import json
import sys
from pathlib import Path

import pytest
from django.db import connection

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def scale_build():
    # bench/ is a folder of scripts, not a package: load the file as a module.
    spec = importlib.util.spec_from_file_location(
        "bench_scale_build", ROOT / "bench" / "scale_build.py"
    )
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up there
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name, None)


@pytest.fixture
def postgres_only(transactional_db):
    if connection.vendor != "postgresql":
        pytest.skip("the builder loads with PostgreSQL COPY")


def test_the_builder_loads_valid_rows_the_app_can_snapshot_and_export(
    scale_build, postgres_only, settings, tmp_path
):
    from django.contrib.auth import get_user_model

    from collection import selectors
    from collection.exports import export_write
    from collection.judgements import judgement_submit
    from collection.models import Conversation, Judgement, Response, Turn
    from collection.snapshots import snapshot_create

    settings.MEDIA_ROOT = tmp_path / "media"
    settings.VAR_DIR = tmp_path
    size = scale_build.Size(judgements=200, contractors=6, campaigns=4)
    figures = scale_build.build(size=size, password="not-used-here")

    assert figures["counts"] == figures["expected"] == size.expected()
    assert size.expected()["collection_judgement"] == 200
    assert set(figures["integrity"].values()) == {0}, figures["integrity"]
    assert scale_build.holds(size)
    assert Judgement.objects.filter(origin="review").count() == size.reviews == 8
    for judgement in Judgement.objects.select_related("turn")[:50]:
        judgement.full_clean()
        responses = list(judgement.turn.responses.order_by("index").values_list("pk", flat=True))
        assert sorted(judgement.ranking) == sorted(responses)
        assert judgement.tie or (judgement.strength == abs(judgement.scale - 4.5) + 0.5)
    for turn in Turn.objects.all()[:20]:
        turn.full_clean()
    Conversation.objects.first().full_clean()
    # {} as the app's own bench seed (bench/web_server.py) and imports leave it: no sampling.
    Response.objects.first().full_clean(exclude=["sampling_params"])

    snapshot = snapshot_create(filter={}, name="everything")
    assert snapshot.counts["judgements"] == 200
    assert snapshot.counts["turns"] == size.turns
    out = tmp_path / "trl.jsonl"
    assert export_write(snapshot=snapshot, fmt="trl", file_format="jsonl", path=out) == 200
    first = json.loads(out.read_text().splitlines()[0])
    assert first["prompt"] and first["chosen"] and first["rejected"]

    # The review queue offers a turn still wanting a second judgement; judging it through the
    # service works, with the ids the sequences hand out after the loaded ones.
    contractor = get_user_model().objects.get(username="sc-c-0000")
    turn = selectors.review_next(contractor=contractor)
    assert turn is not None and turn.needs_review
    judgement = judgement_submit(turn=turn, contractor=contractor, scale=2)
    assert judgement.pk == 201
    turn.refresh_from_db()
    assert turn.judgement_count == 2 and not turn.needs_review
