"""Exports as jobs: asked for in the page or the API, written by a worker (an ExportJob with its
lease and progress), the file offered when ready; contractors can neither start nor download
one; a failed job says why; big snapshots are never streamed by a request."""

import json

import pytest
from django.test import Client
from django.urls import reverse

from assistant import jobs
from collection import export_jobs, exports, snapshots
from collection.models import ExportJob
from collection.tasks import run_export
from config.tasks import sweep_stranded_work
from tests.collection.dataset_builders import collected
from tests.waiting import job_when_finished, strand


@pytest.fixture
def exports_dir(settings, tmp_path):
    settings.COLLECTION_EXPORTS_DIR = tmp_path / "exports"
    return settings.COLLECTION_EXPORTS_DIR


def _snapshot(campaign, contractor, n=30):
    collected(
        campaign, contractor, [(f"q{i}", ["a", "b"], [i % 2, 1 - i % 2], 2) for i in range(n)]
    )
    return snapshots.snapshot_create(filter={}, name="thirty")


def _ask(client, snapshot, **fields):
    data = {"export_format": "trl", "file_format": "jsonl", "split": "all", **fields}
    return client.post(reverse("collection:export_request", args=[snapshot.pk]), data)


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_job_is_asked_for_once_written_by_the_task_and_its_file_offered(
    client, alice, rita, pairwise, exports_dir
):
    snapshot = _snapshot(pairwise, alice)
    client.force_login(rita)
    response = _ask(client, snapshot)
    job = ExportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("collection:export_job", args=[job.pk])
    assert (job.status, job.export_format, job.launched_by) == ("queued", "trl", rita)
    page = client.get(response["Location"]).content.decode()
    assert "Waiting for a worker" in page and 'hx-trigger="every 2s"' in page
    assert client.get(reverse("collection:export_file", args=[job.pk])).status_code == 404
    # Asked again while queued: the same job, not a second one.
    again = _ask(client, snapshot)
    assert again["Location"] == response["Location"] and ExportJob.objects.count() == 1

    assert run_export(job.pk) == "succeeded"
    assert run_export(job.pk) == "skipped: not queued"  # a second delivery does nothing
    job.refresh_from_db()
    assert job.stored_path == str(exports_dir / f"export-{job.pk}.jsonl")
    assert (job.rows, job.progress) == (30, {"stage": "done", "done": 30, "total": 30})
    page = client.get(reverse("collection:export_job", args=[job.pk])).content.decode()
    assert "30 rows" in page and "hx-trigger" not in page
    download = client.get(reverse("collection:export_file", args=[job.pk]))
    assert download.status_code == 200
    assert download["Content-Disposition"] == (
        f'attachment; filename="snapshot-{snapshot.pk}-trl-all.jsonl"'
    )
    body = b"".join(download.streaming_content)
    assert body == b"".join(exports.stream_export(snapshot, "trl", "jsonl"))
    assert job.size_bytes == len(body)
    # Done, with its file there: asked again gives it; once the file is gone, a new job.
    assert _ask(client, snapshot)["Location"] == response["Location"]
    (exports_dir / f"export-{job.pk}.jsonl").unlink()
    assert client.get(reverse("collection:export_file", args=[job.pk])).status_code == 410
    assert _ask(client, snapshot)["Location"] != response["Location"]
    assert ExportJob.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_progress_is_written_through_the_jobs_heartbeat(
    alice, rita, pairwise, exports_dir, monkeypatch
):
    snapshot = _snapshot(pairwise, alice, n=250)
    monkeypatch.setattr(export_jobs, "HEARTBEAT_EVERY_S", 0)
    beats = []
    real = jobs.job_heartbeat

    def recording(model, job, **fields):
        held = real(model, job, **fields)
        beats.append((dict(fields["progress"]), ExportJob.objects.get(pk=job.pk).progress))
        return held

    monkeypatch.setattr(jobs, "job_heartbeat", recording)
    job, new = export_jobs.export_job_create(
        snapshot=snapshot, export_format="hh-rlhf", file_format="parquet", user=rita
    )
    assert new and run_export(job.pk) == "succeeded"
    assert [sent for sent, _ in beats] == [
        {"stage": "export", "done": 100, "total": 250},
        {"stage": "export", "done": 200, "total": 250},
        {"stage": "export", "done": 250, "total": 250},
    ]
    assert all(sent == seen for sent, seen in beats)  # on the job's row at once
    job.refresh_from_db()
    assert (job.rows, job.file_name) == (250, f"snapshot-{snapshot.pk}-hh-rlhf-all.parquet")


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_worker_that_lost_its_lease_stops(alice, pairwise, exports_dir, monkeypatch):
    snapshot = _snapshot(pairwise, alice, n=150)
    monkeypatch.setattr(export_jobs, "HEARTBEAT_EVERY_S", 0)
    real = jobs.job_heartbeat

    def taken_over(model, job, **fields):  # another worker took the job meanwhile
        ExportJob.objects.filter(pk=job.pk).update(lease_owner="someone-else")
        return real(model, job, **fields)

    monkeypatch.setattr(jobs, "job_heartbeat", taken_over)
    job, _ = export_jobs.export_job_create(
        snapshot=snapshot, export_format="trl", file_format="jsonl"
    )
    assert run_export(job.pk) == "skipped: lost its lease"
    job.refresh_from_db()
    assert (job.status, job.lease_owner, job.stored_path) == ("running", "someone-else", "")
    assert not list(exports_dir.iterdir())  # nothing half-written left behind


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_failed_job_says_why_on_its_page_and_the_datasets_page(
    client, alice, rita, pairwise, settings, tmp_path
):
    snapshot = _snapshot(pairwise, alice, n=4)
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the exports folder should be")
    settings.COLLECTION_EXPORTS_DIR = blocker
    client.force_login(rita)
    _ask(client, snapshot)
    job = ExportJob.objects.get()
    assert run_export(job.pk) == "failed"
    job.refresh_from_db()
    assert "could not be written under ALIGNLAB_EXPORTS_DIR" in job.error
    assert "FileExistsError" in job.error and "Ask an admin" in job.error
    page = client.get(reverse("collection:export_job", args=[job.pk])).content.decode()
    assert "The export was not written: The export file could not be written" in page
    datasets = client.get(reverse("collection:datasets")).content.decode()
    assert 'id="export-jobs"' in datasets and "could not be written" in datasets
    assert client.get(reverse("collection:export_file", args=[job.pk])).status_code == 404
    # A failed export is not given again: asking again makes a new job.
    settings.COLLECTION_EXPORTS_DIR = tmp_path / "exports"
    _ask(client, snapshot)
    assert ExportJob.objects.count() == 2


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_an_unexpected_error_fails_the_job_with_a_one_line_reason(
    alice, pairwise, exports_dir, monkeypatch
):
    snapshot = _snapshot(pairwise, alice, n=2)

    def broken(**options):
        raise ValueError("the snapshot's id list\nis unreadable")

    monkeypatch.setattr(export_jobs, "export_write", broken)
    job, _ = export_jobs.export_job_create(
        snapshot=snapshot, export_format="trl", file_format="jsonl"
    )
    assert run_export(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error == "The export failed: ValueError: the snapshot's id list is unreadable"
    assert (job.lease_owner, job.finished_at is not None) == ("", True)


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_bad_options_are_refused_with_the_reason_and_no_job(client, alice, rita, pairwise):
    snapshot = _snapshot(pairwise, alice, n=2)
    client.force_login(rita)
    response = _ask(client, snapshot, export_format="csv", split="everything")
    assert response.status_code == 400
    text = response.content.decode()
    assert "No export of snapshot" in text and "export_format: Select a valid choice" in text
    assert "split: Select a valid choice" in text
    assert not ExportJob.objects.exists()
    api = client.post(
        "/api/export-jobs/",
        {"snapshot": snapshot.pk, "export_format": "csv"},
        content_type="application/json",
    )
    assert api.status_code == 400 and "export_format" in api.json()
    assert not ExportJob.objects.exists()


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_contractors_can_neither_start_see_nor_download_an_export(
    client, alice, rita, pairwise, exports_dir
):
    snapshot = _snapshot(pairwise, alice, n=2)
    job, _ = export_jobs.export_job_create(
        snapshot=snapshot, export_format="trl", file_format="jsonl", user=rita
    )
    assert run_export(job.pk) == "succeeded"
    client.force_login(alice)
    assert _ask(client, snapshot).status_code == 403
    for name in ("collection:export_job", "collection:export_file"):
        assert client.get(reverse(name, args=[job.pk])).status_code == 403
    assert client.get("/api/export-jobs/").status_code == 403
    assert client.get(f"/api/export-jobs/{job.pk}/").status_code == 403
    assert client.get(f"/api/export-jobs/{job.pk}/file/").status_code == 403
    created = client.post(
        "/api/export-jobs/",
        {"snapshot": snapshot.pk, "export_format": "trl"},
        content_type="application/json",
    )
    assert created.status_code == 403
    assert ExportJob.objects.count() == 1
    client.logout()
    assert client.get(reverse("collection:export_file", args=[job.pk])).status_code == 302


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_the_api_asks_once_reports_progress_and_offers_the_file(
    client, alice, rita, pairwise, exports_dir
):
    snapshot = _snapshot(pairwise, alice, n=12)
    client.force_login(rita)
    body = {"snapshot": snapshot.pk, "export_format": "ranked", "file_format": "parquet"}
    first = client.post("/api/export-jobs/", body, content_type="application/json")
    assert first.status_code == 201 and first.json()["status"] == "queued"
    again = client.post("/api/export-jobs/", body, content_type="application/json")
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"]
    job_id = first.json()["id"]
    assert client.get(f"/api/export-jobs/{job_id}/file/").status_code == 404
    assert run_export(job_id) == "succeeded"
    shown = client.get(f"/api/export-jobs/{job_id}/").json()
    assert (shown["status"], shown["rows"], shown["progress"]) == (
        "succeeded",
        12,
        {"stage": "done", "done": 12, "total": 12},
    )
    download = client.get(f"/api/export-jobs/{job_id}/file/")
    assert download.status_code == 200
    assert b"".join(download.streaming_content)[:4] == b"PAR1"


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_a_snapshot_too_big_to_stream_is_offered_as_a_job_only(
    client, alice, rita, pairwise, settings
):
    snapshot = _snapshot(pairwise, alice, n=12)
    settings.COLLECTION_EXPORT_STREAM_MAX_ROWS = 11
    client.force_login(rita)
    page = client.get(reverse("collection:datasets")).content.decode()
    assert "Too large to download at once" in page
    assert f"{reverse('collection:download', args=[snapshot.pk])}?export=" not in page
    refused = client.get(reverse("collection:download", args=[snapshot.pk]) + "?export=trl")
    assert refused.status_code == 400 and "ask for it as an export job" in refused.content.decode()
    api = client.get(f"/api/snapshots/{snapshot.pk}/download/?export=trl")
    assert api.status_code == 400 and "12 rows" in api.json()["detail"]
    settings.COLLECTION_EXPORT_STREAM_MAX_ROWS = 12
    assert client.get(f"/api/snapshots/{snapshot.pk}/download/?export=trl").status_code == 200


@pytest.mark.django_db
@pytest.mark.usefixtures("media_root")
def test_the_sweeper_sends_stranded_export_jobs_again(alice, pairwise, exports_dir):
    snapshot = _snapshot(pairwise, alice, n=2)
    queued, _ = export_jobs.export_job_create(
        snapshot=snapshot, export_format="trl", file_format="jsonl"
    )
    running, _ = export_jobs.export_job_create(
        snapshot=snapshot, export_format="raw", file_format="jsonl"
    )
    strand(ExportJob, queued=queued, running=running)
    swept = sweep_stranded_work()["export_jobs"]
    assert swept["requeued"] == [running.pk] and swept["enqueued"] == [queued.pk]
    assert run_export(running.pk) == "succeeded"


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_writes_an_export_the_page_then_offers(
    celery_worker_process, alice, rita, pairwise
):
    # The worker is its own process with its own settings: the default media and exports
    # folders under this run's var folder, the same as this process's.
    snapshot = _snapshot(pairwise, alice, n=20)
    client = Client()
    client.force_login(rita)
    response = _ask(client, snapshot)
    job = ExportJob.objects.get()
    assert response.status_code == 302 and job.celery_task_id  # sent after commit
    job_when_finished(job)
    assert job.status == "succeeded", (job.status, job.error, celery_worker_process.output())
    assert "collection.run_export" in celery_worker_process.output()
    page = client.get(reverse("collection:export_job", args=[job.pk])).content.decode()
    assert "20 rows" in page and 'id="export-download"' in page
    download = client.get(reverse("collection:export_file", args=[job.pk]))
    rows = [json.loads(line) for line in b"".join(download.streaming_content).splitlines()]
    assert len(rows) == 20 and {"prompt", "chosen", "rejected"} <= set(rows[0])
