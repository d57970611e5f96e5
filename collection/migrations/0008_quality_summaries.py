"""Quality summaries, and their schedule: every 5 minutes, collection.refresh_quality recomputes
the quality page's numbers (an ordinary django-celery-beat entry that admins can edit)."""

from django.db import migrations, models

TASK_NAME = "Recompute the quality page's numbers"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_5_minutes, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "collection.refresh_quality",
            "interval": every_5_minutes,
            "queue": "default",
            # A refresh nobody ran in time is dropped: the next one computes the same numbers.
            "expire_seconds": 300,
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("collection", "0007_export_jobs"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="QualitySummary",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("scope", models.CharField(max_length=40, unique=True)),
                ("contractors", models.JSONField(default=list)),
                ("agreement", models.JSONField(blank=True, null=True)),
                ("last_judgement_id", models.PositiveBigIntegerField(default=0)),
                ("computed_at", models.DateTimeField()),
                (
                    "seconds",
                    models.FloatField(default=0.0, help_text="How long computing it took."),
                ),
            ],
        ),
        migrations.RunPython(add_schedule, remove_schedule),
    ]
