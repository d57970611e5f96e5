"""Actions on experiments, each in one transaction: create (validated, its cells planned),
advance (idempotent: launch what is next, notice what ended), cancel (as a whole), sweep.

Advancing walks the cells in order. A cell with no training run borrows the live run of any
cell (of any experiment) with the same plan hash, or launches an ordinary `TrainingRun`; once
the run succeeded its model version gets the cell's `EvalRun`s (an existing run of the same
suite, options and snapshot on that version is reused); when they ended the cell is final,
and when every cell is, so is the experiment. Nothing here waits: each advance does what can
be done now and returns, and runs as a Celery task whenever a cell's run ends
(`on_job_finished`) and every minute from the sweeper (`experiments_sweep`), so an advance lost
with its worker is done again by the next one.
"""

from __future__ import annotations

import logging

from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from assistant import jobs
from assistant.models import ModelVersion, PromptTemplate
from collection.models import DatasetSnapshot
from evals import services as evals
from evals.models import EvalRun
from training import services as training
from training.models import TrainingRun

from . import spec as specs
from .models import Experiment, ExperimentCell, ExperimentEval

logger = logging.getLogger(__name__)
Cell = ExperimentCell
LIVE = (jobs.JobStatus.QUEUED, jobs.JobStatus.RUNNING, jobs.JobStatus.SUCCEEDED)


class _Raced(Exception):
    """Another advance linked the cell first: roll back what this one made."""


def validate_spec(data) -> dict:
    """The validated spec, or a ValidationError whose messages name each bad field by path."""
    serializer = specs.ExperimentSpecSerializer(data=data)
    if not serializer.is_valid():
        raise ValidationError(specs.spec_errors_text(serializer.errors))
    return serializer.validated_data


def _plan(cell: dict, spec: dict, pretrain: dict[int, Cell]) -> tuple[dict, Cell | None]:
    """What the cell trains (the plan its hash is of) and the cell it waits for."""
    from assistant.selectors import prompt_latest

    kind = specs.CONDITION_KINDS.get(cell["kind"], (TrainingRun.Kind.PMP,))[0]
    backbone = specs.resolve_backbone(str(cell["backbone"]))
    plan = {"kind": kind, "base": backbone.pk, "config": cell["config"]}
    depends_on = None
    if cell["kind"] == "pmp":
        plan["pmp_sources"] = spec["pmp"]["sources"]
    elif cell["kind"] == "pmp_finetune":
        depends_on = pretrain[cell["seed"]]
        plan["base"] = {"pretrained": depends_on.spec_hash}
    elif cell["kind"] == "distill":
        prompt = prompt_latest(name=training.DEFAULT_DISTILLATION_PROMPT)
        if prompt is None:
            raise ValidationError("context distillation needs the HHH prompt (none is stored)")
        plan["prompt"] = prompt.pk
    elif cell["kind"] == "base":
        plan = {"kind": None, "base": backbone.pk}
    if kind is not None:  # the run's own check of the config, now, not in the worker
        plan["config"] = training.config_for_kind(kind, cell["config"]).to_dict()
    return plan, depends_on


def experiment_create(*, data, launched_by=None) -> Experiment:
    """Validate a definition, plan its cells and queue its first advance after commit."""
    spec = validate_spec(data)
    snapshot = DatasetSnapshot.objects.get(pk=spec["snapshot"])
    with transaction.atomic():
        experiment = Experiment.objects.create(
            name=spec["name"], spec=spec, snapshot=snapshot, launched_by=launched_by
        )
        pretrain: dict[int, Cell] = {}
        for cell in specs.grid(spec):
            try:
                plan, depends_on = _plan(cell, spec, pretrain)
            except ValueError as error:
                raise ValidationError(f"{cell['condition']}: {error}") from None
            data_snapshot = None if cell["kind"] == "pmp" else snapshot
            row = Cell.objects.create(
                experiment=experiment,
                condition=cell["condition"],
                kind=cell["kind"],
                size=cell["size"],
                seed=cell["seed"],
                plan=plan,
                spec_hash=specs.plan_hash(plan, data_snapshot if plan["kind"] else None),
                depends_on=depends_on,
                model_version_id=plan["base"] if cell["kind"] == "base" else None,
            )
            if cell["kind"] == "pmp":
                pretrain[cell["seed"]] = row
            for suite in cell["evals"]:
                ExperimentEval.objects.create(
                    cell=row, suite=suite, options=specs.eval_options(spec, suite)
                )
        experiment.cells_total = experiment.cells.count()
        experiment.save(update_fields=["cells_total"])
        transaction.on_commit(lambda: queue_advance(experiment.pk))
    return experiment


def queue_advance(experiment_id: int) -> None:
    from .tasks import advance_experiment

    # A broker that is down loses nothing: the sweeper advances every live experiment. The
    # latest advance's task id is kept on the row (for the worker's log); advances take no
    # lease: each is short, and every change it makes is a conditional update, so two at once
    # launch nothing twice.
    task_id = jobs.enqueue_safely(advance_experiment, experiment_id)
    if task_id:
        Experiment.objects.filter(pk=experiment_id).update(celery_task_id=task_id)


