"""A backend for any OpenAI-compatible HTTP server: vLLM, llama.cpp server, TGI, Ollama.

The `openai` package does the HTTP: connections, timeouts (`timeout_s` for each wait on the
server, `connect_timeout_s` to connect), JSON, server-sent events and the typed errors this module
turns into `BackendError`s whose message names the server and what happened. Redirects are not
followed and proxy variables are ignored, so a request goes to the host `server_url_check`
judged, as before.

What stays ours, measured against openai 3.57 and the fake server of
tests/assistant/openai_server.py:
- The retry loop (the client runs with `max_retries=0`). The package also retries a read timeout
  (a server sleeping 5 s, timeout 0.3 s, max_retries=2: 3 requests and 2.4 s instead of one
  request and 0.3 s; a slow server stays slow), its delay is 0.5 s × 2^k with no public setting
  (a 500 twice retried waited 1.5 s; `backoff_s` would be ignored) and its error does not say how
  many attempts were made, which our message reports.
- Importing the package takes about 1 s of CPU; the registry imports this module only when an
  "openai" backend is used.
- Fallbacks the package cannot know: a server that refuses or ignores n > 1 (llama.cpp, Ollama),
  one that refuses `stream_options`, vLLM's `{"object": "error"}` chunks and `stop_reason`.

`openai_samples` turns the choices of an answer into `Sample`s (token counts, finish reasons).
"""

from __future__ import annotations

import bisect
import json
import re
import time
from collections.abc import Generator, Iterator
from typing import Literal
from urllib.parse import urlsplit

import httpx2
import openai

from assistant.prompting import render_completion

