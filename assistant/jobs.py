"""Background jobs (training runs, eval runs, ...): one abstract model and the helpers that
move a job through its life so that no work is stranded and nothing runs twice.

A job is `queued` until a worker claims it with a conditional UPDATE that also takes a lease
(`lease_owner`, `lease_expires_at`); the worker renews the lease as it goes (a heartbeat) and
ends the job only while it still holds the lease. A second worker takes a job over only once
its lease has expired, so a job never runs on two workers at once, and a job whose worker died
is found by the sweeper (`job_sweep`, run every minute by Celery beat), which queues it again
(or ends it `cancelled` when a cancel was asked for). Every enqueue failure is caught: the job
stays queued without a task id and the sweeper queues it once the broker is back.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import uuid
from datetime import timedelta

from celery import shared_task, states
from django.db import models, transaction
from django.db.models import Q
from django.dispatch import Signal
from django.utils import timezone

from assistant.fields import author_fk

logger = logging.getLogger(__name__)


class JobStatus(models.TextChoices):
    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)

# Sent (after commit) when a worker ends a job it holds: sender = the job's model, `job_id`,
# `status`. Apps to the right listen without the job's app knowing them (experiments advance
# when one of their runs ends).
job_finished = Signal()


class Job(models.Model):
    """The fields every background job has; subclasses add what the job is about."""

    Status = JobStatus

    status = models.CharField(max_length=10, choices=JobStatus.choices, default=JobStatus.QUEUED)
    cancel_requested = models.BooleanField(default=False)
    error = models.TextField(blank=True)
    # Blank while no task carries the job: never sent (the broker was down), or taken back by
    # the sweeper; the sweeper sends a task for a queued job without one.
    celery_task_id = models.CharField(max_length=64, blank=True)
    # The claim of the worker running the job; it renews `lease_expires_at` as it goes.
    lease_owner = models.CharField(max_length=100, blank=True)
    lease_expires_at = models.DateTimeField(null=True, blank=True)
    launched_by = author_fk()
    created_at = models.DateTimeField(auto_now_add=True)
    started_at = models.DateTimeField(null=True, blank=True)
    finished_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        abstract = True
        ordering = ["-created_at"]

    @property
    def is_finished(self) -> bool:
        return self.status in FINISHED


def job_task(name: str, *, time_limits: tuple[int, int] | None = None):
    """The Celery task decorator of a job's task: acked late (a worker that dies mid-job leaves
    the message to another, whose claim finds the job), with the kind's (soft, hard) time limits
    in seconds when it has them."""
    limits = {}
    if time_limits is not None:
        limits = {"soft_time_limit": time_limits[0], "time_limit": time_limits[1]}
    return shared_task(name=name, acks_late=True, **limits)


def lease_token() -> str:
    """A new claim's owner: which worker process holds it, and a nonce so each claim differs."""
    return f"{socket.gethostname()[:60]}/{os.getpid()}/{uuid.uuid4().hex[:12]}"


def enqueue_safely(task, *args, task_id: str | None = None) -> str:
    """Send `task` with `args`; the task id, or "" when the broker refused it (logged).

    Called after commit: an exception here would reach the request that queued the work (a
    500 after the broker's retries) and leave the row without a task.
    """
    try:
        return task.apply_async(args, task_id=task_id).id
    except Exception:  # any broker or connection error: the caller keeps the work for a retry
        logger.exception("could not queue %s%r; the broker is unavailable", task.name, args)
        return ""


def job_enqueue(model: type[Job], job_id: int, task) -> bool:
    """Record a new task id on the queued job, then send the task under that id; False when
    the broker refused it (the id is taken back: the job stays queued without a task id, and
    the sweeper sends it again later).

    The id is written before the task is sent: a worker can claim the job as soon as the task
    is out, and an id recorded after that (only while the job is still queued) would be lost,
    leaving a running job with no task id."""
    task_id = uuid.uuid4().hex
    if not model.objects.filter(pk=job_id, status=JobStatus.QUEUED).update(celery_task_id=task_id):
        return False  # claimed, cancelled or gone meanwhile: nothing to send
    if enqueue_safely(task, job_id, task_id=task_id):
        return True
    model.objects.filter(pk=job_id, celery_task_id=task_id).update(celery_task_id="")
    return False


def _lease_free(now) -> Q:
    return Q(lease_expires_at__isnull=True) | Q(lease_expires_at__lt=now)


def job_claim(model: type[Job], job_id: int, *, lease_s: int) -> Job | None:
    """Take the job for this worker; None when it is finished, cancelled or leased by another.

    Claimable: a queued job, or a running one whose lease expired (its worker died; the job
    resumes). A job whose cancel was asked for is ended `cancelled` here instead of run.
    """
    now = timezone.now()
    claimable = model.objects.filter(
        Q(status=JobStatus.QUEUED) | (Q(status=JobStatus.RUNNING) & _lease_free(now)), pk=job_id
    )
    claimable.filter(cancel_requested=True).update(
        status=JobStatus.CANCELLED, lease_owner="", lease_expires_at=None, finished_at=now
    )
    owner = lease_token()
    claimed = claimable.filter(cancel_requested=False).update(
        status=JobStatus.RUNNING,
        lease_owner=owner,
        lease_expires_at=now + timedelta(seconds=lease_s),
        started_at=now,
    )
    return model.objects.get(pk=job_id) if claimed else None


def job_skip_reason(model: type[Job], job_id: int) -> str:
    """Why a task did not run its job, for the task's result and the worker's log."""
    job = model.objects.filter(pk=job_id).only("status", "lease_owner").first()
    if job is None:
        return "skipped: no such job"
    if job.status == JobStatus.CANCELLED:
        return JobStatus.CANCELLED
    if job.status == JobStatus.RUNNING:
        return f"skipped: leased by {job.lease_owner}"
    return "skipped: not queued"


