"""The periodic retrain: every hour, retrain the PM if enough new judgements arrived.

An ordinary django-celery-beat schedule, so admins change its interval, its threshold
(`min_new_judgements` in the kwargs) or disable it in the admin under "Periodic tasks".
"""

import json

from django.db import migrations

TASK_NAME = "Retrain the preference model when enough new data arrived"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    hourly, _ = IntervalSchedule.objects.get_or_create(every=1, period="hours")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "training.retrain_if_enough_new_data",
            "interval": hourly,
            "kwargs": json.dumps({"min_new_judgements": 200}),
            "queue": "training",
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("training", "0001_training_runs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]
    operations = [migrations.RunPython(add_schedule, remove_schedule)]
