"""OpenAIBackend against the fake OpenAI-compatible server of tests/assistant/openai_server.py:
the requests `generate` and `logprob` send and what they make of the answers. Streaming:
test_openai_streaming.py; failures: test_openai_errors.py."""

from __future__ import annotations

import pytest

from assistant.backends import BackendError, Context, Message, SamplingParams, backend_class
from assistant.backends.openai_compat import OpenAIBackend
from assistant.prompting import render_completion
from tests.assistant.openai_server import CONTEXT, echo_logprob, make_backend, tokenize

# `server`: a FakeModelServer (tests/assistant/openai_server.py) started for the test, from
# tests/assistant/conftest.py.
pytestmark = pytest.mark.timeout(10)


# --- generate ----------------------------------------------------------------------------------


def test_it_is_registered_as_the_openai_kind():
    assert backend_class("openai") is OpenAIBackend


def test_it_samples_n_responses_in_one_request(server):
    samples = make_backend(server.url).generate(CONTEXT, 3, SamplingParams())

    assert len(server.requests) == 1
    assert [s.text for s in samples] == [f"Answer number {i}." for i in range(3)]
    for sample in samples:
        assert sample.finish_reason == "stop"
        assert sample.logprob == -0.125 - 0.25 - 0.375 - 0.5
        assert sample.completion_tokens == 4  # one logprob entry per token: exact per choice
        assert sample.prompt_tokens > 0
        assert sample.latency_s > 0
        assert sample.extra == {}


def test_it_forwards_the_sampling_parameters(server):
    params = SamplingParams(temperature=0.3, top_p=0.9, max_new_tokens=50, stop=("END",), seed=7)

    make_backend(server.url).generate(CONTEXT, 2, params)

    request = server.requests[0]
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test"
    assert request["body"] == {
        "model": "tiny-lm",
        "messages": [
            {"role": "system", "content": "Below is a conversation with a helpful assistant."},
            {"role": "user", "content": "What is the capital of France?"},
            {"role": "assistant", "content": "Paris."},
            {"role": "user", "content": "And of Italy?"},
        ],
        "logprobs": True,
        "n": 2,
        "temperature": 0.3,
        "top_p": 0.9,
        "max_tokens": 50,
        "stop": ["END"],
        "seed": 7,
    }


def test_it_sends_no_system_message_without_a_prompt(server):
    context = Context(messages=(Message("user", "Hi"),), prompt=None)

    make_backend(server.url, api_key=None).generate(context, 1, SamplingParams())

    assert server.bodies[0]["messages"] == [{"role": "user", "content": "Hi"}]
    assert "seed" not in server.bodies[0]
    assert "Authorization" not in server.requests[0]["headers"]


def test_completion_mode_sends_the_raw_transcript(server):
    backend = make_backend(server.url, mode="completion")

    [sample] = backend.generate(CONTEXT, 1, SamplingParams())

    body = server.bodies[0]
    assert server.requests[0]["path"] == "/v1/completions"
    assert body["prompt"] == (
        "Below is a conversation with a helpful assistant."
        "\n\nHuman: What is the capital of France?\n\nAssistant: Paris."
        "\n\nHuman: And of Italy?\n\nAssistant:"
    )
    assert body["logprobs"] == 1
    assert sample.text == "Answer number 0."  # the space after "Assistant:" is the transcript's


@pytest.mark.parametrize(
    ("max_new_tokens", "stop", "text", "finish_reason"),
    [
        (100, ("\n\nHuman:", "\nHuman:"), "Answer number 0.", "stop"),  # a stop string
        (2, ("\n\nHuman:",), "Answer number", "length"),
        (100, (), "Answer number 0.\n\nHuman: more", "stop"),  # end of sequence
    ],
)
def test_it_maps_finish_reasons(server, max_new_tokens, stop, text, finish_reason):
    params = SamplingParams(max_new_tokens=max_new_tokens, stop=stop)

    [sample] = make_backend(server.url).generate(CONTEXT, 1, params)

    assert (sample.text, sample.finish_reason) == (text, finish_reason)


def test_it_splits_total_usage_when_the_server_returns_no_logprobs(server):
    server.logprobs = False

    samples = make_backend(server.url).generate(CONTEXT, 3, SamplingParams(max_new_tokens=3))

    assert all(s.logprob == 0.0 and s.extra["logprob_missing"] for s in samples)
    assert all(s.extra["completion_tokens_estimated"] for s in samples)
    assert sum(s.completion_tokens for s in samples) == 9  # the server's total, split


@pytest.mark.parametrize(
    "message", ["n must be 1 when using greedy sampling", "Only one completion choice is allowed"]
)
def test_it_falls_back_to_one_request_per_sample_when_n_is_refused(server, message):
    server.reject_n_message = message
    backend = make_backend(server.url)

    samples = backend.generate(CONTEXT, 3, SamplingParams(seed=10))

    assert len(samples) == 3
    assert [b["n"] for b in server.bodies] == [3, 1, 1, 1]
    assert [b["seed"] for b in server.bodies[1:]] == [10, 11, 12]  # seeded samples still differ
    backend.generate(CONTEXT, 2, SamplingParams())
    assert [b["n"] for b in server.bodies[4:]] == [1, 1]  # remembered: no refused request


def test_it_asks_for_missing_choices_one_at_a_time(server):
    server.ignore_n = True

    samples = make_backend(server.url).generate(CONTEXT, 3, SamplingParams())

    assert len(samples) == 3
    assert [b["n"] for b in server.bodies] == [3, 1, 1]


# --- logprob -----------------------------------------------------------------------------------


def test_logprob_sums_the_continuation_tokens_of_an_echo_request(server):
    backend = make_backend(server.url)  # chat mode too: scoring always uses /completions

    score = backend.logprob(CONTEXT, "Rome is the capital.")

    assert server.requests[0]["path"] == "/v1/completions"
    body = server.bodies[0]
    assert body["prompt"] == render_completion(CONTEXT) + " Rome is the capital."
    assert (body["echo"], body["logprobs"], body["max_tokens"]) == (True, 1, 0)
    continuation_tokens = [" Rome", " is", " the", " capital."]
    assert score == sum(echo_logprob(t) for t in continuation_tokens)


def test_logprob_counts_a_token_that_straddles_the_boundary(server):
    server.tokenizer = "chunks"  # 4-character tokens, blind to word boundaries
    boundary = len(render_completion(CONTEXT))

    score = make_backend(server.url).logprob(CONTEXT, "Rome.")

    tokens = tokenize(server.bodies[0]["prompt"], "chunks")
    expected = [t for t, offset in tokens if offset + len(t) > boundary]
    assert tokens[boundary // 4][1] < boundary  # the first scored token starts in the context
    assert score == sum(echo_logprob(t) for t in expected)


@pytest.mark.parametrize("echo", ["reject", "ignore"])
def test_logprob_on_a_server_without_echo_says_it_cannot_score(server, echo):
    server.echo = echo

    with pytest.raises(BackendError, match=rf"model server {server.url} cannot score text"):
        make_backend(server.url).logprob(CONTEXT, "Rome.")