def job_heartbeat(model: type[Job], job: Job, *, lease_s: int, **fields) -> bool:
    """Renew the job's lease (and write `fields`); False when this worker no longer holds it."""
    return bool(
        model.objects.filter(
            pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner
        ).update(lease_expires_at=timezone.now() + timedelta(seconds=lease_s), **fields)
    )


class LeaseLost(Exception):
    """This worker no longer holds the job (another took it over): stop, write nothing more."""


class JobProgress:
    """A progress callback, `progress(stage, done, total)`, that writes {"stage", "done",
    "total"} through the job's heartbeat at most every `every_s` seconds (and always at the end,
    `done >= total`), renewing the lease each time; raises LeaseLost once the lease is gone."""

    def __init__(self, model: type[Job], job: Job, *, lease_s: int, every_s: float):
        self.model, self.job, self.lease_s, self.every_s = model, job, lease_s, every_s
        self.last = 0.0

    def __call__(self, stage: str, done: int, total: int | None) -> None:
        finished = total is not None and done >= total
        if not finished and time.monotonic() - self.last < self.every_s:
            return
        self.last = time.monotonic()
        progress = {"stage": stage, "done": done, "total": total}
        if not job_heartbeat(self.model, self.job, lease_s=self.lease_s, progress=progress):
            raise LeaseLost


def job_finish(model: type[Job], job: Job, *, status: str, **fields) -> Job:
    """End the job as `status`, if this worker still holds its lease (a job taken over or
    cancelled meanwhile is left as the other party left it); returns the row as it is now."""
    ended = model.objects.filter(
        pk=job.pk, status=JobStatus.RUNNING, lease_owner=job.lease_owner
    ).update(
        status=status, lease_owner="", lease_expires_at=None, finished_at=timezone.now(), **fields
    )
    if not ended:
        logger.warning("%s %s: lost its lease before it finished; left as it is", model, job.pk)
    else:
        transaction.on_commit(
            lambda: job_finished.send_robust(sender=model, job_id=job.pk, status=status)
        )
    return model.objects.get(pk=job.pk)


def job_fail_unexpected(model: type[Job], job: Job, error: BaseException, *, what: str) -> Job:
    """End the job `failed` after an exception nobody expected (logged with its traceback): the
    job must not stay running, and its page says in one line what went wrong."""
    logger.exception("%s %s failed", model.__name__, job.pk)
    reason = " ".join(f"{type(error).__name__}: {error}".split())[:500]
    return job_finish(model, job, status=JobStatus.FAILED, error=f"{what} failed: {reason}")


def job_cancel(model: type[Job], job: Job) -> Job:
    """Ask the job to stop: a queued job, or a running one whose worker is gone (lease expired),
    ends `cancelled` at once; a running one stops at its worker's next heartbeat."""
    now = timezone.now()
    model.objects.filter(
        Q(status=JobStatus.QUEUED) | (Q(status=JobStatus.RUNNING) & _lease_free(now)), pk=job.pk
    ).update(
        status=JobStatus.CANCELLED,
        cancel_requested=True,
        lease_owner="",
        lease_expires_at=None,
        finished_at=now,
    )
    model.objects.filter(pk=job.pk, status=JobStatus.RUNNING).update(cancel_requested=True)
    return model.objects.get(pk=job.pk)


def task_is_gone(task, task_id: str) -> bool:
    """True when there is no task, or the result backend says it ended (so it no longer
    carries its job). PENDING (waiting in the queue, or unknown) counts as alive; so does a
    backend that cannot be read."""
    if not task_id:
        return True
    try:
        return task.AsyncResult(task_id).state in states.READY_STATES
    except Exception:
        logger.exception("could not read the state of task %s", task_id)
        return False


def job_sweep(model: type[Job], task, *, grace_s: int) -> dict:
    """Recover the model's stranded jobs; returns what was done, by kind, as lists of ids.

    - running with an expired lease (its worker died): `cancelled` if a cancel was asked for,
      else queued again (training resumes from its checkpoint);
    - queued for longer than `grace_s` with no live task (never sent, or its task ended without
      running it): sent again. Sending twice is harmless: the claim lets one task run it.
    """
    now = timezone.now()
    done = {"cancelled": [], "requeued": [], "enqueued": []}
    expired = model.objects.filter(status=JobStatus.RUNNING, lease_expires_at__lt=now)
    for job_id in expired.filter(cancel_requested=True).values_list("pk", flat=True):
        if expired.filter(pk=job_id).update(
            status=JobStatus.CANCELLED, lease_owner="", lease_expires_at=None, finished_at=now
        ):
            done["cancelled"].append(job_id)
    for job_id in expired.filter(cancel_requested=False).values_list("pk", flat=True):
        if expired.filter(pk=job_id).update(
            status=JobStatus.QUEUED, lease_owner="", lease_expires_at=None, celery_task_id=""
        ):
            logger.warning("%s %s: its worker's lease expired; queued again", model, job_id)
            done["requeued"].append(job_id)
            job_enqueue(model, job_id, task)
    stale = model.objects.filter(
        status=JobStatus.QUEUED, created_at__lt=now - timedelta(seconds=grace_s)
    ).exclude(pk__in=done["requeued"])
    for job_id, task_id in stale.values_list("pk", "celery_task_id"):
        if task_is_gone(task, task_id) and job_enqueue(model, job_id, task):
            logger.warning("%s %s: queued with no live task; sent again", model, job_id)
            done["enqueued"].append(job_id)
    return done
