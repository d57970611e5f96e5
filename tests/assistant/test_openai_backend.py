"""OpenAIBackend against a small OpenAI-compatible server running in a thread of this process.

The server speaks the wire format of vLLM's /v1/chat/completions and /v1/completions (n choices,
logprobs, usage, server-sent events, echo logprobs) and has switches for the ways a real server
fails: slow, 5xx, 5xx-then-success, 400 on n > 1, ignoring n, no logprobs, no echo.
"""

from __future__ import annotations

import json
import re
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from assistant.backends import BackendError, Context, Message, SamplingParams, backend_class
from assistant.backends.openai_compat import OpenAIBackend
from assistant.prompting import render_completion

pytestmark = pytest.mark.timeout(10)

CONTEXT = Context(
    messages=(
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "And of Italy?"),
    ),
    prompt="Below is a conversation with a helpful assistant.",
)


# --- The fake model server ---------------------------------------------------------------------


def reply_tokens(index: int, chat: bool) -> list[str]:
    """What the fake "model" says for choice `index`: it runs on into a next human turn."""
    return ["Answer" if chat else " Answer", " number", f" {index}", ".", "\n\nHuman:", " more"]


def token_logprob(position: int) -> float:
    return -0.125 * (position + 1)  # exact in binary, so sums compare with ==


def generate_choice(index: int, body: dict, chat: bool) -> tuple[list[str], str]:
    """Tokens and finish reason of one choice: cut at a stop string or at max_tokens."""
    out: list[str] = []
    for token in reply_tokens(index, chat):
        if len(out) == body["max_tokens"]:
            return out, "length"
        if any(stop in "".join(out + [token]) for stop in body.get("stop") or []):
            return out, "stop"
        out.append(token)
    return out, "stop"  # the model's end-of-sequence token


def tokenize(text: str, scheme: str) -> list[tuple[str, int]]:
    """(token, offset) pairs: words with their leading whitespace, or fixed 4-character chunks."""
    if scheme == "words":
        return [(m.group(), m.start()) for m in re.finditer(r"\s*\S+|\s+", text)]
    return [(text[i : i + 4], i) for i in range(0, len(text), 4)]


def echo_logprob(token: str) -> float:
    return -len(token) / 8


