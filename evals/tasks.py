"""Eval tasks: thin and idempotent; they claim a row and call a service."""

from celery import shared_task

from . import services


@shared_task(name="evals.run_eval", acks_late=True)
def run_eval(eval_run_id: int) -> str:
    """Run a queued eval run (a redelivered task finds it claimed and does nothing)."""
    run = services.eval_run_claim(eval_run_id=eval_run_id)
    if run is None:
        return "skipped: not queued"
    return services.eval_run_execute(run=run).status