def _launch(cell: Cell) -> None:
    """Link the cell to a live run of the same plan, or launch one (in one transaction)."""
    borrowed = (
        Cell.objects.filter(spec_hash=cell.spec_hash, training_run__status__in=LIVE)
        .exclude(pk=cell.pk)
        .values_list("training_run_id", flat=True)
        .first()
    )
    with transaction.atomic():
        if borrowed:
            run_id, reused = borrowed, True
        else:
            run_id, reused = _create_run(cell).pk, False
        if not Cell.objects.filter(pk=cell.pk, training_run__isnull=True).update(
            training_run_id=run_id, reused=reused, status=Cell.Status.TRAINING
        ):
            raise _Raced


def _create_run(cell: Cell) -> TrainingRun:
    plan, experiment = cell.plan, cell.experiment
    base = plan["base"]
    if isinstance(base, dict):  # finetune from the pre-trained PM of the cell it depends on
        base = cell.depends_on.model_version_id
    return training.training_run_create(
        kind=plan["kind"],
        launched_by=experiment.launched_by,
        base_model=ModelVersion.objects.get(pk=base),
        snapshot=None if plan["kind"] == TrainingRun.Kind.PMP else experiment.snapshot,
        pmp_sources=plan.get("pmp_sources"),
        prompt=PromptTemplate.objects.get(pk=plan["prompt"]) if plan.get("prompt") else None,
        config=plan["config"],
    )


def _end_cell(cell: Cell, status: str, error: str = "") -> None:
    Cell.objects.filter(pk=cell.pk).exclude(status__in=Cell.FINAL).update(
        status=status, error=error
    )


def _advance_training(cell: Cell) -> bool:
    """Move the cell's training on; True once it has a model version to evaluate."""
    if cell.model_version_id:
        return True
    if cell.training_run_id is None:
        if cell.depends_on_id:
            parent = Cell.objects.get(pk=cell.depends_on_id)
            if parent.status in (Cell.Status.FAILED, Cell.Status.CANCELLED):
                _end_cell(cell, Cell.Status.FAILED, f"its {parent.condition} cell {parent.status}")
                return False
            if parent.model_version_id is None:
                return False  # waits for the pre-training
            cell.depends_on = parent
        try:
            _launch(cell)
        except _Raced:
            pass
        except ValidationError as error:
            _end_cell(cell, Cell.Status.FAILED, "; ".join(error.messages))
            return False
        # A borrowed run may have ended already: no signal will come for it, look now.
        cell.training_run_id = Cell.objects.values_list("training_run_id", flat=True).get(
            pk=cell.pk
        )
    run = TrainingRun.objects.only("status", "error", "result_version").get(pk=cell.training_run_id)
    if run.status == TrainingRun.Status.SUCCEEDED:
        Cell.objects.filter(pk=cell.pk, model_version__isnull=True).update(
            model_version_id=run.result_version_id, status=Cell.Status.EVALUATING
        )
        cell.model_version_id = run.result_version_id
        return True
    if run.status in (TrainingRun.Status.FAILED, TrainingRun.Status.CANCELLED):
        _end_cell(cell, Cell.Status.FAILED, f"training run {run.pk} {run.status}: {run.error}")
    return False


def _reusable_eval(cell: Cell, wanted: ExperimentEval) -> EvalRun | None:
    snapshot_id = cell.experiment.snapshot_id if wanted.suite == EvalRun.Suite.HELD_OUT else None
    runs = EvalRun.objects.filter(
        model_version_id=cell.model_version_id,
        suite=wanted.suite,
        snapshot_id=snapshot_id,
        status__in=LIVE,
    ).only("options")
    return next((run for run in runs.order_by("pk") if run.options == wanted.options), None)


def _advance_evals(cell: Cell) -> None:
    """Give each of the cell's evals a run; end the cell once they all ended."""
    statuses = []
    for wanted in cell.evals.select_related("eval_run"):
        if wanted.eval_run is None:
            with transaction.atomic():
                run = _reusable_eval(cell, wanted) or evals.eval_run_create(
                    suite=wanted.suite,
                    model_version=ModelVersion.objects.get(pk=cell.model_version_id),
                    snapshot=cell.experiment.snapshot if wanted.suite == "held_out" else None,
                    options=wanted.options,
                    launched_by=cell.experiment.launched_by,
                )
                if not ExperimentEval.objects.filter(pk=wanted.pk, eval_run__isnull=True).update(
                    eval_run=run
                ):
                    transaction.set_rollback(True)
                    run.status = jobs.JobStatus.QUEUED  # the other advance's run: not ended
            statuses.append(run.status)  # a reused run may have ended: no signal will come
        else:
            statuses.append(wanted.eval_run.status)
    Cell.objects.filter(pk=cell.pk, status=Cell.Status.PENDING).update(
        status=Cell.Status.EVALUATING
    )
    if all(status in jobs.FINISHED for status in statuses):
        bad = [s for s in statuses if s != jobs.JobStatus.SUCCEEDED]
        if bad:
            _end_cell(cell, Cell.Status.FAILED, f"{len(bad)} eval run(s) did not succeed")
        else:
            _end_cell(cell, Cell.Status.SUCCEEDED)


