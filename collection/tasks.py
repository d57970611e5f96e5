"""Collection tasks: thin and idempotent; each calls one action of `collection`."""

from celery import shared_task
from django.conf import settings

from assistant.jobs import job_task

from . import generation


@shared_task(name="collection.generate_responses", acks_late=True)
def generate_responses(turn_id: int) -> str:
    """Sample the k responses of a queued turn (runs on the `generation` queue)."""
    turn = generation.turn_generate(turn_id=turn_id)
    return "skipped: already claimed" if turn is None else turn.status


@job_task(
    "collection.run_import",
    time_limits=(settings.COLLECTION_IMPORT_SOFT_TIME_LIMIT, settings.COLLECTION_IMPORT_TIME_LIMIT),
)
def run_import(job_id: int) -> str:
    """Import a file uploaded from the datasets page (an ImportJob); idempotent: the claim lets
    one task run it, and a file imported before gives its first import."""
    from .imports import import_job_run

    return import_job_run(job_id=job_id)


# An export's time limits are the import's: a million pairs take well under a minute.
@job_task(
    "collection.run_export",
    time_limits=(settings.COLLECTION_IMPORT_SOFT_TIME_LIMIT, settings.COLLECTION_IMPORT_TIME_LIMIT),
)
def run_export(job_id: int) -> str:
    """Write a snapshot's export to a file (an ExportJob); idempotent: the claim lets one task
    run it, and a finished job is not written again."""
    from .export_jobs import export_job_run

    return export_job_run(job_id=job_id)


@shared_task(name="collection.refresh_quality")
def refresh_quality() -> dict:
    """Recompute the quality page's summaries (beat, every few minutes); idempotent: each run
    replaces them."""
    from .quality_summaries import quality_summaries_refresh

    return quality_summaries_refresh()


@job_task(
    "collection.run_snapshot",
    time_limits=(settings.COLLECTION_IMPORT_SOFT_TIME_LIMIT, settings.COLLECTION_IMPORT_TIME_LIMIT),
)
def run_snapshot(job_id: int) -> str:
    """Make a snapshot too big for a request (a SnapshotJob); idempotent: the claim lets one
    task run it, and the job ends in the transaction that stores its snapshot."""
    from .snapshot_jobs import snapshot_job_run

    return snapshot_job_run(job_id=job_id)
