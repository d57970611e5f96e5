"""Elo summaries, and their schedule: every 5 minutes, evals.refresh_elo recounts the games of
the Elo page and API (an ordinary django-celery-beat entry that admins can edit)."""

from django.db import migrations, models

TASK_NAME = "Recount the Elo page's games"


def add_schedule(apps, schema_editor):
    IntervalSchedule = apps.get_model("django_celery_beat", "IntervalSchedule")
    PeriodicTask = apps.get_model("django_celery_beat", "PeriodicTask")
    every_5_minutes, _ = IntervalSchedule.objects.get_or_create(every=5, period="minutes")
    PeriodicTask.objects.get_or_create(
        name=TASK_NAME,
        defaults={
            "task": "evals.refresh_elo",
            "interval": every_5_minutes,
            "queue": "default",
            # A refresh nobody ran in time is dropped: the next one counts the same games.
            "expire_seconds": 300,
            "enabled": True,
        },
    )


def remove_schedule(apps, schema_editor):
    apps.get_model("django_celery_beat", "PeriodicTask").objects.filter(name=TASK_NAME).delete()


class Migration(migrations.Migration):
    dependencies = [
        ("evals", "0003_preference_file"),
        ("django_celery_beat", "0019_alter_periodictasks_options"),
    ]

    operations = [
        migrations.CreateModel(
            name="EloSummary",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("key", models.CharField(default="all", max_length=20, unique=True)),
                ("cells", models.JSONField(default=list)),
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
