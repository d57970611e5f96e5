"""A real worker process on the configured broker (Redis in CI, the embedded one otherwise)."""

from django.db import connection

from config.celery import app
from config.tasks import worker_health


def test_it_round_trips_tasks_through_a_real_worker_on_both_queues(celery_worker_process):
    assert not app.conf.task_always_eager
    for queue in ("default", "generation", "training"):
        health = worker_health.apply_async(queue=queue).get(timeout=60)
        # The worker, in its own process, uses the same database and broker as this test.
        assert health == {
            "database": connection.vendor,
            "database_name": str(connection.settings_dict["NAME"]),
            "broker": app.connection_for_write().transport_cls,
        }
    replies = app.control.ping(destination=[celery_worker_process.hostname], timeout=5)
    assert replies == [{celery_worker_process.hostname: {"ok": "pong"}}]
    assert "Task config.worker_health[" in celery_worker_process.output()


def test_settings_route_training_tasks_to_the_training_queue():
    route = app.amqp.router.route({}, "training.run_training")
    assert route["queue"].name == "training"
    assert app.amqp.router.route({}, "collection.generate_responses")["queue"].name == "generation"
    assert app.amqp.router.route({}, "collection.tasks.anything")["queue"].name == "default"
    assert app.conf.task_acks_late and app.conf.task_reject_on_worker_lost
    assert app.conf.task_time_limit > app.conf.task_soft_time_limit > 0
