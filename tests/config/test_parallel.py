"""tests/parallel.py: what each pytest-xdist worker is given (its own var/ and Redis database,
one shared default-model folder), and the refusal of a broker it cannot split."""

from pathlib import Path

import pytest

from tests.parallel import isolate, redis_url_for_worker


def test_each_worker_gets_its_own_var_and_redis_database_and_shares_the_default_model():
    environ = {
        "ALIGNLAB_VAR_DIR": "/srv/var/test",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/3",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/3",
    }
    isolate(environ, 1, Path("/repo"))
    assert environ == {
        "ALIGNLAB_VAR_DIR": "/srv/var/test/gw1",
        "ALIGNLAB_DEFAULT_MODEL_DIR": "/srv/var/test/models",
        "CELERY_BROKER_URL": "redis://127.0.0.1:6379/4",
        "CELERY_RESULT_BACKEND": "redis://127.0.0.1:6379/4",
    }
    assert redis_url_for_worker("redis://:pw@host:6380", 2) == "redis://:pw@host:6380/2"


def test_a_models_folder_given_holds_the_one_conversion_and_the_embedded_broker_splits():
    environ = {"ALIGNLAB_MODELS_DIR": "/models"}
    isolate(environ, 0, Path("/repo"))
    assert environ == {
        "ALIGNLAB_VAR_DIR": "/repo/var/gw0",  # the embedded broker lives in it
        "ALIGNLAB_DEFAULT_MODEL_DIR": "/models",
    }


def test_a_rabbitmq_broker_is_refused_with_what_to_do():
    with pytest.raises(pytest.UsageError, match="run with -n 0"):
        isolate({"CELERY_BROKER_URL": "amqp://guest:guest@127.0.0.1//"}, 0, Path("/repo"))
