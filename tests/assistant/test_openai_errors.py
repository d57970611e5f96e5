"""OpenAIBackend against a failing model server (tests/assistant/openai_server.py): timeouts,
retries, client errors, an unreachable port, malformed JSON."""

from __future__ import annotations

import socket
import time

import pytest

from assistant.backends import BackendError, SamplingParams
from tests.assistant.openai_server import CONTEXT, make_backend

# `server`: a FakeModelServer (tests/assistant/openai_server.py) started for the test, from
# tests/assistant/conftest.py.
pytestmark = pytest.mark.timeout(10)


# --- failures ----------------------------------------------------------------------------------


def test_a_slow_server_times_out_with_a_clear_message(server):
    server.delay_s = 5.0
    backend = make_backend(server.url, timeout_s=0.3)

    started = time.monotonic()
    with pytest.raises(BackendError, match=rf"model server {server.url} timed out after 0.3 s"):
        backend.generate(CONTEXT, 1, SamplingParams())

    assert time.monotonic() - started < 1.0
    assert len(server.requests) == 1  # a timeout is not retried


def test_a_failing_server_is_retried_then_reported(server):
    server.fail_times = 100

    with pytest.raises(BackendError) as raised:
        make_backend(server.url, max_retries=2).generate(CONTEXT, 1, SamplingParams())

    assert len(server.requests) == 3
    assert str(raised.value) == (
        f"model server {server.url} answered 500 Internal Server Error: boom "
        "(POST /chat/completions; gave up after 3 attempts)"
    )


@pytest.mark.parametrize("status", [500, 503, 429])
def test_a_retry_recovers_from_passing_failures(server, status):
    server.fail_times, server.fail_status = 2, status

    [sample] = make_backend(server.url, max_retries=2).generate(CONTEXT, 1, SamplingParams())

    assert sample.text == "Answer number 0."
    assert len(server.requests) == 3


def test_a_client_error_is_not_retried(server):
    server.fail_times, server.fail_status = 100, 401

    with pytest.raises(
        BackendError, match="rejected POST /chat/completions: 401 Unauthorized: boom"
    ):
        make_backend(server.url).generate(CONTEXT, 1, SamplingParams())

    assert len(server.requests) == 1


def test_a_stream_from_a_failing_server_raises(server):
    server.fail_times = 100

    with pytest.raises(BackendError, match="answered 500"):
        list(make_backend(server.url, max_retries=1).stream(CONTEXT, 1, SamplingParams()))

    assert len(server.requests) == 2


def test_a_closed_port_is_reported_as_unreachable():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again when the block ends: nobody listens
    url = f"http://127.0.0.1:{port}/v1"

    started = time.monotonic()
    with pytest.raises(BackendError) as raised:
        make_backend(url, max_retries=1).generate(CONTEXT, 1, SamplingParams())

    assert str(raised.value) == (
        f"model server {url} could not be reached (connection refused) "
        "(POST /chat/completions; gave up after 2 attempts)"
    )
    assert time.monotonic() - started < 1.0


def test_malformed_json_is_reported(server):
    server.malformed = True

    with pytest.raises(BackendError, match="sent malformed JSON as an answer: <html>not json"):
        make_backend(server.url).generate(CONTEXT, 1, SamplingParams())
