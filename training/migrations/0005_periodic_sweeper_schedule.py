"""The sweeper: every minute, recover stranded work (config.sweep_stranded_work).

Queued turns and runs no task carries are sent again, turns whose worker went silent are
failed (retryable), runs whose worker's lease expired are taken back or ended. Kept here, next
to the retrain schedule, as an ordinary django-celery-beat entry that admins can edit.
"""

from django.db import migrations

TASK_NAME = "Recover stranded work (queued without a task, workers that died)"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_minute, _ = IntervalSchedule.objects.get_or_create(every=1, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "config.sweep_stranded_work",
            "interval": every_minute,
            "queue": "default",
            # A sweep nobody ran within its minute is dropped: the next one does the same work.
            "expire_seconds": 60,
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0004_training_run_leases"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
