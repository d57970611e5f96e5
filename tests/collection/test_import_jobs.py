"""Import files uploaded from the browser: stored where the server chooses, imported by a
worker (an ImportJob with its lease and progress), line-numbered errors shown, idempotent."""

import json

import pytest
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import reverse

from assistant import jobs
from collection.imports import uploads as import_uploads
from collection.models import DatasetImport, ImportJob
from collection.tasks import run_import
from config.tasks import sweep_stranded_work
from tests.training.test_runs import toy_trl_file
from tests.waiting import job_when_finished, strand


@pytest.fixture
def uploads(settings, tmp_path):
    settings.COLLECTION_UPLOADS_DIR = tmp_path / "uploads"
    settings.MEDIA_ROOT = tmp_path / "media"
    return settings.COLLECTION_UPLOADS_DIR


def _toy_bytes(tmp_path, n=8, seed=0):
    return toy_trl_file(tmp_path / f"toy-{n}-{seed}.jsonl", n=n, seed=seed).read_bytes()


def _upload(client, content: bytes, name="toy.jsonl", format="trl", mode="helpful"):
    return client.post(
        reverse("collection:import_upload"),
        {"format": format, "mode": mode, "file": SimpleUploadedFile(name, content)},
    )


@pytest.mark.django_db
def test_an_upload_is_stored_where_the_server_chooses_and_a_worker_imports_it(
    client, rita, uploads, tmp_path
):
    client.force_login(rita)
    response = _upload(client, _toy_bytes(tmp_path), name="../../etc/my toy.jsonl")
    job = ImportJob.objects.get()
    assert response.status_code == 302
    assert response["Location"] == reverse("collection:import_job", args=[job.pk])
    stored = job.stored_path
    # Under the uploads folder, in a folder named by the server, with the name made safe.
    assert stored.startswith(str(uploads) + "/") and stored.endswith("/my_toy.jsonl")
    assert len(stored.removeprefix(str(uploads) + "/").split("/")) == 2
    assert (job.status, job.format, job.mode, job.launched_by) == ("queued", "trl", "helpful", rita)
    page = client.get(response["Location"]).content.decode()
    assert "Waiting for a worker" in page and 'hx-trigger="every 2s"' in page

    assert run_import(job.pk) == "succeeded"
    job.refresh_from_db()
    imported = DatasetImport.objects.get()
    assert job.dataset_import == imported and job.error == ""
    assert imported.source_name == "my_toy.jsonl" and imported.counts["judgements"] == 8
    assert imported.created_by == rita
    assert job.progress == {"stage": "done", "done": 8, "total": 8}
    assert not list(uploads.iterdir())  # the stored file is gone once imported
    page = client.get(response["Location"]).content.decode()
    assert f"import #{imported.pk}" in page and imported.campaign.name in page
    assert "every 2s" not in page  # finished: no more polling
    assert run_import(job.pk) == "skipped: not queued"  # a second delivery does nothing


@pytest.mark.django_db
def test_the_same_file_twice_gives_the_same_import(client, rita, uploads, tmp_path):
    client.force_login(rita)
    content = _toy_bytes(tmp_path)
    _upload(client, content, name="first.jsonl")
    _upload(client, content, name="again.jsonl")
    first, again = ImportJob.objects.order_by("pk")
    assert run_import(first.pk) == run_import(again.pk) == "succeeded"
    first.refresh_from_db()
    again.refresh_from_db()
    assert DatasetImport.objects.count() == 1
    assert first.dataset_import_id == again.dataset_import_id
    page = client.get(reverse("collection:import_job", args=[again.pk])).content.decode()
    assert "had been imported before" in page


@pytest.mark.django_db
def test_a_bad_line_fails_the_job_with_its_line_number(client, rita, uploads, tmp_path):
    lines = _toy_bytes(tmp_path, n=4).decode().splitlines()
    lines[2] = '{"prompt": "no end'
    client.force_login(rita)
    _upload(client, ("\n".join(lines) + "\n").encode())
    job = ImportJob.objects.get()
    assert run_import(job.pk) == "failed"
    job.refresh_from_db()
    assert job.error.startswith("line 3: not JSON")
    assert not DatasetImport.objects.exists() and not list(uploads.iterdir())
    page = client.get(reverse("collection:import_job", args=[job.pk])).content.decode()
    assert "line 3: not JSON" in page and "Nothing of it was stored" in page
    datasets = client.get(reverse("collection:datasets")).content.decode()
    assert "line 3: not JSON" in datasets  # the recent uploads list says why too


@pytest.mark.django_db
def test_a_worker_without_the_stored_file_says_so(client, rita, uploads, tmp_path):
    client.force_login(rita)
    _upload(client, _toy_bytes(tmp_path))
    job = ImportJob.objects.get()
    for path in uploads.rglob("*.jsonl"):
        path.unlink()
    assert run_import(job.pk) == "failed"
    job.refresh_from_db()
    assert "must share ALIGNLAB_UPLOADS_DIR" in job.error and str(uploads) not in job.error
    assert not list(uploads.iterdir())


