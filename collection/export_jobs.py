"""Exports as jobs: a researcher asks for an export of a snapshot, the `collection.run_export`
task writes it to a file (streamed chunk by chunk, constant memory, progress on the job's row),
and the page or API offers the file once it is ready. No request holds a connection while a big
snapshot is written; a request may still stream a small one (`export_streamable`).

The job follows assistant/jobs.py (claim, lease renewed every second while writing, finish,
sweep). The file is written under a name the server makes (`export-<job id>.<ext>` in
COLLECTION_EXPORTS_DIR), first to a temporary name and renamed when complete, so a download
never reads half a file. Asking again for an export that is queued, running, or done with its
file still there gives that job, not a second one.
"""

from __future__ import annotations

import logging
from pathlib import Path

from django.conf import settings
from django.db import transaction

from assistant import jobs

from .dataset_errors import DatasetError
from .exports import FILE_FORMATS, check_export_options, export_row_count, export_write
from .models import DatasetSnapshot, ExportJob

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0


def export_streamable(snapshot: DatasetSnapshot) -> bool:
    """Whether every export of the snapshot is small enough for a request to stream it."""
    largest = max(export_row_count(snapshot, fmt) for fmt in ("trl", "raw", "ranked"))
    return largest <= settings.COLLECTION_EXPORT_STREAM_MAX_ROWS


def stream_refusal(snapshot: DatasetSnapshot, fmt: str, *, split: str, pairs: str) -> str:
    """Why a request may not stream this export ("" when it may): too many rows."""
    rows = export_row_count(snapshot, fmt, split=split, pairs=pairs)
    if rows <= settings.COLLECTION_EXPORT_STREAM_MAX_ROWS:
        return ""
    return (
        f"This export has {rows:,} rows, more than a request streams "
        f"(ALIGNLAB_EXPORT_STREAM_MAX_ROWS = {settings.COLLECTION_EXPORT_STREAM_MAX_ROWS:,}): "
        "ask for it as an export job (the datasets page's Export button, or POST /api/export-jobs/)"
        " and download the file when a worker has written it."
    )


def export_job_create(
    *,
    snapshot: DatasetSnapshot,
    export_format: str,
    file_format: str,
    split: str = "all",
    pairs: str = "all",
    margin: bool = False,
    user=None,
) -> tuple[ExportJob, bool]:
    """Queue an export of `snapshot`; (the job, whether it is new).

    The same export asked again while it is queued or running, or once it succeeded and its
    file is still there, gives that job. Options are checked here (DatasetError says which).
    """
    check_export_options(export_format, split, pairs)
    if file_format not in FILE_FORMATS:
        raise DatasetError(f"unknown file format {file_format!r} (use jsonl or parquet)")
    options = {
        "export_format": export_format,
        "file_format": file_format,
        "split": split,
        "pairs": pairs,
        "margin": bool(margin),
    }
    with transaction.atomic():
        # The snapshot's row lock makes two identical requests at once give one job.
        DatasetSnapshot.objects.select_for_update().filter(pk=snapshot.pk).first()
        for job in ExportJob.objects.filter(snapshot=snapshot, **options).exclude(
            status__in=(ExportJob.Status.FAILED, ExportJob.Status.CANCELLED)
        ):
            if job.status != ExportJob.Status.SUCCEEDED or Path(job.stored_path).is_file():
                return job, False
        job = ExportJob.objects.create(snapshot=snapshot, launched_by=user, **options)
        transaction.on_commit(lambda: _queue(job.pk))
    return job, True


def _queue(job_id: int) -> bool:
    from .tasks import run_export

    return jobs.job_enqueue(ExportJob, job_id, run_export)


def export_jobs_sweep() -> dict:
    """Queue again the export jobs with no live task or an expired lease (the sweeper)."""
    from .tasks import run_export

    return jobs.job_sweep(ExportJob, run_export, grace_s=settings.JOBS_ENQUEUE_GRACE_S)


def export_file(job: ExportJob) -> Path | None:
    """The job's file, if it succeeded and the file is (still) where the server wrote it."""
    if job.status != ExportJob.Status.SUCCEEDED or not job.stored_path:
        return None
    path = Path(job.stored_path)
    inside = path.resolve().parent == Path(settings.COLLECTION_EXPORTS_DIR).resolve()
    return path if inside and path.is_file() else None


def export_job_run(*, job_id: int) -> str:
    """Claim the job and write its file; its status (or why it was skipped) for the task."""
    job = jobs.job_claim(ExportJob, job_id, lease_s=settings.COLLECTION_EXPORT_LEASE_S)
    if job is None:  # finished, cancelled, or another worker's
        return jobs.job_skip_reason(ExportJob, job_id)
    progress = jobs.JobProgress(
        ExportJob, job, lease_s=settings.COLLECTION_EXPORT_LEASE_S, every_s=HEARTBEAT_EVERY_S
    )

    folder = Path(settings.COLLECTION_EXPORTS_DIR)
    path = folder / f"export-{job.pk}.{job.file_format}"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        rows = export_write(
            snapshot=job.snapshot,
            fmt=job.export_format,
            file_format=job.file_format,
            path=path,
            progress=progress,
            split=job.split,
            pairs=job.pairs,
            margin=job.margin,
        )
    except jobs.LeaseLost:
        logger.warning("export job %s: lost its lease; left to the worker that has it", job.pk)
        return "skipped: lost its lease"
    except DatasetError as error:
        finished = jobs.job_finish(ExportJob, job, status=ExportJob.Status.FAILED, error=str(error))
    except OSError as error:  # the folder cannot be made or written: the operator can act
        logger.exception("export job %s: could not write %s", job.pk, path)
        finished = jobs.job_finish(
            ExportJob,
            job,
            status=ExportJob.Status.FAILED,
            error=f"The export file could not be written under ALIGNLAB_EXPORTS_DIR "
            f"({type(error).__name__}: {error.strerror or error}). Ask an admin to fix the "
            "folder, then export again.",
        )
    except Exception as error:  # anything else
        finished = jobs.job_fail_unexpected(ExportJob, job, error, what="The export")
    else:
        finished = jobs.job_finish(
            ExportJob,
            job,
            status=ExportJob.Status.SUCCEEDED,
            stored_path=str(path),
            rows=rows,
            size_bytes=path.stat().st_size,
            progress={"stage": "done", "done": rows, "total": rows},
        )
    return finished.status