from .base import Backend, BackendError, Context, Sample, SamplingParams, StreamEvent
from .openai_samples import Choice, samples_of

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
        timeout = httpx2.Timeout(timeout_s, connect=connect_timeout_s)
        self._client = openai.OpenAI(
            base_url=self.base_url,
            # Never $OPENAI_API_KEY (it is not this server's); without a key, `_attempt` omits
            # the Authorization header that the package insists on otherwise.
            api_key=api_key or "no-key",
            max_retries=0,  # retried by `_post` (see the module docstring)
            timeout=timeout,
            default_headers={"User-Agent": "alignlab"},
            http_client=httpx2.Client(timeout=timeout, follow_redirects=False, trust_env=False),
        )
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
            choice = Choice(finish=c.get("finish_reason"), stop_reason=c.get("stop_reason"))
            choice.add(self._strip_reply_space(self._text(c, streamed=False)), self._logprobs(c))
            choices.append(choice)
        # Non-streamed answers arrive whole; llama.cpp alone reports its prompt-processing time.
        timings = answer.get("timings") or {}
        first_token_s = timings["prompt_ms"] / 1000 if "prompt_ms" in timings else None
        return samples_of(
            choices, answer.get("usage"), latency_s=latency, first_token_s=first_token_s
        )

    def _stream_request(
        self, context: Context, params: SamplingParams, *, count: int, first_index: int
    ) -> Generator[StreamEvent, None, int]:
        """Stream one request for `count` choices; returns how many choices the server produced."""
        body = self._body(context, params, count, seed_offset=first_index)
        body["stream"] = True
        started = time.monotonic()
        stream = self._open_stream(body)
        choices: dict[int, Choice] = {}
        usage = None
        first_token_s = None
        for chunk in self._chunks(stream):
            if chunk.get("object") == "error":  # vLLM's mid-stream error
                raise BackendError(
                    f"model server {self.base_url} reported an error mid-stream: "
                    f"{_error_detail(chunk)}"
                )
            usage = chunk.get("usage") or usage
            for c in chunk.get("choices") or []:
                local = c.get("index", 0)
                if local >= count:
                    continue
                choice = choices.setdefault(local, Choice())
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
        # The package hides whether [DONE] came, so a stream is complete when every choice has
        # its finish reason.
        if not choices or any(c.finish is None for c in choices.values()):
            raise BackendError(
                f"model server {self.base_url} ended the stream before the answer was complete"
            )
        ordered = [choices[i] for i in sorted(choices)]
        samples = samples_of(
            ordered, usage, latency_s=time.monotonic() - started, first_token_s=first_token_s
        )
        for i, sample in zip(sorted(choices), samples, strict=True):
            yield StreamEvent(index=first_index + i, delta="", sample=sample)
        return len(choices)

    def _open_stream(self, body: dict) -> openai.Stream:
        # Usage comes in a last chunk only when asked for; a server that doesn't know the option
        # says so with a 400 and we ask again without it (counting tokens from the logprobs).
        if self._stream_usage_supported:
            body["stream_options"] = {"include_usage": True}
            try:
                return self._post(self._endpoint, body).parse()
            except _Rejected as exc:
                if exc.status != 400 or "stream_options" not in exc.detail:
                    raise
                self._stream_usage_supported = False
                del body["stream_options"]
        return self._post(self._endpoint, body).parse()

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
        return self._parse(self._post(path, body).http_response.text, what="an answer")

    def _post(self, path: str, body: dict):
        """POST `body` through the openai client, retrying what a retry can fix; returns the raw
        200 response (`.parse()` gives the stream of a streamed request)."""
        attempts = self.max_retries + 1
        backoff = self.backoff_s
        for attempt in range(1, attempts + 1):
            try:
                return self._attempt(path, body)
            except _Retryable as exc:
                problem = exc.problem
                if attempt < attempts:
                    time.sleep(max(backoff, exc.retry_after))
                    backoff *= 2
        tries = f"gave up after {attempts} attempts" if attempts > 1 else "no retries configured"
        raise BackendError(f"model server {self.base_url} {problem} (POST {path}; {tries})")

    def _attempt(self, path: str, body: dict):
        """One POST: the raw 200 response, or `_Retryable`, `_Rejected` or `BackendError`."""
        chat = path == "/chat/completions"
        resource = self._client.chat.completions if chat else self._client.completions
        try:
            headers = {} if self._api_key else {"Authorization": openai.omit}
            return resource.with_raw_response.create(**body, extra_headers=headers)
        except openai.APIStatusError as exc:
            response = exc.response
            detail = _error_detail(exc.body if exc.body is not None else "")
            status = f"{response.status_code} {response.reason_phrase}".strip()
            if response.status_code == 429 or response.status_code >= 500:
                retry_after = _retry_after(response.headers.get("Retry-After"))
                raise _Retryable(f"answered {status}: {detail}", retry_after=retry_after) from None
            raise _Rejected(
                f"model server {self.base_url} rejected POST {path}: {status}: {detail}",
                status=response.status_code,
                detail=detail,
            ) from None
        except openai.APITimeoutError as exc:
            if isinstance(exc.__cause__, httpx2.ConnectTimeout):
                raise _Retryable(
                    f"did not accept a connection within {self.connect_timeout_s} s"
                ) from None
            # Not retried: the server is alive but slow, and would likely be slow again.
            raise BackendError(
                f"model server {self.base_url} timed out after {self.timeout_s} s (POST {path})"
            ) from None
        except openai.APIConnectionError as exc:
            cause = exc.__cause__ or exc
            if isinstance(cause, httpx2.ConnectError):
                raise _Retryable(f"could not be reached ({_describe(cause)})") from None
            if isinstance(cause, httpx2.NetworkError | httpx2.RemoteProtocolError):
                # includes a server that hung up without answering
                raise _Retryable(f"dropped the connection ({_describe(cause)})") from None
            raise BackendError(
                f"model server {self.base_url} sent a malformed HTTP answer to POST {path} "
                f"({_describe(cause)})"
            ) from exc

    def _chunks(self, stream) -> Iterator[dict]:
        """Each streamed chunk as the server sent it, until [DONE] or the end of the stream."""
        try:
            for chunk in stream:
                yield chunk.to_dict()
        except openai.APITimeoutError:
            raise BackendError(
                f"model server {self.base_url} sent nothing for {self.timeout_s} s mid-stream"
            ) from None
        except openai.APIConnectionError as exc:
            raise BackendError(
                f"model server {self.base_url} broke off the stream ({_describe(exc.__cause__)})"
            ) from exc
        except openai.APIError as exc:  # a chunk with an "error" member
            detail = _error_detail({"error": exc.body or exc.message})
            raise BackendError(
                f"model server {self.base_url} reported an error mid-stream: {detail}"
            ) from None
        except ValueError as exc:  # a data line that is not JSON
            raise BackendError(
                f"model server {self.base_url} sent malformed JSON as a streamed chunk: "
                f"{_excerpt(getattr(exc, 'doc', '') or str(exc))}"
            ) from None
        finally:
            stream.close()

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


def _describe(exc: BaseException | None) -> str:
    cause = exc
    while cause is not None:  # httpx wraps the socket's error
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        cause = cause.__cause__ or cause.__context__
    if exc is None:
        return "no details"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _excerpt(text: str, limit: int = 300) -> str:
    text = text.strip()
    return text if len(text) <= limit else text[:limit] + "…"