def experiment_advance(*, experiment_id: int) -> Experiment:
    """Do whatever can be done now for the experiment (idempotent); the experiment as it is."""
    now = timezone.now()
    Experiment.objects.filter(pk=experiment_id, status=Experiment.Status.QUEUED).update(
        status=Experiment.Status.RUNNING, started_at=now
    )
    experiment = Experiment.objects.get(pk=experiment_id)
    if experiment.status != Experiment.Status.RUNNING or experiment.cancel_requested:
        return experiment
    cells = experiment.cells.exclude(status__in=Cell.FINAL).select_related("experiment")
    for cell in cells:
        if _advance_training(cell):
            _advance_evals(cell)
    return _settle(experiment)


def _settle(experiment: Experiment) -> Experiment:
    """Write the progress; end the experiment once every cell is final."""
    cells = list(experiment.cells.values_list("status", "condition", "size", "seed", "error"))
    done = sum(status in Cell.FINAL for status, *_ in cells)
    Experiment.objects.filter(pk=experiment.pk).update(cells_done=done)
    if done == len(cells):
        failed = [c for c in cells if c[0] != Cell.Status.SUCCEEDED]
        error = "; ".join(
            f"{condition} @ {size or 'all'} seed {seed}: {why}"
            for _, condition, size, seed, why in failed
        )
        Experiment.objects.filter(pk=experiment.pk, status=Experiment.Status.RUNNING).update(
            status=Experiment.Status.FAILED if failed else Experiment.Status.SUCCEEDED,
            error=error[:10_000],
            finished_at=timezone.now(),
        )
    return Experiment.objects.get(pk=experiment.pk)


def _runs_used_elsewhere(experiment: Experiment) -> tuple[set[int], set[int]]:
    """(training run ids, eval run ids) that live experiments other than this one also use:
    a cancel leaves those running."""
    others = Experiment.objects.filter(
        status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING]
    ).exclude(pk=experiment.pk)
    training_ids = Cell.objects.filter(experiment__in=others).values_list(
        "training_run_id", flat=True
    )
    eval_ids = ExperimentEval.objects.filter(cell__experiment__in=others).values_list(
        "eval_run_id", flat=True
    )
    return set(training_ids) - {None}, set(eval_ids) - {None}


def experiment_cancel(*, experiment: Experiment) -> Experiment:
    """Cancel the experiment as a whole: its unfinished cells, and the training and eval runs
    they started (those another live experiment also uses go on)."""
    with transaction.atomic():
        Experiment.objects.filter(
            pk=experiment.pk, status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING]
        ).update(
            status=Experiment.Status.CANCELLED,
            cancel_requested=True,
            finished_at=timezone.now(),
        )
        cells = experiment.cells.exclude(status__in=Cell.FINAL)
        shared_training, shared_evals = _runs_used_elsewhere(experiment)
        for run in TrainingRun.objects.filter(
            pk__in=cells.values("training_run_id"), status__in=LIVE[:2]
        ).exclude(pk__in=shared_training):
            training.training_run_cancel(run=run)
        for run in EvalRun.objects.filter(
            pk__in=ExperimentEval.objects.filter(cell__in=cells).values("eval_run_id"),
            status__in=LIVE[:2],
        ).exclude(pk__in=shared_evals):
            evals.eval_run_cancel(run=run)
        cells.update(status=Cell.Status.CANCELLED)
    return Experiment.objects.get(pk=experiment.pk)


def experiments_of_job(model, job_id: int) -> list[int]:
    """The live experiments a training or eval run belongs to."""
    if model is TrainingRun:
        cells = Cell.objects.filter(training_run_id=job_id)
    elif model is EvalRun:
        cells = Cell.objects.filter(evals__eval_run_id=job_id)
    else:
        return []
    return list(
        cells.filter(experiment__status=Experiment.Status.RUNNING)
        .values_list("experiment_id", flat=True)
        .distinct()
    )


def on_job_finished(sender, job_id: int, **kwargs) -> None:
    """Receiver of `assistant.jobs.job_finished`: advance the experiments the run is part of."""
    for experiment_id in experiments_of_job(sender, job_id):
        queue_advance(experiment_id)


def experiments_sweep() -> list[int]:
    """Advance every live experiment (from the sweeper, every minute): resumes one whose
    advance task was lost; the ids advanced."""
    advanced = []
    live = Experiment.objects.filter(
        status__in=[Experiment.Status.QUEUED, Experiment.Status.RUNNING], cancel_requested=False
    )
    for experiment_id in live.values_list("pk", flat=True):
        try:
            experiment_advance(experiment_id=experiment_id)
            advanced.append(experiment_id)
        except Exception:  # one broken experiment must not stop the others' sweep
            logger.exception("experiment %s: advance failed", experiment_id)
    return advanced
