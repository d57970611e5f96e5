"""Snapshots above a size as jobs: asked for in the page or the API, made by a worker (a
SnapshotJob with its lease and progress), the snapshot offered when ready; a small one is still
made in the request; contractors can neither start nor see one; a failed job says why; a job
ends in the transaction that stores its snapshot, so a run again never makes a second one."""

import pytest
from django.test import Client
from django.urls import reverse

from assistant import jobs
from collection import snapshot_jobs, snapshots
from collection.models import DatasetSnapshot, Judgement, SnapshotJob
from collection.tasks import run_snapshot
from config.tasks import sweep_stranded_work
from tests.collection.dataset_builders import collected
from tests.waiting import job_when_finished, strand


def _collect(campaign, contractor, n=30):
    collected(
        campaign, contractor, [(f"q{i}", ["a", "b"], [i % 2, 1 - i % 2], 2) for i in range(n)]
    )


def _ask(client, **fields):
    return client.post(reverse("collection:datasets"), {"name": "everything", **fields})


@pytest.fixture
def inline_max(settings):
    settings.COLLECTION_SNAPSHOT_INLINE_MAX = 10
    return 10


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_big_snapshot_is_a_job_asked_for_once_and_made_by_the_task(
    client, alice, rita, pairwise, inline_max
):
    _collect(pairwise, alice, n=30)
    client.force_login(rita)
    response = _ask(client)
    job = SnapshotJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("collection:snapshot_job", args=[job.pk])
    assert (job.status, job.judgements, job.name, job.launched_by) == (
        "queued",
        30,
        "everything",
        rita,
    )
    assert not DatasetSnapshot.objects.exists()  # the request made none
    page = client.get(response["Location"]).content.decode()
    assert "Waiting for a worker" in page and 'hx-trigger="every 2s"' in page
    # Asked again while queued: the same job, not a second one.
    assert _ask(client)["Location"] == response["Location"] and SnapshotJob.objects.count() == 1

    assert run_snapshot(job.pk) == "succeeded"
    assert run_snapshot(job.pk) == "skipped: not queued"  # a second delivery does nothing
    job.refresh_from_db()
    made = DatasetSnapshot.objects.get()
    assert (job.snapshot, made.name, made.created_by, made.counts["judgements"]) == (
        made,
        "everything",
        rita,
        30,
    )
    assert job.progress == {"stage": "done", "done": 30, "total": 30}
    # The same snapshot a request would have made: same filter, counts and content hash.
    inline = snapshots.snapshot_create(filter={}, name="inline")
    assert (inline.content_hash, inline.counts) == (made.content_hash, made.counts)
    assert made.filter == job.filter  # cleaning the job's clean filter changed nothing
    page = client.get(reverse("collection:snapshot_job", args=[job.pk])).content.decode()
    assert f"snapshot #{made.pk}" in page and "hx-trigger" not in page
    datasets = client.get(reverse("collection:datasets")).content.decode()
    assert 'id="snapshot-jobs"' in datasets and f'id="snapshot-{made.pk}"' in datasets
    # Finished: asking again makes a new snapshot of the data as it is then.
    _ask(client)
    assert SnapshotJob.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_snapshot_within_the_size_is_made_in_the_request(client, alice, rita, pairwise):
    _collect(pairwise, alice, n=10)
    client.force_login(rita)
    response = _ask(client)
    assert response.status_code == 302 and response["Location"] == reverse("collection:datasets")
    assert DatasetSnapshot.objects.get().counts["judgements"] == 10
    assert not SnapshotJob.objects.exists()
    # A filter matching nothing is the form's error at once, whatever the size limit.
    refused = _ask(client, date_from="2999-01-01")
    assert refused.status_code == 400 and "no judgements match" in refused.content.decode()
    assert not SnapshotJob.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_progress_is_written_through_the_jobs_heartbeat(
    alice, rita, pairwise, inline_max, monkeypatch
):
    _collect(pairwise, alice, n=12)
    monkeypatch.setattr(snapshot_jobs, "HEARTBEAT_EVERY_S", 0)
    beats = []
    real = jobs.job_heartbeat

    def recording(model, job, **fields):
        held = real(model, job, **fields)
        beats.append((dict(fields["progress"]), SnapshotJob.objects.get(pk=job.pk).progress))
        return held

    monkeypatch.setattr(jobs, "job_heartbeat", recording)
    _, job, new = snapshot_jobs.snapshot_request(filter={}, user=rita)
    assert new and run_snapshot(job.pk) == "succeeded"
    assert [sent for sent, _ in beats] == [
        {"stage": "selecting", "done": 0, "total": 12},
        {"stage": "hashing", "done": 0, "total": 12},
    ]
    assert all(sent == seen for sent, seen in beats)  # on the job's row at once


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_worker_that_lost_its_lease_stores_no_snapshot(alice, pairwise, inline_max, monkeypatch):
    _collect(pairwise, alice, n=12)
    real = snapshot_jobs.snapshot_create

    def taken_over_meanwhile(**options):  # another worker takes the job while this one works
        SnapshotJob.objects.update(lease_owner="someone-else")
        return real(**{**options, "progress": None})

    monkeypatch.setattr(snapshot_jobs, "snapshot_create", taken_over_meanwhile)
    _, job, _ = snapshot_jobs.snapshot_request(filter={})
    assert run_snapshot(job.pk) == "skipped: lost its lease"
    job.refresh_from_db()
    assert (job.status, job.lease_owner, job.snapshot) == ("running", "someone-else", None)
    assert not DatasetSnapshot.objects.exists()  # rolled back with the job's end

    # And a lease lost at a heartbeat stops it before it stores anything.
    monkeypatch.setattr(snapshot_jobs, "snapshot_create", real)
    monkeypatch.setattr(snapshot_jobs, "HEARTBEAT_EVERY_S", 0)
    _, second, _ = snapshot_jobs.snapshot_request(filter={}, name="second")
    real_beat = jobs.job_heartbeat

    def taken_over(model, job, **fields):
        SnapshotJob.objects.filter(pk=job.pk).update(lease_owner="someone-else")
        return real_beat(model, job, **fields)

    monkeypatch.setattr(jobs, "job_heartbeat", taken_over)
    assert run_snapshot(second.pk) == "skipped: lost its lease"
    assert not DatasetSnapshot.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_failed_job_says_why_on_its_page_and_the_datasets_page(
    client, alice, rita, pairwise, inline_max, settings, tmp_path
):
    _collect(pairwise, alice, n=12)
    client.force_login(rita)
    _ask(client)
    job = SnapshotJob.objects.get()
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the media folder should be")
    settings.MEDIA_ROOT = blocker
    assert run_snapshot(job.pk) == "failed"
    job.refresh_from_db()
    assert "could not be written under MEDIA_ROOT" in job.error and "Ask an admin" in job.error
    assert not DatasetSnapshot.objects.exists()
    page = client.get(reverse("collection:snapshot_job", args=[job.pk])).content.decode()
    assert "The snapshot was not made: The snapshot&#x27;s file could not be written" in page
    datasets = client.get(reverse("collection:datasets")).content.decode()
    assert 'id="snapshot-jobs"' in datasets and "could not be written" in datasets

    # The judgements it selected are gone before a worker takes it: the filter's own error.
    settings.MEDIA_ROOT = tmp_path / "media"
    _ask(client, name="gone")
    gone = SnapshotJob.objects.get(name="gone")
    Judgement.objects.all().delete()
    assert run_snapshot(gone.pk) == "failed"
    gone.refresh_from_db()
    assert gone.error == "no judgements match this filter"


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_an_unexpected_error_fails_the_job_with_a_one_line_reason(
    alice, pairwise, inline_max, monkeypatch
):
    _collect(pairwise, alice, n=12)

    def broken(**options):
        raise ValueError("the judgement table\nis unreadable")

    monkeypatch.setattr(snapshot_jobs, "snapshot_create", broken)
    _, job, _ = snapshot_jobs.snapshot_request(filter={})
    assert run_snapshot(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == "The snapshot failed: ValueError: the judgement table is unreadable"


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_contractors_can_neither_start_nor_see_a_snapshot_job(
    client, alice, rita, pairwise, inline_max
):
    _collect(pairwise, alice, n=12)
    _, job, _ = snapshot_jobs.snapshot_request(filter={}, user=rita)
    client.force_login(alice)
    assert _ask(client).status_code == 403
    assert client.get(reverse("collection:snapshot_job", args=[job.pk])).status_code == 403
    assert client.get("/api/snapshot-jobs/").status_code == 403
    assert client.get(f"/api/snapshot-jobs/{job.pk}/").status_code == 403
    created = client.post("/api/snapshots/", {"filter": {}}, content_type="application/json")
    assert created.status_code == 403
    assert SnapshotJob.objects.count() == 1
    client.logout()
    assert client.get(reverse("collection:snapshot_job", args=[job.pk])).status_code == 302


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_the_api_answers_202_with_the_job_and_201_below_the_size(
    client, alice, rita, pairwise, inline_max, settings
):
    _collect(pairwise, alice, n=12)
    client.force_login(rita)
    body = {"name": "api", "filter": {"campaigns": [pairwise.pk]}}
    first = client.post("/api/snapshots/", body, content_type="application/json")
    assert first.status_code == 202, first.content
    job = first.json()
    assert (job["status"], job["judgements"], job["snapshot"]) == ("queued", 12, None)
    assert first["Location"].endswith(f"/api/snapshot-jobs/{job['id']}/")
    again = client.post("/api/snapshots/", body, content_type="application/json")
    assert again.status_code == 202 and again.json()["id"] == job["id"]
    assert run_snapshot(job["id"]) == "succeeded"
    shown = client.get(f"/api/snapshot-jobs/{job['id']}/").json()
    made = DatasetSnapshot.objects.get()
    assert (shown["status"], shown["snapshot"]) == ("succeeded", made.pk)
    assert client.get(f"/api/snapshots/{made.pk}/").json()["counts"]["judgements"] == 12
    settings.COLLECTION_SNAPSHOT_INLINE_MAX = 12
    small = client.post("/api/snapshots/", body, content_type="application/json")
    assert small.status_code == 201 and small.json()["counts"]["judgements"] == 12


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_the_sweeper_sends_stranded_snapshot_jobs_again(alice, pairwise, inline_max):
    _collect(pairwise, alice, n=12)
    _, queued, _ = snapshot_jobs.snapshot_request(filter={}, name="queued")
    _, running, _ = snapshot_jobs.snapshot_request(filter={}, name="running")
    strand(SnapshotJob, queued=queued, running=running)
    swept = sweep_stranded_work()["snapshot_jobs"]
    assert swept["requeued"] == [running.pk] and swept["enqueued"] == [queued.pk]
    assert run_snapshot(running.pk) == "succeeded"
    assert DatasetSnapshot.objects.get().name == "running"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_makes_a_big_snapshot_the_page_then_shows(
    celery_worker_process, alice, rita, pairwise, inline_max
):
    # The limit is the requesting process's setting; the worker makes whatever it is given.
    _collect(pairwise, alice, n=20)
    client = Client()
    client.force_login(rita)
    response = _ask(client)
    job = SnapshotJob.objects.get()
    assert response.status_code == 302 and job.celery_task_id  # sent after commit
    job_when_finished(job)
    assert job.status == "succeeded", (job.status, job.error, celery_worker_process.output())
    assert "collection.run_snapshot" in celery_worker_process.output()
    page = client.get(reverse("collection:snapshot_job", args=[job.pk])).content.decode()
    assert f"snapshot #{job.snapshot_id}" in page
    assert DatasetSnapshot.objects.get().counts["judgements"] == 20
