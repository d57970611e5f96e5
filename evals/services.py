"""Actions on eval runs, each in one transaction; suites run in a Celery task."""

from __future__ import annotations

import traceback
from pathlib import Path

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import transaction

from assistant import jobs
from assistant.models import ModelVersion
from assistant.uploads import remove_upload
from collection.models import DatasetSnapshot

from . import preference_files
from .models import EvalRun

# The suites each kind of model gets when it is registered.
SUITES_ON_REGISTER = {
    ModelVersion.Kind.PM: [EvalRun.Suite.HHH],
    ModelVersion.Kind.LM: [EvalRun.Suite.HHH, EvalRun.Suite.HHH_UNPROMPTED],
}
# Which suites make sense for which kind of model.
SUITES_FOR_KIND = {
    ModelVersion.Kind.PM: {
        EvalRun.Suite.HHH,
        EvalRun.Suite.HELD_OUT,
        EvalRun.Suite.TRUTHFULQA,
        EvalRun.Suite.PREFERENCE_FILE,
    },
    ModelVersion.Kind.LM: {
        EvalRun.Suite.HHH,
        EvalRun.Suite.HHH_UNPROMPTED,
        EvalRun.Suite.TRUTHFULQA,
        EvalRun.Suite.TOXICITY,
    },
}


# The options a run may set (evals/runner.py reads them), each a whole number in a range: wider
# ones would not make a better eval, only tie a worker up for hours or days.
OPTION_RANGES = {
    "limit": (1, 100_000),  # the first N items of the suite (every suite has fewer)
    "per_category": (1, 10_000),  # HHH: the first N items of each category
    "samples": (1, 16),  # toxicity: samples per prompt
    "max_new_tokens": (1, 1024),  # toxicity: the length of each sample
    "seed": (0, 2**32 - 1),  # toxicity: the sampling seed (what torch and numpy take)
}


def _clean_options(options) -> dict:
    """`options` checked against OPTION_RANGES; a ValidationError on "options" says why not."""
    if options is None:
        return {}
    if not isinstance(options, dict):
        raise ValidationError({"options": 'Give an object of options, e.g. {"limit": 10}.'})
    unknown = sorted(set(options) - set(OPTION_RANGES))
    if unknown:
        raise ValidationError(
            {
                "options": f"unknown options: {', '.join(map(str, unknown))} "
                f"(known: {', '.join(OPTION_RANGES)})"
            }
        )
    for name, value in options.items():
        low, high = OPTION_RANGES[name]
        if type(value) is not int or not low <= value <= high:  # bool is not a number here
            raise ValidationError(
                {"options": f"{name} must be a whole number from {low} to {high}, not {value!r}"}
            )
    return dict(options)


def eval_run_create(
    *,
    suite: str,
    model_version: ModelVersion,
    snapshot: DatasetSnapshot | None = None,
    snapshot_id: int | None = None,
    options: dict | None = None,
    launched_by=None,
    pairs_path: str | None = None,
    pairs_format: str | None = None,
    upload=None,
) -> EvalRun:
    """Validate and queue an eval run; a worker runs it after commit.

    The preference-file suite reads a file: `pairs_path` inside the data roots or an `upload`
    (a Django UploadedFile, kept until the run ends), in `pairs_format` (evals/preference_files.py).
    """
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
    options = _clean_options(options)
    pairs = _pairs_file(suite, pairs_path, pairs_format, upload)  # last: it may store an upload
    try:
        with transaction.atomic():
            run = EvalRun.objects.create(
                suite=suite,
                model_version=model_version,
                snapshot=snapshot,
                options=options,
                launched_by=launched_by,
                **pairs,
            )
            transaction.on_commit(lambda: _queue(run.pk))
    except BaseException:
        if upload is not None:
            remove_upload(pairs["pairs_path"], preference_files.uploads_root())
        raise
    return run