@pytest.mark.django_db
def test_progress_is_written_through_the_jobs_heartbeat(
    client, rita, uploads, tmp_path, monkeypatch
):
    monkeypatch.setattr(import_uploads, "HEARTBEAT_EVERY_S", 0)
    beats = []
    real = jobs.job_heartbeat

    def recording(model, job, **fields):
        held = real(model, job, **fields)
        beats.append((model, dict(fields["progress"]), ImportJob.objects.get(pk=job.pk).progress))
        return held

    monkeypatch.setattr(jobs, "job_heartbeat", recording)
    client.force_login(rita)
    _upload(client, _toy_bytes(tmp_path, n=450))
    job = ImportJob.objects.get()
    assert run_import(job.pk) == "succeeded"
    # The checking pass reports every 200 lines and at its end; each one renews the lease and
    # is on the job's row at once (the write pass, inside its transaction, reports at the end).
    assert [progress for _, progress, _ in beats] == [
        {"stage": "validate", "done": 200, "total": None},
        {"stage": "validate", "done": 400, "total": None},
        {"stage": "validate", "done": 450, "total": 450},
    ]
    assert all(model is ImportJob and seen == sent for model, sent, seen in beats)


@pytest.mark.django_db
def test_a_worker_that_lost_its_lease_stops(client, rita, uploads, tmp_path, monkeypatch):
    monkeypatch.setattr(import_uploads, "HEARTBEAT_EVERY_S", 0)
    client.force_login(rita)
    _upload(client, _toy_bytes(tmp_path, n=250))
    job = ImportJob.objects.get()
    real = jobs.job_heartbeat

    def taken_over(model, job, **fields):  # another worker took the job meanwhile
        ImportJob.objects.filter(pk=job.pk).update(lease_owner="someone-else")
        return real(model, job, **fields)

    monkeypatch.setattr(jobs, "job_heartbeat", taken_over)
    assert run_import(job.pk) == "skipped: lost its lease"
    job.refresh_from_db()
    assert job.status == "running" and job.lease_owner == "someone-else"
    assert not DatasetImport.objects.exists()


@pytest.mark.django_db
def test_uploads_over_the_limit_or_empty_are_refused_and_nothing_is_stored(
    client, rita, uploads, settings, tmp_path
):
    settings.COLLECTION_UPLOAD_MAX_MB = 1
    client.force_login(rita)
    big = _upload(client, b"x" * (1024 * 1024 + 1))
    assert big.status_code == 400
    assert "limited to 1 MiB" in big.context["upload_form"].errors["file"][0]
    empty = _upload(client, b"")
    assert empty.status_code == 400 and "empty" in empty.context["upload_form"].errors["file"][0]
    # Far over the limit: refused from the request's length, before the body is read.
    huge = _upload(client, b"x" * (3 * 1024 * 1024))
    assert huge.status_code == 413
    assert "the limit is 1 MiB" in huge.content.decode()
    bad_format = _upload(client, b"{}\n", format="csv")
    assert "format" in bad_format.context["upload_form"].errors
    assert not ImportJob.objects.exists()
    assert not uploads.exists() or not list(uploads.iterdir())


@pytest.mark.django_db
def test_the_upload_needs_the_csrf_token(rita, uploads, tmp_path):
    client = Client(enforce_csrf_checks=True)
    client.force_login(rita)
    assert _upload(client, _toy_bytes(tmp_path)).status_code == 403
    assert not ImportJob.objects.exists()


@pytest.mark.django_db
def test_the_sweeper_sends_stranded_import_jobs_again(client, rita, uploads, tmp_path):
    client.force_login(rita)
    _upload(client, _toy_bytes(tmp_path))
    _upload(client, _toy_bytes(tmp_path, seed=1))
    queued, running = ImportJob.objects.order_by("pk")
    strand(ImportJob, queued=queued, running=running)
    swept = sweep_stranded_work()["import_jobs"]
    assert swept["requeued"] == [running.pk] and swept["enqueued"] == [queued.pk]
    running.refresh_from_db()
    assert running.status == "queued" and running.lease_owner == ""
    assert run_import(running.pk) == "succeeded"  # its file was kept for the retry


@pytest.mark.django_db(transaction=True)
def test_a_real_worker_imports_an_upload(celery_worker_process, rita, tmp_path, settings):
    # The worker is its own process with its own settings: the default uploads folder, under
    # this run's var folder (uploads are never read from a path the request named).
    client = Client()
    client.force_login(rita)
    content = "".join(
        json.dumps(
            {
                "prompt": [{"role": "user", "content": f"question {i}"}],
                "chosen": [{"role": "assistant", "content": "a good answer"}],
                "rejected": [{"role": "assistant", "content": "a bad one"}],
            }
        )
        + "\n"
        for i in range(30)
    ).encode()
    response = _upload(client, content, name="worker.jsonl")
    assert response.status_code == 302
    job = ImportJob.objects.get()
    assert job.celery_task_id  # sent after commit
    job_when_finished(job)
    assert job.status == "succeeded", (job.status, job.error, celery_worker_process.output())
    assert job.dataset_import.counts["judgements"] == 30
    assert "collection.run_import" in celery_worker_process.output()
    page = client.get(reverse("collection:import_job", args=[job.pk])).content.decode()
    assert f"import #{job.dataset_import_id}" in page


def test_the_import_task_may_run_longer_than_ordinary_tasks_and_its_lease_outlasts_it():
    from django.conf import settings

    assert run_import.soft_time_limit > settings.CELERY_TASK_SOFT_TIME_LIMIT
    assert run_import.time_limit > run_import.soft_time_limit
    assert settings.COLLECTION_IMPORT_LEASE_S > run_import.time_limit
    assert run_import.acks_late
