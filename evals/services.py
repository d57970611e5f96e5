"""Actions on eval runs, each in one transaction; suites run in a Celery task."""

from __future__ import annotations

import traceback

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from assistant.models import ModelVersion
from collection.models import DatasetSnapshot

from .models import EvalRun

# The suites each kind of model gets when it is registered.
SUITES_ON_REGISTER = {
    ModelVersion.Kind.PM: [EvalRun.Suite.HHH],
    ModelVersion.Kind.LM: [EvalRun.Suite.HHH, EvalRun.Suite.HHH_UNPROMPTED],
}
# Which suites make sense for which kind of model.
SUITES_FOR_KIND = {
    ModelVersion.Kind.PM: {EvalRun.Suite.HHH, EvalRun.Suite.HELD_OUT, EvalRun.Suite.TRUTHFULQA},
    ModelVersion.Kind.LM: {
        EvalRun.Suite.HHH,
        EvalRun.Suite.HHH_UNPROMPTED,
        EvalRun.Suite.TRUTHFULQA,
        EvalRun.Suite.TOXICITY,
    },
}


def eval_run_create(
    *,
    suite: str,
    model_version: ModelVersion,
    snapshot: DatasetSnapshot | None = None,
    snapshot_id: int | None = None,
    options: dict | None = None,
    launched_by=None,
) -> EvalRun:
    """Validate and queue an eval run; a worker runs it after commit."""
    if snapshot is None and snapshot_id is not None:
        snapshot = DatasetSnapshot.objects.filter(pk=snapshot_id).first()
        if snapshot is None:
            raise ValidationError({"snapshot": f"no dataset snapshot {snapshot_id}"})
    if suite not in EvalRun.Suite.values:
        raise ValidationError({"suite": f"unknown suite {suite!r}; known: {EvalRun.Suite.values}"})
    if suite not in SUITES_FOR_KIND[model_version.kind]:
        raise ValidationError(
            {"suite": f"{suite} does not apply to a {model_version.get_kind_display()}"}
        )
    if suite == EvalRun.Suite.HELD_OUT and snapshot is None:
        raise ValidationError({"snapshot": "held-out comparisons need a dataset snapshot"})
    with transaction.atomic():
        run = EvalRun.objects.create(
            suite=suite,
            model_version=model_version,
            snapshot=snapshot,
            options=options or {},
            launched_by=launched_by,
        )
        transaction.on_commit(lambda: _queue(run.pk))
    return run


def _queue(eval_run_id: int) -> None:
    from .tasks import run_eval

    result = run_eval.delay(eval_run_id)
    EvalRun.objects.filter(pk=eval_run_id).update(celery_task_id=result.id)


def eval_runs_for_new_version(sender, version: ModelVersion, **kwargs) -> list[EvalRun]:
    """Receiver of `model_version_registered`: queue the suites of the new version's kind."""
    return [
        eval_run_create(suite=suite, model_version=version)
        for suite in SUITES_ON_REGISTER[version.kind]
    ]


def eval_run_claim(*, eval_run_id: int) -> EvalRun | None:
    """Take a queued run for this worker; None when it is finished.

    A run left `running` by a worker that was stopped is claimed again when its task is
    redelivered (acks_late) and runs from the start: a suite has no partial state to resume.
    """
    claimed = EvalRun.objects.filter(
        pk=eval_run_id, status__in=[EvalRun.Status.QUEUED, EvalRun.Status.RUNNING]
    ).update(status=EvalRun.Status.RUNNING, started_at=timezone.now())
    if not claimed:
        return None
    return EvalRun.objects.select_related("model_version", "snapshot").get(pk=eval_run_id)


def eval_run_execute(*, run: EvalRun) -> EvalRun:
    """Run the suite and store its results (or why it failed)."""
    from .runner import run_suite

    try:
        results = run_suite(run)
    except Exception as error:  # recorded on the run; the worker goes on
        EvalRun.objects.filter(pk=run.pk).update(
            status=EvalRun.Status.FAILED,
            finished_at=timezone.now(),
            error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc()[-3000:]}",
        )
    else:
        EvalRun.objects.filter(pk=run.pk).update(
            status=EvalRun.Status.SUCCEEDED, results=results, finished_at=timezone.now()
        )
    return EvalRun.objects.get(pk=run.pk)
