"""Experiment tasks: thin and idempotent; each advance does what can be done now."""

from celery import shared_task

from . import services


@shared_task(name="experiments.advance")
def advance_experiment(experiment_id: int) -> str:
    """Launch the experiment's next training and eval runs, note the ones that ended."""
    return services.experiment_advance(experiment_id=experiment_id).status
