"""A backend for any OpenAI-compatible HTTP server: vLLM, llama.cpp server, TGI, Ollama.

Standard library only (`http.client`), one connection per request, so a web process needs no
extra dependency and a backend object can be shared between threads. Every failure (refused
connection, timeout, 5xx after the retries, a 4xx, malformed JSON) becomes a `BackendError` whose
message names the server and what happened.

Token counts come from the response's `usage`. Servers report one total for all n choices, so
with n > 1 each sample gets the number of log-probability entries of its choice (one per token,
exact) when the server returned them, else the total split in proportion to text length
(`extra["completion_tokens_estimated"] = True`). `prompt_tokens` is the shared prompt's count.
"""

from __future__ import annotations

import bisect
import http.client
import json
import re
import time
from collections.abc import Generator, Iterator
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

from assistant.prompting import render_completion

from .base import Backend, BackendError, Context, Sample, SamplingParams, StreamEvent

Mode = Literal["chat", "completion"]

_MAX_RETRY_AFTER_S = 30.0  # never sleep longer than this on a server's Retry-After


class _Rejected(BackendError):
    """The server answered with a 4xx that retrying cannot fix; `detail` is its own words."""

    def __init__(self, message: str, *, status: int, detail: str):
        super().__init__(message)
        self.status = status
        self.detail = detail


class _Retryable(Exception):
    """A failure another attempt may fix: connection trouble, 429 or 5xx."""

    def __init__(self, problem: str, retry_after: float = 0.0):
        super().__init__(problem)
        self.problem = problem
        self.retry_after = retry_after


@dataclass
class _Choice:
    """One choice of a response, filled from a whole answer or from streamed chunks."""

    text: str = ""
    finish: str | None = None
    stop_reason: object = None  # vLLM: the stop string or token id that ended it
    logprob: float = 0.0
    logprob_tokens: int = 0
    logprob_missing: bool = False
    started: bool = False  # a first (non-empty) piece of text has arrived

    def add(self, text: str, logprobs: list[float] | None) -> None:
        self.text += text
        if logprobs is None:
            self.logprob_missing = self.logprob_missing or bool(text)
        else:
            self.logprob += sum(logprobs)
            self.logprob_tokens += len(logprobs)