class FakeModelServer:
    """Records every request; the attributes switch its behaviour for the next requests."""

    def __init__(self):
        self.requests: list[dict] = []  # {"path", "body", "headers"} in arrival order
        self.delay_s = 0.0  # sleep before answering
        self.fail_times = 0  # answer the first k requests with fail_status
        self.fail_status = 500
        self.reject_n_message: str | None = None  # a 400 with this message when n > 1
        self.ignore_n = False  # answer one choice whatever n asks (Ollama)
        self.logprobs = True
        self.usage = True
        self.echo = "yes"  # "yes" | "reject" (400) | "ignore" (no prompt logprobs)
        self.tokenizer = "words"
        self.malformed = False  # 200 with a body that isn't JSON
        self.reject_stream_options = False  # a 400 naming the option (older servers)
        self.stall_mid_stream_s = 0.0  # sleep after the first streamed token
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_POST(self):
                length = int(self.headers["Content-Length"])
                body = json.loads(self.rfile.read(length))
                with server._lock:
                    server.requests.append(
                        # Header names are case-insensitive (RFC 9110); httpx sends them lowercase.
                        {"path": self.path, "body": body, "headers": self.headers}
                    )
                    count = len(server.requests)
                try:
                    server.answer(self, body, count)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up first (the timeout tests)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02}, daemon=True
        )

    @property
    def bodies(self) -> list[dict]:
        return [r["body"] for r in self.requests]

    def answer(self, handler, body: dict, count: int) -> None:
        handler.close_connection = True
        if self.delay_s and self.stopping.wait(self.delay_s):
            return
        if count <= self.fail_times:
            return send_json(handler, {"error": {"message": "boom", "code": 500}}, self.fail_status)
        if self.malformed:
            return send_raw(handler, b"<html>not json", "text/html")
        if self.reject_stream_options and "stream_options" in body:
            message = "unknown field: stream_options"
            return send_json(handler, {"error": {"message": message}}, 400)
        if self.reject_n_message and body.get("n", 1) > 1:
            return send_json(handler, {"object": "error", "message": self.reject_n_message}, 400)
        if handler.path == "/v1/completions" and body.get("echo"):
            return self.answer_echo(handler, body)
        chat = handler.path == "/v1/chat/completions"
        if not chat and handler.path != "/v1/completions":
            return send_json(handler, {"error": {"message": "not found"}}, 404)
        n = 1 if self.ignore_n else body.get("n", 1)
        choices = [generate_choice(i, body, chat) for i in range(n)]
        prompt_text = json.dumps(body.get("messages")) if chat else body["prompt"]
        usage = {
            "prompt_tokens": len(prompt_text.split()),
            "completion_tokens": sum(len(tokens) for tokens, _ in choices),
        }
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        if body.get("stream"):
            return self.answer_stream(handler, body, choices, chat, usage)
        send_json(
            handler,
            {
                "id": "cmpl-1",
                "object": "chat.completion" if chat else "text_completion",
                "model": body["model"],
                "choices": [
                    self.choice(i, tokens, finish, chat)
                    for i, (tokens, finish) in enumerate(choices)
                ],
                **({"usage": usage} if self.usage else {}),
            },
        )

    def choice(self, index: int, tokens: list[str], finish: str, chat: bool) -> dict:
        text = "".join(tokens)
        choice: dict = {"index": index, "finish_reason": finish, "stop_reason": None}
        if chat:
            choice["message"] = {"role": "assistant", "content": text}
        else:
            choice["text"] = text
        choice["logprobs"] = self.logprobs_of(tokens, 0, chat) if self.logprobs else None
        return choice

    def logprobs_of(self, tokens: list[str], first_position: int, chat: bool) -> dict:
        values = [token_logprob(first_position + k) for k in range(len(tokens))]
        if chat:
            return {
                "content": [
                    {"token": t, "logprob": lp} for t, lp in zip(tokens, values, strict=True)
                ]
            }
        offsets = [sum(len(t) for t in tokens[:k]) for k in range(len(tokens))]
        return {"tokens": tokens, "token_logprobs": values, "text_offset": offsets}

    def answer_stream(self, handler, body, choices, chat, usage) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Transfer-Encoding", "chunked")
        handler.end_headers()

        def event(payload) -> None:
            data = payload if isinstance(payload, str) else json.dumps(payload)
            raw = f"data: {data}\n\n".encode()
            handler.wfile.write(b"%x\r\n%s\r\n" % (len(raw), raw))
            handler.wfile.flush()

        if chat:
            for i in range(len(choices)):
                event({"choices": [{"index": i, "delta": {"role": "assistant", "content": ""}}]})
        for position in range(max(len(tokens) for tokens, _ in choices)):
            for i, (tokens, _) in enumerate(choices):  # interleaved, as vLLM sends them
                if position >= len(tokens):
                    continue
                token = tokens[position]
                piece = {"index": i, "finish_reason": None}
                if chat:
                    piece["delta"] = {"content": token}
                else:
                    piece["text"] = token
                if self.logprobs:
                    piece["logprobs"] = self.logprobs_of([token], position, chat)
                event({"choices": [piece]})
                if self.stall_mid_stream_s and self.stopping.wait(self.stall_mid_stream_s):
                    return
        for i, (_, finish) in enumerate(choices):
            piece = {"index": i, "finish_reason": finish, "stop_reason": None}
            piece.update({"delta": {}} if chat else {"text": ""})
            event({"choices": [piece]})
        if (body.get("stream_options") or {}).get("include_usage") and self.usage:
            event({"choices": [], "usage": usage})
        event("[DONE]")
        handler.wfile.write(b"0\r\n\r\n")

    def answer_echo(self, handler, body) -> None:
        if self.echo == "reject":
            return send_json(handler, {"error": {"message": "echo is not supported"}}, 400)
        tokens = tokenize(body["prompt"], self.tokenizer)
        logprobs = None
        if self.echo == "yes":
            logprobs = {
                "tokens": [t for t, _ in tokens],
                "token_logprobs": [None] + [echo_logprob(t) for t, _ in tokens[1:]],
                "text_offset": [offset for _, offset in tokens],
            }
        text = body["prompt"] if self.echo == "yes" else ""
        choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": "length"}
        send_json(handler, {"choices": [choice], "usage": {"prompt_tokens": len(tokens)}})


def send_json(handler, payload: dict, status: int = 200) -> None:
    send_raw(handler, json.dumps(payload).encode(), "application/json", status)


def send_raw(handler, raw: bytes, content_type: str, status: int = 200) -> None:
    handler.send_response(status)
    handler.send_header("Content-Type", content_type)
    handler.send_header("Content-Length", str(len(raw)))
    handler.end_headers()
    handler.wfile.write(raw)


@pytest.fixture
def server():
    fake = FakeModelServer()
    fake.thread.start()
    yield fake
    fake.stopping.set()
    fake.httpd.shutdown()
    fake.httpd.server_close()


def make_backend(url: str, **overrides) -> OpenAIBackend:
    options = dict(
        base_url=url,
        model="tiny-lm",
        api_key="sk-test",
        timeout_s=2.0,
        connect_timeout_s=1.0,
        max_retries=2,
        backoff_s=0.01,
    )
    return OpenAIBackend(**(options | overrides))


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
