"""Snapshots above a size as jobs: a request that asks for a snapshot of more than
COLLECTION_SNAPSHOT_INLINE_MAX judgements (ALIGNLAB_SNAPSHOT_INLINE_MAX) gets a SnapshotJob,
and the `collection.run_snapshot` task makes the snapshot (`snapshot_create`, its progress on
the job's row), so no request holds a connection while a million judgements are frozen and
hashed. A smaller snapshot is still made inside the request.

The job follows assistant/jobs.py (claim, lease renewed every second, finish, sweep). The job
ends in the transaction that stores its snapshot, so a task that runs again after a crash
never makes a second snapshot. Asking again with the same filter and name while the job is
queued or running gives that job.
"""

from __future__ import annotations

import json
import logging

from django.conf import settings
from django.contrib.auth import get_user_model
from django.db import transaction

from assistant import jobs

from .dataset_errors import DatasetError
from .models import DatasetSnapshot, SnapshotJob
from .snapshot_filters import filter_judgements, snapshot_filter_clean
from .snapshots import snapshot_create

logger = logging.getLogger(__name__)

HEARTBEAT_EVERY_S = 1.0


def snapshot_request(
    *, filter: dict, name: str = "", user=None
) -> tuple[DatasetSnapshot | None, SnapshotJob | None, bool]:
    """Make the snapshot `filter` selects now, or queue a job for it when it selects more than
    COLLECTION_SNAPSHOT_INLINE_MAX judgements: (the snapshot or None, the job or None, whether
    the snapshot or job is new). The filter is checked here (SnapshotFilterError says why)."""
    clean = snapshot_filter_clean(filter)
    selected = filter_judgements(clean).count()
    if selected <= settings.COLLECTION_SNAPSHOT_INLINE_MAX:  # 0 too: its error, at once
        return snapshot_create(filter=filter, name=name, created_by=user), None, True
    name = name[:200]
    stored = json.loads(json.dumps(clean))  # as the JSON field gives it back
    with transaction.atomic():
        if user is not None:  # the requester's row lock: a double submit gives one job
            get_user_model().objects.select_for_update().filter(pk=user.pk).first()
        same = SnapshotJob.objects.filter(
            name=name, status__in=(SnapshotJob.Status.QUEUED, SnapshotJob.Status.RUNNING)
        )
        for job in same:
            if job.filter == stored:
                return None, job, False
        job = SnapshotJob.objects.create(
            filter=clean, name=name, judgements=selected, launched_by=user
        )
        transaction.on_commit(lambda: _queue(job.pk))
    return None, job, True


def _queue(job_id: int) -> bool:
    from .tasks import run_snapshot

    return jobs.job_enqueue(SnapshotJob, job_id, run_snapshot)


def snapshot_jobs_sweep() -> dict:
    """Queue again the snapshot jobs with no live task or an expired lease (the sweeper)."""
    from .tasks import run_snapshot

    return jobs.job_sweep(SnapshotJob, run_snapshot, grace_s=settings.JOBS_ENQUEUE_GRACE_S)


def snapshot_job_run(*, job_id: int) -> str:
    """Claim the job and make its snapshot; its status (or why it was skipped) for the task."""
    lease_s = settings.COLLECTION_SNAPSHOT_LEASE_S
    job = jobs.job_claim(SnapshotJob, job_id, lease_s=lease_s)
    if job is None:  # finished, cancelled, or another worker's
        return jobs.job_skip_reason(SnapshotJob, job_id)
    progress = jobs.JobProgress(SnapshotJob, job, lease_s=lease_s, every_s=HEARTBEAT_EVERY_S)

    def finishing(snapshot: DatasetSnapshot) -> None:
        done = snapshot.counts.get("judgements", 0)
        ended = jobs.job_finish(
            SnapshotJob,
            job,
            status=SnapshotJob.Status.SUCCEEDED,
            snapshot=snapshot,
            progress={"stage": "done", "done": done, "total": done},
        )
        if ended.snapshot_id != snapshot.pk:  # another worker holds the job: store nothing
            raise jobs.LeaseLost

    try:
        snapshot_create(
            filter=job.filter,
            name=job.name,
            created_by=job.launched_by,
            progress=progress,
            finishing=finishing,
        )
    except jobs.LeaseLost:
        logger.warning("snapshot job %s: lost its lease; left to the worker that has it", job.pk)
        return "skipped: lost its lease"
    except DatasetError as error:  # e.g. the judgements it selected are gone
        finished = jobs.job_finish(
            SnapshotJob, job, status=SnapshotJob.Status.FAILED, error=str(error)
        )
    except OSError as error:  # the snapshot file cannot be written: the operator can act
        logger.exception("snapshot job %s: could not write its file", job.pk)
        finished = jobs.job_finish(
            SnapshotJob,
            job,
            status=SnapshotJob.Status.FAILED,
            error=f"The snapshot's file could not be written under MEDIA_ROOT "
            f"({type(error).__name__}: {error.strerror or error}). Ask an admin to fix the "
            "folder, then make the snapshot again.",
        )
    except Exception as error:  # anything else
        finished = jobs.job_fail_unexpected(SnapshotJob, job, error, what="The snapshot")
    else:
        return SnapshotJob.Status.SUCCEEDED
    return finished.status
