"""Training tasks: thin and idempotent; they claim a row and call a service."""

from celery import shared_task
from django.conf import settings

from assistant import jobs

from . import retrain, services
from .models import TrainingRun


@jobs.job_task(
    "training.run_training",
    time_limits=(settings.CELERY_TRAINING_SOFT_TIME_LIMIT, settings.CELERY_TRAINING_TIME_LIMIT),
)
def run_training(run_id: int) -> str:
    """Run a queued training run (or resume one whose worker's lease expired) to its end."""
    run = services.training_run_claim(run_id=run_id)
    if run is None:  # finished, cancelled (a cancel is honoured here), or another worker's
        return jobs.job_skip_reason(TrainingRun, run_id)
    return services.training_run_execute(run=run).status


@shared_task(name="training.retrain_if_enough_new_data")
def retrain_if_enough_new_data(min_new_judgements: int = 200) -> str:
    """The periodic retrain: snapshot and launch a PM run when enough new judgements exist."""
    run = retrain.retrain_if_enough_new_data(min_new_judgements=min_new_judgements)
    return f"launched run {run.pk}" if run else "not enough new data"
