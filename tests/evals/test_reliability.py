"""Eval runs are jobs with a lease: one worker at a time, taken back when the worker died,
and a cancel always ends them (issue 12)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from assistant.services import model_version_register
from config.tasks import sweep_stranded_work
from evals import services
from evals.models import EvalRun
from evals.tasks import run_eval

pytestmark = pytest.mark.django_db


@pytest.fixture
def run(tmp_path, django_capture_on_commit_callbacks):
    with django_capture_on_commit_callbacks(execute=False):  # registering queues HHH runs
        pm = model_version_register(kind="pm", name="pm", path=str(tmp_path))
    EvalRun.objects.all().delete()
    return EvalRun.objects.create(suite="hhh", model_version=pm)


def test_a_leased_run_is_not_claimed_again_until_its_lease_expired(run):
    claimed = services.eval_run_claim(eval_run_id=run.pk)
    assert claimed.status == EvalRun.Status.RUNNING and claimed.lease_owner
    assert claimed.lease_expires_at > timezone.now() + timedelta(minutes=10)
    assert services.eval_run_claim(eval_run_id=run.pk) is None
    assert run_eval.apply([run.pk]).get() == f"skipped: leased by {claimed.lease_owner}"
    EvalRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now())
    again = services.eval_run_claim(eval_run_id=run.pk)
    assert again is not None and again.lease_owner != claimed.lease_owner
    # The first worker, back from the dead, cannot end the run it lost.
    late = services.jobs.job_finish(EvalRun, claimed, status=EvalRun.Status.SUCCEEDED)
    assert late.status == EvalRun.Status.RUNNING and late.lease_owner == again.lease_owner


def test_the_sweeper_takes_back_a_dead_workers_run_and_ends_a_cancelled_one(run, settings):
    services.eval_run_claim(eval_run_id=run.pk)
    EvalRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now())
    swept = sweep_stranded_work()["eval_runs"]
    assert swept["requeued"] == [run.pk]
    run.refresh_from_db()
    assert run.status == EvalRun.Status.QUEUED and run.celery_task_id  # sent again

    services.eval_run_claim(eval_run_id=run.pk)
    run = services.eval_run_cancel(run=run)  # its worker is alive: asked, not ended yet
    assert run.status == EvalRun.Status.RUNNING and run.cancel_requested
    EvalRun.objects.filter(pk=run.pk).update(lease_expires_at=timezone.now())
    assert sweep_stranded_work()["eval_runs"]["cancelled"] == [run.pk]
    run.refresh_from_db()
    assert run.status == EvalRun.Status.CANCELLED and run.finished_at
