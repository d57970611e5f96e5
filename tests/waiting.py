"""Waiting for something another process does (a worker, a server), with a deadline."""

import time


def wait_until(predicate, seconds: float, what: str, *, every: float = 0.25):
    """`predicate()`'s first truthy result within `seconds`; else an AssertionError naming
    `what`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        result = predicate()
        if result:
            return result
        time.sleep(every)
    raise AssertionError(f"timed out waiting for {what}")


def strand(model, *, queued, running) -> None:
    """Leave two jobs as the sweeper finds them after trouble: `queued` an hour ago and never
    sent (no task id), `running` on a worker that died an hour ago (its lease expired)."""
    from datetime import timedelta

    from django.utils import timezone

    old = timezone.now() - timedelta(hours=1)
    model.objects.filter(pk=queued.pk).update(created_at=old, celery_task_id="")
    model.objects.filter(pk=running.pk).update(
        status="running", lease_owner="dead-worker", lease_expires_at=old, created_at=old
    )


def job_when_finished(job, seconds: float = 90):
    """`job` reloaded once it has finished, or as it is after `seconds` (the caller asserts
    what it expects, with the worker's log in the message)."""
    deadline = time.monotonic() + seconds
    while True:
        job.refresh_from_db()
        if job.is_finished or time.monotonic() > deadline:
            return job
        time.sleep(0.3)
