"""The quality page at scale: live numbers while judgements are few, else the summaries the
periodic task stores (a row read, a fixed handful of queries), with their time and how many
judgements came since."""

import pytest
from django.urls import reverse

from collection import quality
from collection.models import QualitySummary
from collection.quality_summaries import quality_summaries_refresh
from collection.tasks import refresh_quality
from config.celery import app
from tests.collection.dataset_builders import collected

pytestmark = pytest.mark.django_db


@pytest.fixture
def judged(pairwise, alice, bob):
    """alice's 3 turns, bob reviewing the last one (so the two overlap once)."""
    turns = [(f"q{i}", ["a", "b"], [0, 1], 2) for i in range(3)]
    collected(pairwise, alice, turns, judges=[(bob, [1, 0])])
    return pairwise


def _page(client, campaign=None):
    query = f"?campaign={campaign.pk}" if campaign else ""
    response = client.get(reverse("collection:quality") + query)
    assert response.status_code == 200
    return response.content.decode()


def test_few_judgements_are_counted_live(client, rita, judged):
    client.force_login(rita)
    page = _page(client)
    assert 'id="quality-as-of"' not in page and "alice" in page and "bob" in page
    assert not QualitySummary.objects.exists()


def test_beyond_the_live_limit_the_page_reads_the_task_s_summaries(
    client, rita, alice, judged, settings, django_assert_max_num_queries
):
    settings.COLLECTION_QUALITY_LIVE_MAX_JUDGEMENTS = 2  # there are 4
    client.force_login(rita)
    page = _page(client)
    assert "the periodic task <code>collection.refresh_quality</code> computes" in page
    assert "No judgements yet" not in page and "alice" not in page

    assert refresh_quality() == {"scopes": 2, "seconds": pytest.approx(0, abs=5)}
    everywhere = QualitySummary.objects.get(scope="all")
    assert everywhere.contractors == quality.contractor_stats()
    in_campaign = QualitySummary.objects.get(scope=f"campaign:{judged.pk}")
    assert in_campaign.agreement == quality.campaign_agreement(campaign=judged)
    with django_assert_max_num_queries(10):  # session, user, campaigns, the summary, newer
        page = _page(client, judged)
    assert "As of" in page and "since" not in page
    assert "alice" in page and "bob" in page and "Agreement in pairs" in page

    collected(judged, alice, [("one more", ["a", "b"], [1, 0], 1)])
    page = _page(client)
    assert "1 judgement since, counted at its next run" in page
    quality_summaries_refresh()
    assert "since" not in _page(client)
    assert QualitySummary.objects.count() == 2  # replaced, not added


def test_the_refresh_runs_every_5_minutes_from_beat():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="collection.refresh_quality")
    assert task.enabled and (task.interval.every, task.interval.period) == (5, "minutes")
    assert task.queue == "default" and task.task == refresh_quality.name in app.tasks
