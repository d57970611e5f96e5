"""A small OpenAI-compatible server running in a thread of the test process, for the tests of
OpenAIBackend (tests/assistant/test_openai_*.py; the `server` fixture of conftest.py starts one).

The server speaks the wire format of vLLM's /v1/chat/completions and /v1/completions (n choices,
logprobs, usage, server-sent events, echo logprobs) and has switches for the ways a real server
fails: slow, 5xx, 5xx-then-success, 400 on n > 1, ignoring n, no logprobs, no echo.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from assistant.backends import Context, Message
from assistant.backends.openai_compat import OpenAIBackend

CONTEXT = Context(
    messages=(
        Message("user", "What is the capital of France?"),
        Message("assistant", "Paris."),
        Message("user", "And of Italy?"),
    ),
    prompt="Below is a conversation with a helpful assistant.",
)


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
