"""Run an experiment in this process, without a worker: advance it, then claim and execute its
next queued training or eval run here, until it ends (`manage.py experiment run --inline`,
`manage.py repro`). Each run is claimed like a worker claims it, so a worker running beside
it takes the others and nothing runs twice."""

from __future__ import annotations

import time
from collections.abc import Callable

from django.conf import settings
from django.db.models import Q
from django.utils import timezone

from evals import services as evals
from evals.models import EvalRun
from training import services as training
from training.models import TrainingRun

from . import services
from .models import Experiment, ExperimentCell, ExperimentEval


def _claimable() -> Q:
    """Queued, or running with an expired lease (its process died: resume it here)."""
    return Q(status=TrainingRun.Status.QUEUED) | Q(
        status=TrainingRun.Status.RUNNING, lease_expires_at__lt=timezone.now()
    )


def _next_queued(experiment: Experiment):
    cells = ExperimentCell.objects.filter(experiment=experiment)
    run = (
        TrainingRun.objects.filter(_claimable(), pk__in=cells.values("training_run_id"))
        .order_by("pk")
        .first()
    )
    if run is not None:
        return run
    return (
        EvalRun.objects.filter(
            _claimable(),
            pk__in=ExperimentEval.objects.filter(cell__in=cells).values("eval_run_id"),
        )
        .order_by("pk")
        .first()
    )


def _execute(job, say: Callable[[str], None]) -> None:
    started, cpu = time.monotonic(), time.process_time()
    if isinstance(job, TrainingRun):
        claimed = training.training_run_claim(run_id=job.pk)
        if claimed is not None:
            job = training.training_run_execute(run=claimed)
    else:
        claimed = evals.eval_run_claim(eval_run_id=job.pk, lease_s=settings.TRAINING_LEASE_S)
        if claimed is not None:
            job = evals.eval_run_execute(run=claimed)
    if claimed is not None:
        say(
            f"  {job}: {job.status} in {time.monotonic() - started:.0f} s "
            f"({time.process_time() - cpu:.0f} s CPU)"
            + (f" ({job.error.splitlines()[0]})" if job.error else "")
        )


def run_inline(experiment: Experiment, say: Callable[[str], None] = print) -> Experiment:
    """Drive `experiment` to its end here; the experiment as it ended."""
    while True:
        experiment = services.experiment_advance(experiment_id=experiment.pk)
        if experiment.is_finished:
            return experiment
        job = _next_queued(experiment)
        if job is None:  # everything left runs on a worker (or waits for one): look again soon
            time.sleep(2)
            continue
        _execute(job, say)
