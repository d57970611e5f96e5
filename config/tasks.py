"""Platform-level tasks."""

from celery import shared_task
from django.db import connection


@shared_task(name="config.worker_health")
def worker_health() -> dict:
    """Report what this worker is connected to: operators (and tests) check it matches the web."""
    from config.celery import app

    with connection.cursor() as cursor:
        cursor.execute("select 1")
    return {
        "database": connection.vendor,
        "database_name": str(connection.settings_dict["NAME"]),
        "broker": app.connection_for_write().transport_cls,
    }


@shared_task(name="config.sweep_stranded_work")
def sweep_stranded_work() -> dict:
    """Recover work no task carries (run every minute by beat): turns, training runs, eval
    runs, import, export and snapshot jobs queued without a live task are sent again, turns
    whose worker went silent are failed (retryable), jobs whose worker's lease expired are
    taken back (or ended, when cancelled), and live experiments are advanced."""
    from collection.export_jobs import export_jobs_sweep
    from collection.generation import turns_sweep
    from collection.imports import import_jobs_sweep
    from collection.snapshot_jobs import snapshot_jobs_sweep
    from evals.services import eval_runs_sweep
    from experiments.services import experiments_sweep
    from training.services import training_runs_sweep

    return {
        "turns": turns_sweep(),
        "training_runs": training_runs_sweep(),
        "eval_runs": eval_runs_sweep(),
        "import_jobs": import_jobs_sweep(),
        "export_jobs": export_jobs_sweep(),
        "snapshot_jobs": snapshot_jobs_sweep(),
        # After the runs' own sweeps: advances every live experiment (launches what is next).
        "experiments": experiments_sweep(),
    }
