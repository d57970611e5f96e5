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
