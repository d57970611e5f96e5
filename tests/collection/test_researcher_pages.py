"""Researchers make snapshots and download exports from the UI; contractors cannot."""

import pytest
from django.urls import reverse

from collection.imports import dataset_import_create
from collection.models import DatasetSnapshot
from tests.training.test_runs import toy_trl_file

pytestmark = pytest.mark.django_db


def test_a_researcher_makes_a_snapshot_and_downloads_it(client, rita, tmp_path):
    imported = dataset_import_create(path=toy_trl_file(tmp_path / "toy.jsonl", n=8), format="trl")
    client.force_login(rita)
    refused = client.post(
        reverse("collection:datasets"), {"name": "x", "filter": '{"campains": []}'}
    )
    assert "campains" in refused.content.decode() and not DatasetSnapshot.objects.exists()
    made = client.post(
        reverse("collection:datasets"), {"name": "toy", "filter": f'{{"imports": [{imported.pk}]}}'}
    )
    assert made.status_code == 302
    snapshot = DatasetSnapshot.objects.get()
    page = client.get(reverse("collection:datasets")).content.decode()
    assert "toy" in page and snapshot.content_hash[:10] in page
    url = reverse("collection:download", args=[snapshot.pk])
    body = b"".join(client.get(url, {"export": "trl"}).streaming_content).decode()
    assert len(body.splitlines()) == 8 and '"prompt": [{"role": "user"' in body
    parquet = b"".join(
        client.get(url, {"export": "ranked", "file_format": "parquet"}).streaming_content
    )
    assert parquet[:4] == b"PAR1"
    assert client.get(url, {"export": "csv"}).status_code == 400


def test_contractors_do_not_see_datasets(client, alice):
    client.force_login(alice)
    assert client.get(reverse("collection:datasets")).status_code == 403
    assert client.get(reverse("collection:download", args=[1])).status_code == 403


def test_the_quality_page_shows_contractor_statistics(client, rita, alice, bob, tmp_path):
    from assistant.services import model_version_register
    from collection.gold import gold_item_create
    from collection.judgements import judgement_submit
    from collection.models import Campaign

    lm = model_version_register(kind="lm", name="tiny", path=str(tmp_path))
    campaign = Campaign.objects.create(name="overlap", lm_version=lm, overlap_target=2)
    gold = gold_item_create(
        campaign=campaign, admin=rita, human_text="2+2?", responses=["4", "5"], best_index=0
    )
    a, b = gold.responses.order_by("index")
    judgement_submit(turn=gold, contractor=alice, ranking=None, scale=1, time_spent_ms=4000)
    judgement_submit(turn=gold, contractor=bob, scale=8, time_spent_ms=2000)
    client.force_login(rita)
    page = client.get(reverse("collection:quality"), {"campaign": campaign.pk}).content.decode()
    assert "alice" in page and "1.00 (1/1)" in page and "0.00 (0/1)" in page
    assert "Agreement in overlap" in page
    client.force_login(alice)
    assert client.get(reverse("collection:quality")).status_code == 403
