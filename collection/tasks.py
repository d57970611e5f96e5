"""Collection tasks: thin, idempotent, they call services."""

from celery import shared_task

from . import services


@shared_task(name="collection.generate_responses", acks_late=True)
def generate_responses(turn_id: int) -> str:
    """Sample the k responses of a queued turn (runs on the `generation` queue)."""
    turn = services.turn_generate(turn_id=turn_id)
    return "skipped: already claimed" if turn is None else turn.status


@shared_task(name="collection.run_import", acks_late=True)
def run_import(job_id: int) -> str:
    """Import a file uploaded from the datasets page (an ImportJob); idempotent: the claim lets
    one task run it, and a file imported before gives its first import."""
    from .imports import import_job_run

    return import_job_run(job_id=job_id)
