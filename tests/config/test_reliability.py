"""The Celery settings that keep work from being stranded or run twice (issue 12)."""

import json
import os
import subprocess
import sys

import pytest
from django.conf import settings

from config.celery import app
from config.tasks import sweep_stranded_work
from tests.conftest import ROOT


def settings_under(broker_url: str) -> dict:
    """The Celery settings a process started with `CELERY_BROKER_URL=broker_url` gets."""
    code = (
        "import json; from django.conf import settings as s; print(json.dumps({"
        "'options': s.CELERY_BROKER_TRANSPORT_OPTIONS, 'limit': s.CELERY_TRAINING_TIME_LIMIT,"
        "'retry': s.CELERY_TASK_PUBLISH_RETRY_POLICY}))"
    )
    env = dict(os.environ, CELERY_BROKER_URL=broker_url, DJANGO_SETTINGS_MODULE="config.settings")
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    return json.loads(out.stdout.strip().splitlines()[-1])


def test_the_redis_visibility_timeout_outlasts_the_training_time_limit():
    redis = settings_under("redis://127.0.0.1:6379/15")
    # Shorter, and Redis would hand a long run's task to a second worker while the first runs.
    assert redis["options"]["visibility_timeout"] > redis["limit"] >= 24 * 3600
    assert redis["retry"]["max_retries"] <= 2  # a broker that is down fails a send in seconds
    if settings.CELERY_BROKER_URL.startswith("redis://"):  # and this process's app has it too
        options = app.conf.broker_transport_options
        assert options["visibility_timeout"] > app.conf.task_time_limit
        assert options["visibility_timeout"] > settings.CELERY_TRAINING_TIME_LIMIT


def test_leases_and_the_generation_timeout_outlast_what_they_guard():
    # Eval suites send no heartbeat: their lease must outlast the task's hard time limit.
    assert settings.EVALS_LEASE_S > settings.CELERY_TASK_TIME_LIMIT
    assert settings.COLLECTION_GENERATION_TIMEOUT_S > settings.CELERY_TASK_TIME_LIMIT
    assert settings.TRAINING_LEASE_S >= 60 and settings.JOBS_ENQUEUE_GRACE_S > 0


@pytest.mark.django_db
def test_the_sweeper_runs_every_minute_from_beat():
    from django_celery_beat.models import PeriodicTask

    task = PeriodicTask.objects.get(task="config.sweep_stranded_work")
    assert task.enabled and (task.interval.every, task.interval.period) == (1, "minutes")
    assert task.queue == "default" and task.task == sweep_stranded_work.name in app.tasks