def _pairs_file(suite: str, path: str | None, fmt: str | None, upload) -> dict:
    """The preference file's fields of a new run, checked (`preference_files.check_file`); {}
    for the other suites, which read no file. An upload is stored, and deleted when refused."""
    if suite != EvalRun.Suite.PREFERENCE_FILE:
        if path or fmt or upload is not None:
            raise ValidationError({"pairs_path": f"the {suite} suite reads no preference file"})
        return {}
    if bool(path) == (upload is not None):
        raise ValidationError(
            {"pairs_path": "name a file inside the data roots or upload one (one of the two)"}
        )
    if fmt not in EvalRun.PairsFormat.values:
        known = ", ".join(EvalRun.PairsFormat.values)
        raise ValidationError({"pairs_format": f"unknown format {fmt!r} (use {known})"})
    try:
        if upload is None:
            stored, name = preference_files.named_file(path), str(path)
        else:
            stored, name = preference_files.store(upload), str(upload.name)
        try:
            preference_files.check_file(stored, fmt, Path(name).name)
        except BaseException:
            if upload is not None:
                remove_upload(stored, preference_files.uploads_root())
            raise
    except preference_files.PreferenceFileError as error:
        raise ValidationError({error.field: str(error)}) from None
    return {"pairs_path": str(stored), "pairs_format": fmt, "pairs_name": name[:1000]}


def _queue(eval_run_id: int) -> None:
    from .tasks import run_eval

    # A broker that is down leaves the run queued without a task: the sweeper sends it later.
    jobs.job_enqueue(EvalRun, eval_run_id, run_eval)


def eval_runs_for_new_version(sender, version: ModelVersion, **kwargs) -> list[EvalRun]:
    """Receiver of `model_version_registered`: queue the suites of the new version's kind."""
    return [
        eval_run_create(suite=suite, model_version=version)
        for suite in SUITES_ON_REGISTER[version.kind]
    ]


def eval_run_claim(*, eval_run_id: int, lease_s: int | None = None) -> EvalRun | None:
    """Take a run for this worker with a lease; None when it is finished or cancelled, or
    another worker holds its lease.

    The lease (`EVALS_LEASE_S`) outlasts the eval task's time limit, so no heartbeat is needed:
    once it expired the worker is gone, and the sweeper queues the run again; it runs from the
    start (a suite has no partial state to resume). A caller without that time limit (the
    `run_eval` command) passes a lease long enough for itself.
    """
    if not jobs.job_claim(EvalRun, eval_run_id, lease_s=lease_s or settings.EVALS_LEASE_S):
        return None
    return EvalRun.objects.select_related("model_version", "snapshot").get(pk=eval_run_id)


def eval_run_cancel(*, run: EvalRun) -> EvalRun:
    """Ask a run to stop: a queued run, or one whose worker is gone, is cancelled at once; a
    running one is ended `cancelled` when its suite returns."""
    cancelled = jobs.job_cancel(EvalRun, run)
    preference_files.release(cancelled)  # an upload of a run that ended here
    return cancelled


def eval_runs_sweep() -> dict:
    """Queue again the runs with no live task or an expired lease; end cancelled ones; delete
    the uploads of runs that ended."""
    from .tasks import run_eval

    swept = jobs.job_sweep(EvalRun, run_eval, grace_s=settings.JOBS_ENQUEUE_GRACE_S)
    return {**swept, "uploads_removed": preference_files.release_finished()}


def eval_run_execute(*, run: EvalRun) -> EvalRun:
    """Run the suite and store its results (or why it failed)."""
    finished = _run_and_finish(run)
    preference_files.release(finished)  # an uploaded file is kept only while the run may run
    return finished


def _run_and_finish(run: EvalRun) -> EvalRun:
    from .runner import run_suite

    try:
        results = run_suite(run)
    except Exception as error:  # recorded on the run; the worker goes on
        return jobs.job_finish(
            EvalRun,
            run,
            status=EvalRun.Status.FAILED,
            error=f"{type(error).__name__}: {error}\n\n{traceback.format_exc()[-3000:]}",
        )
    if EvalRun.objects.filter(pk=run.pk, cancel_requested=True).exists():
        return jobs.job_finish(EvalRun, run, status=EvalRun.Status.CANCELLED)
    return jobs.job_finish(EvalRun, run, status=EvalRun.Status.SUCCEEDED, results=results)
