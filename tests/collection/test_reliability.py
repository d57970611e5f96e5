"""No stranded turns: faults in generation, the broker and the worker leave a turn the contractor
can retry, never one stuck `queued` or `generating` (issue 12)."""

import os
import signal
import socket
import time
from datetime import timedelta

import pytest
from django.urls import reverse
from django.utils import timezone

from assistant.services import model_version_register
from collection.campaigns import campaign_create, campaign_update
from collection.conversations import conversation_start, turn_retry, turn_submit
from collection.generation import QUEUE_UNAVAILABLE, WORKER_LOST
from collection.models import Campaign, Turn
from config.celery import app
from config.tasks import sweep_stranded_work
from tests.conftest import start_worker, stop_worker


def wait_for(turn, *statuses, timeout=60):
    deadline = time.monotonic() + timeout
    while (status := Turn.objects.get(pk=turn.pk).status) not in statuses:
        assert time.monotonic() < deadline, f"turn {turn.pk} still {status}"
        time.sleep(0.1)
    return Turn.objects.get(pk=turn.pk)


@pytest.fixture
def generation_worker(transactional_db, tmp_path):
    """A real worker on the `generation` queue only (registering a model queues its evals,
    which must not keep this worker busy)."""
    app.control.purge()
    worker = start_worker(tmp_path, queues="generation")
    yield worker
    stop_worker(worker)


@pytest.fixture
def campaign(tiny_lm_version):
    return campaign_create(name="c", lm_version=tiny_lm_version, prompt=None, k=2, max_turns=3)


@pytest.mark.django_db(transaction=True)
def test_a_generation_that_raises_fails_the_turn_with_its_reason_and_a_retry_works(
    campaign, alice, generation_worker
):
    # Sampling settings the model's full_clean() refuses, stored as the API used to store them:
    # generation raises TypeError (not a BackendError) from SamplingParams(**...).
    Campaign.objects.filter(pk=campaign.pk).update(sampling={"temprature": 0.7})
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = turn_submit(conversation=conversation, contractor=alice, text="Hello?")
    turn = wait_for(turn, Turn.Status.FAILED, Turn.Status.READY)
    assert turn.status == Turn.Status.FAILED and turn.human_text == "Hello?"
    assert "TypeError" in turn.error and "temprature" in turn.error
    assert "message is kept" in turn.error and "\n" not in turn.error
    assert "generation of turn" in generation_worker.output()  # logged with its traceback

    campaign_update(campaign=Campaign.objects.get(pk=campaign.pk), sampling={})
    turn_retry(turn=turn, contractor=alice)
    assert wait_for(turn, Turn.Status.READY, Turn.Status.FAILED).status == Turn.Status.READY


@pytest.mark.django_db(transaction=True)
def test_a_message_sent_while_the_broker_is_down_is_kept_and_a_retry_works(
    campaign, alice, client, broker_down, generation_worker
):
    conversation = conversation_start(campaign=campaign, contractor=alice)
    client.force_login(alice)
    started = time.monotonic()
    with broker_down():
        response = client.post(
            reverse("collection:message", args=[conversation.pk]), {"text": "Anyone there?"}
        )
    assert response.status_code == 302 and time.monotonic() - started < 10
    turn = conversation.turns.get()
    assert turn.status == Turn.Status.FAILED and turn.human_text == "Anyone there?"
    assert turn.error == QUEUE_UNAVAILABLE
    page = client.get(reverse("collection:conversation", args=[conversation.pk]))
    assert "The model queue is unavailable" in page.content.decode()

    # The broker is back: the retry button queues the kept message and the worker answers it.
    response = client.post(reverse("collection:retry", args=[turn.pk]))
    assert response.status_code == 302
    assert wait_for(turn, Turn.Status.READY, Turn.Status.FAILED).status == Turn.Status.READY


@pytest.mark.django_db(transaction=True)
def test_a_turn_left_generating_by_a_killed_worker_is_reclaimed(alice, settings, generation_worker):
    # A model server that accepts the request and never answers: the worker waits on it.
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen()
    silent = model_version_register(
        kind="lm",
        name="silent",
        backend="openai",
        url=f"http://127.0.0.1:{server.getsockname()[1]}/v1",
        remote_model="m",
        backend_options={"max_retries": 0, "timeout_s": 300},
    )
    campaign = campaign_create(name="s", lm_version=silent, k=2)
    conversation = conversation_start(campaign=campaign, contractor=alice)
    turn = turn_submit(conversation=conversation, contractor=alice, text="Hi?")
    wait_for(turn, Turn.Status.GENERATING)
    os.killpg(generation_worker.process.pid, signal.SIGKILL)  # the whole worker dies
    generation_worker.process.wait()
    server.close()

    assert sweep_stranded_work()["turns"]["failed"] == []  # its heartbeat is recent
    settings.COLLECTION_GENERATION_TIMEOUT_S = 0
    Turn.objects.filter(pk=turn.pk).update(heartbeat_at=timezone.now() - timedelta(seconds=1))
    assert sweep_stranded_work()["turns"]["failed"] == [turn.pk]
    turn.refresh_from_db()
    assert turn.status == Turn.Status.FAILED and turn.error == WORKER_LOST
    assert turn_retry(turn=turn, contractor=alice).status == Turn.Status.QUEUED


@pytest.mark.django_db
def test_the_sweeper_sends_a_queued_turn_with_no_live_task_again(
    campaign, alice, settings, django_capture_on_commit_callbacks
):
    conversation = conversation_start(campaign=campaign, contractor=alice)
    # The web process died between its commit and sending the task: queued, no task id.
    with django_capture_on_commit_callbacks(execute=False):
        turn = turn_submit(conversation=conversation, contractor=alice, text="Hi")
    assert sweep_stranded_work()["turns"]["enqueued"] == []  # within the grace period
    settings.JOBS_ENQUEUE_GRACE_S = 0
    Turn.objects.filter(pk=turn.pk).update(created_at=timezone.now() - timedelta(seconds=1))
    assert sweep_stranded_work()["turns"]["enqueued"] == [turn.pk]
    turn.refresh_from_db()
    assert turn.status == Turn.Status.QUEUED and turn.celery_task_id
    # Its task is waiting now (PENDING): the next sweep leaves it alone.
    assert sweep_stranded_work()["turns"]["enqueued"] == []
