"""Actions on training runs, each in one transaction; the heavy work runs in a Celery task.

The run's lifecycle: create (validated, queued after commit), claim, progress (the heartbeat,
the log, the metric history), cancel, finish, and `training_run_execute`, which trains
(training/trainers.py) and registers the result (training/registration.py). The periodic
retrain is training/retrain.py.
"""

from __future__ import annotations

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from assistant import jobs
from assistant.hardware import bf16_warning
from assistant.models import ModelVersion, PromptTemplate
from collection.models import DatasetSnapshot

from .config import DistillationConfig, PMPConfig, PreferenceTrainingConfig, RunConfig
from .formatting import format_log_line
from .models import TrainingRun
from .pmp_sources import pmp_sources_confined

LOG_TAIL_CHARS = 4000
# Training steps kept in a run's metric history besides its evaluations and last step.
CHART_POINTS = 100
# The loss each kind trains with; all but PMP and distillation use PreferenceTrainingConfig.
KIND_LOSS = {
    TrainingRun.Kind.PM: "ranked",
    TrainingRun.Kind.PM_BINARY: "binary",
    TrainingRun.Kind.IMITATION: "imitation",
}
# The prompt a distillation run distils when none is named: the latest version of this one.
DEFAULT_DISTILLATION_PROMPT = "hhh"


def config_for_kind(kind: str, values: dict) -> RunConfig:
    """The kind's config dataclass from stored or submitted values (unknown keys: ValueError)."""
    if not isinstance(values, dict):  # a string, a list or a number from a hostile client
        raise ValueError(f"a config is a JSON object of settings, not {type(values).__name__}")
    if kind == TrainingRun.Kind.PMP:
        return PMPConfig.from_dict(values)
    if kind == TrainingRun.Kind.DISTILL:
        return DistillationConfig.from_dict(values)
    loss = values.get("loss", KIND_LOSS[kind])
    if loss != KIND_LOSS[kind]:
        raise ValueError(f"a {kind} run trains with loss={KIND_LOSS[kind]!r}, not {loss!r}")
    return PreferenceTrainingConfig.from_dict({**values, "loss": loss})


def training_run_create(
    *,
    kind: str,
    launched_by=None,
    base_model: ModelVersion | None = None,
    snapshot: DatasetSnapshot | None = None,
    pmp_sources: list | None = None,
    prompt: PromptTemplate | None = None,
    config: dict | None = None,
) -> TrainingRun:
    """Validate and queue a training run; the worker picks it up after commit.

    Context distillation distils `prompt`, by default the latest version of the HHH prompt.
    """
    from assistant.selectors import prompt_latest

    if kind not in TrainingRun.Kind.values:
        raise ValidationError({"kind": f"unknown kind {kind!r}"})
    if kind == TrainingRun.Kind.PMP:
        if not pmp_sources:
            raise ValidationError({"pmp_sources": "preference-model pre-training needs sources"})
        try:  # a worker reads these files: a request may name them only inside the data roots
            pmp_sources = pmp_sources_confined(pmp_sources, roots=settings.ALIGNLAB_DATA_ROOTS)
        except ValueError as error:
            raise ValidationError({"pmp_sources": str(error)}) from None
    elif snapshot is None:
        raise ValidationError({"snapshot": "this kind trains on a dataset snapshot"})
    if kind == TrainingRun.Kind.DISTILL:
        prompt = prompt or prompt_latest(name=DEFAULT_DISTILLATION_PROMPT)
        if prompt is None:
            raise ValidationError({"prompt": "context distillation needs a prompt to distil"})
        if base_model is not None and base_model.kind != ModelVersion.Kind.LM:
            raise ValidationError({"base_model": "context distillation trains a language model"})
    elif prompt is not None:
        raise ValidationError({"prompt": "only context distillation reads a prompt"})
    if base_model is not None and base_model.backend != ModelVersion.Backend.TRANSFORMERS:
        raise ValidationError(
            {"base_model": f"{base_model} is served over HTTP; training needs a local model folder"}
        )
    if (
        kind == TrainingRun.Kind.IMITATION
        and base_model
        and base_model.kind != ModelVersion.Kind.LM
    ):
        raise ValidationError({"base_model": "imitation learning trains a language model"})
    try:
        checked = config_for_kind(kind, config or {})
    except (TypeError, ValueError) as error:
        raise ValidationError({"config": str(error)}) from None
    with transaction.atomic():
        run = TrainingRun.objects.create(
            kind=kind,
            base_model=base_model,
            snapshot=snapshot,
            pmp_sources=pmp_sources or [],
            prompt=prompt,
            config=checked.to_dict(),
            launched_by=launched_by,
        )
        transaction.on_commit(lambda: _queue(run.pk))
    return run


def _queue(run_id: int) -> None:
    from .tasks import run_training

    # A broker that is down leaves the run queued without a task: the sweeper sends it later.
    jobs.job_enqueue(TrainingRun, run_id, run_training)


def training_run_cancel(*, run: TrainingRun) -> TrainingRun:
    """Ask a run to stop: a queued run, or one whose worker is gone (its lease expired), is
    cancelled at once; a running one at its next step."""
    return jobs.job_cancel(TrainingRun, run)