class OpenAIBackend(Backend):
    """A model served over HTTP with the OpenAI wire format, in "chat" or "completion" mode.

    "chat" posts to /chat/completions with the prompt as a system message and the server's chat
    template; "completion" posts the paper's raw transcript to /completions. `timeout_s` bounds
    each wait for the server to send anything (for a non-streamed answer, the whole generation);
    connection errors, 429 and 5xx are retried `max_retries` times with exponential backoff.
    """

    kind = "openai"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str | None = None,
        mode: Mode = "chat",
        timeout_s: float = 120.0,
        connect_timeout_s: float = 10.0,
        max_retries: int = 2,
        backoff_s: float = 0.5,
    ):
        parts = urlsplit(base_url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(
                f"base_url must be an http(s) URL such as http://host:8000/v1, got {base_url!r}"
            )
        if mode not in ("chat", "completion"):
            raise ValueError(f"mode must be 'chat' or 'completion', got {mode!r}")
        if max_retries < 0:
            raise ValueError("max_retries must be >= 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.mode = mode
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self._api_key = api_key
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path.rstrip("/")
        # Learned from the server's answers, so later calls skip a request that would fail.
        self._n_supported = True
        self._stream_usage_supported = True

    def __repr__(self):
        return (
            f"OpenAIBackend(base_url={self.base_url!r}, model={self.model!r}, mode={self.mode!r})"
        )

    # --- The Backend interface -----------------------------------------------------------------

    def generate(self, context: Context, n: int, params: SamplingParams) -> list[Sample]:
        """Sample `n` responses in one request, or one request each where the server can't do n."""
        _check_n(n)
        samples: list[Sample] = []
        if n == 1 or self._n_supported:
            try:
                samples = self._generate_request(context, params, count=n, seed_offset=0)
            except _Rejected as exc:
                if n == 1 or not _rejects_n(exc):
                    raise
                self._n_supported = False
        # The server ignored or refused n: ask for the rest one at a time, each with its own seed
        # so that seeded samples still differ.
        while len(samples) < n:
            samples += self._generate_request(context, params, count=1, seed_offset=len(samples))
        return samples[:n]

    def stream(self, context: Context, n: int, params: SamplingParams) -> Iterator[StreamEvent]:
        """Like `generate`, yielding text as it arrives; each sample's final event comes at the
        end of the request that produced it (the usage arrives last)."""
        _check_n(n)
        done = 0
        if n == 1 or self._n_supported:
            try:
                done = yield from self._stream_request(context, params, count=n, first_index=0)
            except _Rejected as exc:  # raised before any event was yielded
                if n == 1 or not _rejects_n(exc):
                    raise
                self._n_supported = False
        while done < n:
            done += yield from self._stream_request(context, params, count=1, first_index=done)

    def logprob(self, context: Context, continuation: str) -> float:
        """Score `continuation` with an echo request to /completions (max_tokens=0, as vLLM does).

        Both modes score the paper's raw transcript (the chat template is the server's secret),
        summing the log-probabilities of the tokens that overlap " " + continuation.
        """
        if not continuation:
            return 0.0
        prompt = render_completion(context)
        text = prompt + " " + continuation  # the transcript puts one space before a reply
        body = {
            "model": self.model,
            "prompt": text,
            "max_tokens": 0,
            "echo": True,
            "logprobs": 1,
            "temperature": 0,
        }
        cannot = f"model server {self.base_url} cannot score text"
        try:
            answer = self._post_json("/completions", body)
        except _Rejected as exc:
            raise BackendError(
                f"{cannot}: it rejected an echo request (echo=true, logprobs=1, max_tokens=0) with "
                f"{exc.status}: {exc.detail}"
            ) from exc
        choices = answer.get("choices") or [{}]
        logprobs = choices[0].get("logprobs") or {}
        offsets = logprobs.get("text_offset") or []
        token_logprobs = logprobs.get("token_logprobs") or []
        if not offsets or len(offsets) != len(token_logprobs):
            raise BackendError(
                f"{cannot}: it did not return the prompt's log-probabilities for an echo request "
                "(echo=true, logprobs=1, max_tokens=0); vLLM's /v1/completions does"
            )
        # From the token holding the continuation's first character (it may start inside the
        # transcript) to the end of the text; a server that generated anyway adds tokens after it.
        start = max(bisect.bisect_right(offsets, len(prompt)) - 1, 0)
        end = bisect.bisect_left(offsets, len(text))
        scored = token_logprobs[start:end]
        if not scored or any(lp is None for lp in scored):
            raise BackendError(
                f"{cannot}: it returned no log-probability for some continuation tokens"
            )
        return float(sum(scored))

    # --- Requests ------------------------------------------------------------------------------

    def _generate_request(
        self, context: Context, params: SamplingParams, *, count: int, seed_offset: int
    ) -> list[Sample]:
        started = time.monotonic()
        answer = self._post_json(self._endpoint, self._body(context, params, count, seed_offset))
        latency = time.monotonic() - started
        raw = sorted(answer.get("choices") or [], key=lambda c: c.get("index", 0))[:count]
        if not raw:
            raise BackendError(f"model server {self.base_url} answered without any choices")
        choices = []
        for c in raw:
            choice = _Choice(finish=c.get("finish_reason"), stop_reason=c.get("stop_reason"))
            choice.add(self._strip_reply_space(self._text(c, streamed=False)), self._logprobs(c))
            choices.append(choice)
        # Non-streamed answers arrive whole; llama.cpp alone reports its prompt-processing time.
        timings = answer.get("timings") or {}
        first_token_s = timings["prompt_ms"] / 1000 if "prompt_ms" in timings else None
        return _samples(
            choices, answer.get("usage"), latency_s=latency, first_token_s=first_token_s
        )

    def _stream_request(
        self, context: Context, params: SamplingParams, *, count: int, first_index: int
    ) -> Generator[StreamEvent, None, int]:
        """Stream one request for `count` choices; returns how many choices the server produced."""
        body = self._body(context, params, count, seed_offset=first_index)
        body["stream"] = True
        started = time.monotonic()
        conn, response = self._open_stream(body)
        choices: dict[int, _Choice] = {}
        usage = None
        first_token_s = None
        finished = False
        try:
            for data in self._events(response):
                if data.strip() == "[DONE]":
                    finished = True
                    break
                chunk = self._parse(data, what="a streamed chunk")
                if chunk.get("error") or chunk.get("object") == "error":
                    raise BackendError(
                        f"model server {self.base_url} reported an error mid-stream: "
                        f"{_error_detail(chunk)}"
                    )
                usage = chunk.get("usage") or usage
                for c in chunk.get("choices") or []:
                    local = c.get("index", 0)
                    if local >= count:
                        continue
                    choice = choices.setdefault(local, _Choice())
                    text = self._text(c, streamed=True)
                    if text and not choice.started:
                        choice.started = True
                        first_token_s = first_token_s or time.monotonic() - started
                        text = self._strip_reply_space(text)
                    choice.add(text, self._logprobs(c))
                    if c.get("finish_reason"):
                        choice.finish = c["finish_reason"]
                        choice.stop_reason = c.get("stop_reason")
                    if text:
                        yield StreamEvent(index=first_index + local, delta=text)
        finally:
            conn.close()
        if not choices or not finished and any(c.finish is None for c in choices.values()):
            raise BackendError(
                f"model server {self.base_url} ended the stream before the answer was complete"
            )
        ordered = [choices[i] for i in sorted(choices)]
        samples = _samples(
            ordered, usage, latency_s=time.monotonic() - started, first_token_s=first_token_s
        )
        for i, sample in zip(sorted(choices), samples, strict=True):
            yield StreamEvent(index=first_index + i, delta="", sample=sample)
        return len(choices)

    def _open_stream(
        self, body: dict
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        # Usage comes in a last chunk only when asked for; a server that doesn't know the option
        # says so with a 400 and we ask again without it (counting tokens from the logprobs).
        if self._stream_usage_supported:
            body["stream_options"] = {"include_usage": True}
            try:
                return self._post(self._endpoint, body, accept="text/event-stream")
            except _Rejected as exc:
                if exc.status != 400 or "stream_options" not in exc.detail:
                    raise
                self._stream_usage_supported = False
                del body["stream_options"]
        return self._post(self._endpoint, body, accept="text/event-stream")

    @property
    def _endpoint(self) -> str:
        return "/chat/completions" if self.mode == "chat" else "/completions"

    def _body(self, context: Context, params: SamplingParams, n: int, seed_offset: int) -> dict:
        body: dict = {"model": self.model}
        if self.mode == "chat":
            system = (
                [] if context.prompt is None else [{"role": "system", "content": context.prompt}]
            )
            body["messages"] = system + [
                {"role": m.role, "content": m.content} for m in context.messages
            ]
            body["logprobs"] = True
        else:
            body["prompt"] = render_completion(context)
            body["logprobs"] = 1
        body.update(
            n=n,
            temperature=params.temperature,
            top_p=params.top_p,
            max_tokens=params.max_new_tokens,
            stop=list(params.stop),
        )
        if params.seed is not None:
            body["seed"] = params.seed + seed_offset
        return body

    def _text(self, choice: dict, *, streamed: bool) -> str:
        if self.mode == "completion":
            return choice.get("text") or ""
        return (choice.get("delta" if streamed else "message") or {}).get("content") or ""

    def _logprobs(self, choice: dict) -> list[float] | None:
        logprobs = choice.get("logprobs")
        if not logprobs:
            return None
        if self.mode == "chat":
            content = logprobs.get("content")
            return None if content is None else [t["logprob"] for t in content]
        values = logprobs.get("token_logprobs")
        return None if values is None else [lp for lp in values if lp is not None]

    def _strip_reply_space(self, text: str) -> str:
        # The raw transcript ends in "Assistant:" and the model continues with " Hello"; the
        # renderer puts that one space back when the reply becomes a turn.
        if self.mode == "completion" and text.startswith(" "):
            return text[1:]
        return text

    # --- HTTP ----------------------------------------------------------------------------------

    def _post_json(self, path: str, body: dict) -> dict:
        conn, response = self._post(path, body)
        try:
            return self._parse(self._read(response, path), what="an answer")
        finally:
            conn.close()

    def _post(
        self, path: str, body: dict, accept: str = "application/json"
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """POST `body`, retrying what a retry can fix; returns the open 200 response."""
        payload = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Accept": accept, "User-Agent": "alignlab"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        attempts = self.max_retries + 1
        backoff = self.backoff_s
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(path, payload, headers)
            except _Retryable as exc:
                problem = exc.problem
                if attempt < attempts:
                    time.sleep(max(backoff, exc.retry_after))
                    backoff *= 2
        tries = f"gave up after {attempts} attempts" if attempts > 1 else "no retries configured"
        raise BackendError(f"model server {self.base_url} {problem} (POST {path}; {tries})")

    def _attempt(
        self, path: str, payload: bytes, headers: dict
    ) -> tuple[http.client.HTTPConnection, http.client.HTTPResponse]:
        """One POST: the open 200 response, or `_Retryable`, `_Rejected` or `BackendError`."""
        conn = self._connection()
        try:
            try:
                conn.connect()
                conn.sock.settimeout(self.timeout_s)  # from here on, the wait for each read
            except TimeoutError:
                raise _Retryable(
                    f"did not accept a connection within {self.connect_timeout_s} s"
                ) from None
            except OSError as exc:
                raise _Retryable(f"could not be reached ({_describe(exc)})") from None
            try:
                conn.request("POST", self._path + path, body=payload, headers=headers)
                response = conn.getresponse()
            except TimeoutError:
                # Not retried: the server is alive but slow, and would likely be slow again.
                raise BackendError(
                    f"model server {self.base_url} timed out after {self.timeout_s} s (POST {path})"
                ) from None
            except ConnectionError as exc:  # includes a server that hung up without answering
                raise _Retryable(f"dropped the connection ({_describe(exc)})") from None
            except (http.client.HTTPException, OSError) as exc:
                raise BackendError(
                    f"model server {self.base_url} sent a malformed HTTP answer to POST {path} "
                    f"({_describe(exc)})"
                ) from exc
            if response.status == 200:
                return conn, response
            detail = _error_detail(self._read(response, path, tolerant=True))
            status = f"{response.status} {response.reason}".strip()
            if response.status == 429 or response.status >= 500:
                retry_after = _retry_after(response.getheader("Retry-After"))
                raise _Retryable(f"answered {status}: {detail}", retry_after=retry_after)
            raise _Rejected(
                f"model server {self.base_url} rejected POST {path}: {status}: {detail}",
                status=response.status,
                detail=detail,
            )
        except BaseException:
            conn.close()
            raise

    def _connection(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        return cls(self._host, self._port, timeout=self.connect_timeout_s)

    def _read(self, response: http.client.HTTPResponse, path: str, tolerant: bool = False) -> str:
        try:
            return response.read().decode("utf-8", errors="replace")
        except TimeoutError:
            raise BackendError(
                f"model server {self.base_url} timed out after {self.timeout_s} s (POST {path})"
            ) from None
        except (http.client.HTTPException, OSError) as exc:
            if tolerant:
                return ""
            raise BackendError(
                f"model server {self.base_url} broke off its answer to POST {path} "
                f"({_describe(exc)})"
            ) from exc

    def _events(self, response: http.client.HTTPResponse) -> Iterator[str]:
        """The `data` of each server-sent event (several data lines join with newlines)."""
        data: list[str] = []
        while True:
            try:
                line = response.readline()
            except TimeoutError:
                raise BackendError(
                    f"model server {self.base_url} sent nothing for {self.timeout_s} s mid-stream"
                ) from None
            except (http.client.HTTPException, OSError) as exc:
                raise BackendError(
                    f"model server {self.base_url} broke off the stream ({_describe(exc)})"
                ) from exc
            if not line:
                if data:
                    yield "\n".join(data)
                return
            line = line.decode("utf-8", errors="replace").rstrip("\r\n")
            if not line:
                if data:
                    yield "\n".join(data)
                    data = []
            elif line.startswith("data:"):
                data.append(line[5:].removeprefix(" "))
            # Comments (":"), "event:", "id:" and "retry:" lines carry nothing we use.

    def _parse(self, text: str, *, what: str) -> dict:
        try:
            value = json.loads(text)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise BackendError(
                f"model server {self.base_url} sent malformed JSON as {what}: {_excerpt(text)}"
            )
        return value


def _samples(
    choices: list[_Choice], usage: dict | None, *, latency_s: float, first_token_s: float | None
) -> list[Sample]:
    usage = usage or {}
    total = usage.get("completion_tokens")
    estimated = False
    if len(choices) == 1 and total is not None:
        counts = [total]
    elif all(not c.logprob_missing for c in choices):
        counts = [c.logprob_tokens for c in choices]  # one logprob entry per token: exact
    elif total is not None:
        counts, estimated = _split(total, [len(c.text) for c in choices]), True
    else:
        counts = [c.logprob_tokens for c in choices]
    samples = []
    for choice, count in zip(choices, counts, strict=True):
        extra: dict = {}
        if choice.logprob_missing:
            extra["logprob_missing"] = True
        if estimated:
            extra["completion_tokens_estimated"] = True
        if not usage:
            extra["usage_missing"] = True
        if choice.finish not in ("stop", "length"):
            extra["finish_reason"] = choice.finish  # e.g. "content_filter"; reported as "stop"
        if choice.stop_reason is not None:
            extra["stop_reason"] = choice.stop_reason
        samples.append(
            Sample(
                text=choice.text,
                prompt_tokens=int(usage.get("prompt_tokens") or 0),
                completion_tokens=int(count),
                logprob=0.0 if choice.logprob_missing else choice.logprob,
                finish_reason="length" if choice.finish == "length" else "stop",
                latency_s=latency_s,
                first_token_s=first_token_s,
                extra=extra,
            )
        )
    return samples


def _split(total: int, weights: list[int]) -> list[int]:
    """Integers summing to `total` in proportion to `weights` (largest remainders round up)."""
    if sum(weights) == 0:
        weights = [1] * len(weights)
    shares = [total * w / sum(weights) for w in weights]
    counts = [int(s) for s in shares]
    by_remainder = sorted(range(len(shares)), key=lambda i: counts[i] - shares[i])
    for i in by_remainder[: total - sum(counts)]:
        counts[i] += 1
    return counts


def _check_n(n: int) -> None:
    if n < 1:
        raise ValueError("n must be >= 1")


def _rejects_n(exc: _Rejected) -> bool:
    # vLLM/TGI name the parameter; llama.cpp says "Only one completion choice is allowed".
    return exc.status == 400 and re.search(r"\bn\b|choice", exc.detail, re.IGNORECASE) is not None


def _error_detail(text_or_json: str | dict) -> str:
    """The server's own words from an error body: OpenAI, vLLM, llama.cpp, TGI or FastAPI style."""
    value = text_or_json
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return _excerpt(value) or "(no details)"
    if isinstance(value, dict):
        for key in ("error", "message", "detail"):
            if value.get(key):
                inner = value[key]
                return _error_detail(inner) if isinstance(inner, dict) else _excerpt(str(inner))
    return _excerpt(json.dumps(value))


def _retry_after(header: str | None) -> float:
    try:
        return min(float(header), _MAX_RETRY_AFTER_S) if header else 0.0
    except ValueError:
        return 0.0  # an HTTP date: rare from model servers, and the backoff covers it


def _describe(exc: BaseException) -> str:
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"
