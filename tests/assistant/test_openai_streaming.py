"""OpenAIBackend.stream against the fake OpenAI-compatible server of
tests/assistant/openai_server.py: text reassembled per sample, fallbacks, a stalled stream."""

from __future__ import annotations

import pytest

from assistant.backends import BackendError, SamplingParams
from tests.assistant.openai_server import CONTEXT, make_backend

# `server`: a FakeModelServer (tests/assistant/openai_server.py) started for the test, from
# tests/assistant/conftest.py.
pytestmark = pytest.mark.timeout(10)


# --- stream ------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["chat", "completion"])
def test_stream_reassembles_the_text_of_each_sample(server, mode):
    backend = make_backend(server.url, mode=mode)

    events = list(backend.stream(CONTEXT, 2, SamplingParams()))

    assert len(server.requests) == 1
    assert server.bodies[0]["stream"] is True
    finals = {e.index: e.sample for e in events if e.sample is not None}
    assert sorted(finals) == [0, 1]
    for index, sample in finals.items():
        deltas = "".join(e.delta for e in events if e.index == index)
        assert deltas == sample.text == f"Answer number {index}."
        assert sample.finish_reason == "stop"
        assert sample.logprob == -0.125 - 0.25 - 0.375 - 0.5
        assert sample.completion_tokens == 4
        assert sample.prompt_tokens > 0  # from the usage chunk asked for with stream_options
        assert 0 < sample.first_token_s <= sample.latency_s
    assert all(e.sample is not None for e in events[-2:])  # final events come last


def test_stream_falls_back_to_one_request_per_sample_when_n_is_refused(server):
    server.reject_n_message = "n > 1 is not supported"

    events = list(make_backend(server.url).stream(CONTEXT, 2, SamplingParams()))

    assert [b["n"] for b in server.bodies] == [2, 1, 1]
    finals = [e for e in events if e.sample is not None]
    assert [(e.index, e.sample.text) for e in finals] == [
        (0, "Answer number 0."),
        (1, "Answer number 0."),
    ]


def test_stream_without_usage_counts_tokens_from_the_logprobs(server):
    server.reject_stream_options = True
    backend = make_backend(server.url)

    [*_, final] = backend.stream(CONTEXT, 1, SamplingParams())
    list(backend.stream(CONTEXT, 1, SamplingParams()))

    assert ["stream_options" in b for b in server.bodies] == [True, False, False]
    assert final.sample.completion_tokens == 4
    assert final.sample.extra == {"usage_missing": True}


def test_a_stream_that_stalls_times_out(server):
    server.stall_mid_stream_s = 5.0
    events = make_backend(server.url, timeout_s=0.2).stream(CONTEXT, 1, SamplingParams())

    assert next(events).delta == "Answer"
    with pytest.raises(BackendError, match=rf"{server.url} sent nothing for 0.2 s mid-stream"):
        next(events)