def training_run_claim(*, run_id: int) -> TrainingRun | None:
    """Take a run for this worker with a lease; None when it is finished or cancelled, or
    another worker holds its lease.

    A run left `running` by a worker that died is claimed again once its lease expired (the
    sweeper queues it again) and resumes from its last checkpoint.
    """
    return jobs.job_claim(TrainingRun, run_id, lease_s=settings.TRAINING_LEASE_S)


def training_runs_sweep() -> dict:
    """Queue again the runs with no live task or an expired lease; end cancelled ones."""
    from .tasks import run_training

    return jobs.job_sweep(TrainingRun, run_training, grace_s=settings.JOBS_ENQUEUE_GRACE_S)


def training_run_progress(
    *,
    run_id: int,
    steps_done: int,
    steps_total: int,
    metrics: dict | None,
    log_line: str = "",
    lease_owner: str = "",
) -> bool:
    """Record progress; returns True when the run has been asked to stop.

    With `lease_owner` (the worker running it) it is also the heartbeat that renews the run's
    lease, and True too when that worker lost the lease (the run was taken over or ended).
    Called every step, so without metrics or a log line it is two small queries.
    """
    wanted = [
        "cancel_requested",
        *(["metrics"] if metrics else []),
        *(["log_tail"] if log_line else []),
    ]
    run = TrainingRun.objects.only(*wanted).get(pk=run_id)
    fields = {"steps_done": steps_done, "steps_total": steps_total}
    if metrics:
        fields["metrics"] = [*run.metrics, {"step": steps_done, **metrics}]
    if log_line:
        fields["log_tail"] = (run.log_tail + log_line.rstrip() + "\n")[-LOG_TAIL_CHARS:]
    if lease_owner:
        run.pk, run.lease_owner = run_id, lease_owner
        held = jobs.job_heartbeat(TrainingRun, run, lease_s=settings.TRAINING_LEASE_S, **fields)
        return run.cancel_requested or not held
    TrainingRun.objects.filter(pk=run_id).update(**fields)
    return run.cancel_requested


def training_run_finish(
    *,
    run: TrainingRun,
    status: str,
    error: str = "",
    artifact_path: str = "",
    result_version: ModelVersion | None = None,
    promotion: dict | None = None,
) -> TrainingRun:
    """End a claimed run, if its worker still holds the lease; the run as it is now."""
    return jobs.job_finish(
        TrainingRun,
        run,
        status=status,
        error=error,
        artifact_path=artifact_path,
        result_version=result_version,
        promotion=promotion or {},
    )


def training_run_execute(*, run: TrainingRun) -> TrainingRun:
    """Train, save the artifact atomically, register the model version, decide promotion.

    Called by the task after it claimed the run. Checkpoints live in the run's folder, so a
    redelivered task resumes where the dead worker stopped.
    """
    import time
    import traceback

    config = config_for_kind(run.kind, run.config)
    if warning := bf16_warning(config.bf16):  # explicit bf16 where the device only emulates it
        training_run_progress(
            run_id=run.pk,
            steps_done=run.steps_done,
            steps_total=run.steps_total,
            metrics=None,
            log_line=warning,
        )
    last_poll = {"logged_at": 0.0, "stop": False}

    def on_step(step: int, total: int, metrics: dict) -> None:
        # Every step: its count, and the cancel flag read back (a cancel stops the next step).
        # The log takes a line per ~2 s (and each evaluation and the last step).
        evaluated = any(key.startswith("eval_") for key in metrics)
        line = ""
        if evaluated or step == total or time.monotonic() - last_poll["logged_at"] > 2:
            last_poll["logged_at"] = time.monotonic()
            line = format_log_line(step, total, metrics)
        # The history (the run page's chart and table) takes evaluations, the last step and
        # about a hundred evenly spaced steps.
        sampled = step % max(1, total // CHART_POINTS) == 0
        last_poll["stop"] = training_run_progress(
            run_id=run.pk,
            steps_done=step,
            steps_total=total,
            metrics=metrics if evaluated or sampled or step == total else None,
            log_line=line,
            lease_owner=run.lease_owner,
        )

    def should_stop() -> bool:
        return last_poll["stop"]

    from .registration import register_result
    from .trainers import distil, train_preference

    train = distil if run.kind == TrainingRun.Kind.DISTILL else train_preference
    try:
        trained = train(run, config, on_step=on_step, should_stop=should_stop)
    except Exception as error:  # the run records why it failed; the worker goes on
        training_run_progress(
            run_id=run.pk,
            steps_done=run.steps_done,
            steps_total=run.steps_total,
            metrics=None,
            log_line=traceback.format_exc(),
        )
        return training_run_finish(
            run=run, status=TrainingRun.Status.FAILED, error=f"{type(error).__name__}: {error}"
        )
    if trained.result.status == "cancelled":  # asked to, or the lease went to another worker
        return training_run_finish(run=run, status=TrainingRun.Status.CANCELLED)
    # Saving, registering and the promotion check take a while: renew the lease first.
    if not jobs.job_heartbeat(TrainingRun, run, lease_s=settings.TRAINING_LEASE_S):
        return TrainingRun.objects.get(pk=run.pk)  # taken over or ended meanwhile
    version, promotion = register_result(run, trained, config)
    return training_run_finish(
        run=run,
        status=TrainingRun.Status.SUCCEEDED,
        artifact_path=version.path,
        result_version=version,
        promotion=promotion,
    )
