"""Import files uploaded from the browser, imported by a worker (an `ImportJob`).

The web process writes the upload under `COLLECTION_UPLOADS_DIR`, in a folder whose name it
makes (a random hex string) and under the file's own name made safe (no folder, no odd
character: the name the import records), then creates the job; the `collection.run_import`
task claims it (assistant/jobs.py: lease, heartbeat, finish, sweep) and runs the same importer
as `manage.py import_dataset` (`dataset_import_create`), whose progress it writes to
`ImportJob.progress`. A file imported before (same sha256) gives its first import. The stored
file is deleted once the job ends.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction

from assistant import jobs
from assistant.uploads import UploadTooLarge, remove_upload, store_upload

from ..dataset_errors import DatasetError
from ..models import Campaign, DatasetImport, ImportJob
from .service import dataset_import_create

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0  # progress is written at most this often
STAGES = {"upload": "waiting for a worker", "validate": "checking every line", "write": "writing"}


class ImportUploadError(Exception):
    """An upload refused before any job was made; `field` names the form field it is about."""

    def __init__(self, message: str, *, field: str | None = None):
        super().__init__(message)
        self.field = field


def upload_max_bytes() -> int:
    return settings.COLLECTION_UPLOAD_MAX_MB * 1024 * 1024


def import_job_create(*, upload, format: str, mode: str, user) -> ImportJob:
    """Store an uploaded file and queue its import; returns the job.

    `upload` is a Django UploadedFile (read in chunks: a big file never sits in memory).
    Refuses an unknown format or mode, an empty file, or one over `ALIGNLAB_UPLOAD_MAX_MB`.
    """
    if format not in DatasetImport.Format.values:
        raise ImportUploadError(f"Unknown format {format!r}.", field="format")
    if mode not in Campaign.Mode.values:
        raise ImportUploadError(f"Unknown mode {mode!r}.", field="mode")
    limit = upload_max_bytes()
    if upload.size > limit:
        raise ImportUploadError(
            f"The file is {upload.size / 2**20:.1f} MiB; uploads are limited to "
            f"{settings.COLLECTION_UPLOAD_MAX_MB} MiB (ALIGNLAB_UPLOAD_MAX_MB). Import bigger "
            "files with `manage.py import_dataset`.",
            field="file",
        )
    if not upload.size:
        raise ImportUploadError("The file is empty.", field="file")
    try:
        stored, written = store_upload(
            upload, settings.COLLECTION_UPLOADS_DIR, limit=limit, default_name="upload.jsonl"
        )
    except UploadTooLarge:  # the size the client claimed was wrong
        raise ImportUploadError(
            f"Uploads are limited to {settings.COLLECTION_UPLOAD_MAX_MB} MiB.", field="file"
        ) from None
    try:
        with transaction.atomic():
            job = ImportJob.objects.create(
                format=format,
                mode=mode,
                source_name=str(upload.name)[:300],
                stored_path=str(stored),
                size_bytes=written,
                progress={"stage": "upload", "done": written, "total": written},
                launched_by=user,
            )
            transaction.on_commit(lambda: _queue(job.pk))
    except BaseException:
        remove_upload(stored, settings.COLLECTION_UPLOADS_DIR)
        raise
    return job


def _queue(job_id: int) -> bool:
    from ..tasks import run_import

    return jobs.job_enqueue(ImportJob, job_id, run_import)


def import_jobs_sweep() -> dict:
    """Queue again the import jobs with no live task or an expired lease (the sweeper)."""
    from ..tasks import run_import

    return jobs.job_sweep(ImportJob, run_import, grace_s=settings.JOBS_ENQUEUE_GRACE_S)


def _remove_upload(job: ImportJob) -> None:
    """Delete the job's stored file and its folder; only ever a folder under the uploads dir."""
    remove_upload(job.stored_path, settings.COLLECTION_UPLOADS_DIR)


def import_job_run(*, job_id: int) -> str:
    """Claim the job and import its file; its status (or why it was skipped) for the task."""
    job = jobs.job_claim(ImportJob, job_id, lease_s=settings.COLLECTION_IMPORT_LEASE_S)
    if job is None:  # finished, cancelled, or another worker's
        return jobs.job_skip_reason(ImportJob, job_id)
    heartbeat = jobs.JobProgress(
        ImportJob, job, lease_s=settings.COLLECTION_IMPORT_LEASE_S, every_s=HEARTBEAT_EVERY_S
    )
    connection = transaction.get_connection()
    depth = len(connection.atomic_blocks)  # more, below: inside the import's transaction

    def progress(stage: str, done: int, total: int | None) -> None:
        # The write pass runs inside the import's transaction: a write to the job's row there
        # would show nobody anything until the end (and hold the row), so progress is written
        # only between transactions: through the checking pass, and at the end.
        if len(connection.atomic_blocks) == depth:
            heartbeat(stage, done, total)

    if not Path(job.stored_path).is_file():  # say why in words, not with the server's path
        finished = jobs.job_finish(
            ImportJob,
            job,
            status=ImportJob.Status.FAILED,
            error="The uploaded file is not on this worker: the web process and the workers "
            "must share ALIGNLAB_UPLOADS_DIR. Upload it again once they do.",
        )
        _remove_upload(finished)
        return finished.status
    try:
        dataset_import = dataset_import_create(
            path=job.stored_path,
            format=job.format,
            mode=job.mode,
            created_by=job.launched_by,
            progress=progress,
        )
    except jobs.LeaseLost:
        logger.warning("import job %s: lost its lease; left to the worker that has it", job.pk)
        return "skipped: lost its lease"
    except DatasetError as error:  # ImportFormatError: "line 17: …"
        finished = jobs.job_finish(
            ImportJob, job, status=ImportJob.Status.FAILED, error=str(error)[:2000]
        )
    except Exception as error:  # anything else
        finished = jobs.job_fail_unexpected(ImportJob, job, error, what="The import")
    else:
        total = dataset_import.counts.get("judgements", 0)
        finished = jobs.job_finish(
            ImportJob,
            job,
            status=ImportJob.Status.SUCCEEDED,
            dataset_import=dataset_import,
            progress={"stage": "done", "done": total, "total": total},
        )
    if finished.is_finished:
        _remove_upload(finished)
    return finished.status
