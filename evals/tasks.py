"""Eval tasks: thin and idempotent; they claim a row and call a service."""

from celery import shared_task

from assistant import jobs

from . import services
from .models import EvalRun


@jobs.job_task("evals.run_eval")
def run_eval(eval_run_id: int) -> str:
    """Run a queued eval run (a redelivered task finds it leased or finished, and skips it)."""
    run = services.eval_run_claim(eval_run_id=eval_run_id)
    if run is None:  # finished, cancelled, or another worker holds its lease
        return jobs.job_skip_reason(EvalRun, eval_run_id)
    return services.eval_run_execute(run=run).status


@shared_task(name="evals.refresh_elo")
def refresh_elo() -> dict:
    """Recount the Elo page's games (beat, every few minutes); idempotent: each run replaces
    them."""
    from .arm_elo import elo_summary_refresh

    summary = elo_summary_refresh()
    return {"cells": len(summary.cells), "seconds": round(summary.seconds, 3)}
