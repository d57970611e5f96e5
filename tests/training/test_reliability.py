"""No stranded training runs: a killed worker, a broker that is down and a cancel meanwhile all
end in a run that finishes, on one worker at a time (issue 12)."""

import os
import signal
import time
from datetime import timedelta

import pytest
from django.utils import timezone

from config.celery import app
from config.tasks import sweep_stranded_work
from tests.conftest import start_worker, stop_worker
from tests.training import test_runs
from tests.waiting import wait_until
from training import services
from training.models import TrainingRun
from training.tasks import run_training

TINY_CONFIG = test_runs.TINY_CONFIG
backbone, snapshot = test_runs.backbone, test_runs.snapshot  # the same fixtures
LONG = {**TINY_CONFIG, "max_steps": 100_000, "eval_every": 0, "checkpoint_every": 2}


@pytest.fixture
def workers(transactional_db, tmp_path):
    """Start real workers on the `training` queue (registering a model queues evals on
    `default`, which these leave alone); all are stopped at the end."""
    app.control.purge()
    started = []

    def start():
        folder = tmp_path / f"worker-{len(started)}"
        folder.mkdir()
        started.append(start_worker(folder, queues="training"))
        return started[-1]

    yield start
    for worker in started:
        stop_worker(worker)


def kill(worker):
    """SIGKILL the whole worker (main process and its pool child), as a machine that dies."""
    os.killpg(worker.process.pid, signal.SIGKILL)
    worker.process.wait()


def run_now(run):
    return TrainingRun.objects.get(pk=run.pk)


def training_mid_run(run, steps=3):
    return wait_until(
        lambda: (r := run_now(run)).steps_done >= steps and r, 90, f"{steps} steps", every=0.05
    )


@pytest.fixture
def dead_worker_run(workers, backbone, snapshot):
    """A PM run, mid-training on a worker that is then killed (its lease still holds it):
    (the run as created, the run as it was when its worker died)."""
    worker = workers()
    run = services.training_run_create(
        kind="pm", snapshot=snapshot, base_model=backbone, config=LONG
    )
    held = training_mid_run(run)
    kill(worker)
    return run, held


def expire_lease(run):
    TrainingRun.objects.filter(pk=run.pk).update(
        lease_expires_at=timezone.now() - timedelta(seconds=1)
    )


@pytest.mark.django_db(transaction=True)
def test_a_run_whose_worker_died_is_taken_over_only_once_its_lease_expired(
    dead_worker_run, workers
):
    run, held = dead_worker_run
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.RUNNING and run.lease_expires_at > timezone.now()

    second = workers()
    # A redelivered task (or a second copy of it) on another worker: the lease is not expired.
    reply = run_training.apply_async([run.pk]).get(timeout=60)
    assert reply == f"skipped: leased by {held.lease_owner}"
    assert sweep_stranded_work()["training_runs"]["requeued"] == []

    expire_lease(run)  # TRAINING_LEASE_S went by without a heartbeat
    assert sweep_stranded_work()["training_runs"]["requeued"] == [run.pk]
    taken = wait_until(
        lambda: (
            (r := run_now(run)).lease_owner not in {"", held.lease_owner}
            and r.steps_done > held.steps_done
            and r
        ),
        90,
        "another worker's lease and steps",
        every=0.05,
    )
    assert taken.status == TrainingRun.Status.RUNNING
    assert f"Task training.run_training[{taken.celery_task_id}] received" in second.output()

    services.training_run_cancel(run=taken)  # the live worker stops it at its next step
    assert run_training.AsyncResult(taken.celery_task_id).get(timeout=60) == "cancelled"
    done = TrainingRun.objects.get(pk=run.pk)
    assert done.status == TrainingRun.Status.CANCELLED and done.lease_owner == ""


@pytest.mark.django_db(transaction=True)
def test_a_cancelled_run_whose_worker_died_ends_cancelled(dead_worker_run, snapshot):
    run, _ = dead_worker_run

    # The worker is dead but its lease has not run out yet: the cancel is recorded, and the
    # sweeper ends the run once the lease expired (no worker will).
    run = services.training_run_cancel(run=run)
    assert run.status == TrainingRun.Status.RUNNING and run.cancel_requested
    assert sweep_stranded_work()["training_runs"]["cancelled"] == []
    expire_lease(run)
    assert sweep_stranded_work()["training_runs"]["cancelled"] == [run.pk]
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.CANCELLED and run.finished_at is not None

    # A task delivered again for such a run ends it too, instead of resuming it; and once the
    # lease has run out, a cancel ends the run at once.
    dead = {"status": TrainingRun.Status.RUNNING, "lease_owner": "dead/1/x"}
    dead["lease_expires_at"] = timezone.now() - timedelta(seconds=1)
    redelivered = TrainingRun.objects.create(kind="pm", snapshot=snapshot, config=LONG, **dead)
    TrainingRun.objects.filter(pk=redelivered.pk).update(cancel_requested=True)
    assert run_training.apply([redelivered.pk]).get() == TrainingRun.Status.CANCELLED
    late = TrainingRun.objects.create(kind="pm", snapshot=snapshot, config=LONG, **dead)
    assert services.training_run_cancel(run=late).status == TrainingRun.Status.CANCELLED
    assert run_training.apply([late.pk]).get() == TrainingRun.Status.CANCELLED


@pytest.mark.django_db(transaction=True)
def test_a_run_launched_while_the_broker_is_down_is_sent_by_the_sweeper(
    backbone,
    snapshot,
    workers,
    broker_down,
    settings,
):
    started = time.monotonic()
    with broker_down():
        run = services.training_run_create(
            kind="pm",
            snapshot=snapshot,
            base_model=backbone,
            config={**TINY_CONFIG, "max_steps": 2},
        )
    assert time.monotonic() - started < 10  # fails fast, does not raise
    run.refresh_from_db()
    assert run.status == TrainingRun.Status.QUEUED and run.celery_task_id == ""

    workers()
    settings.JOBS_ENQUEUE_GRACE_S = 0
    TrainingRun.objects.filter(pk=run.pk).update(created_at=timezone.now() - timedelta(seconds=1))
    assert sweep_stranded_work()["training_runs"]["enqueued"] == [run.pk]
    done = wait_until(lambda: (r := run_now(run)).is_finished and r, 120, "the run", every=0.05)
    assert done.status == TrainingRun.Status.SUCCEEDED, done.error + done.log_tail
    assert done.result_version is not None
