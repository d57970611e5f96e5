"""The one small interface every language-model backend implements, and the values it trades in.

A backend turns a `Context` (an optional system prompt such as the HHH prompt, plus the
conversation so far) into `Sample`s. Backends know nothing of the database: the registry
(`assistant.models.ModelVersion`) picks the class by its stored kind through `BACKENDS`.
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Literal

from assistant import transcripts

Role = Literal["user", "assistant"]
FinishReason = Literal["stop", "length", "eos"]

# Raw-completion transcripts (the paper's format) end a response where the next human turn starts.
HUMAN_TURN = transcripts.HUMAN
ASSISTANT_TURN = transcripts.ASSISTANT


class BackendError(RuntimeError):
    """The model backend failed (server down, timeout, bad answer); the message says why."""


@dataclass(frozen=True)
class Message:
    role: Role
    content: str


@dataclass(frozen=True)
class Context:
    """What a model responds to: an optional prompt (None = no prompt, for ablations) + turns.

    `prompt_key` names the prompt version ("hhh@3"); backends key their prefix caches on it.
    """

    messages: tuple[Message, ...]
    prompt: str | None = None
    prompt_key: str | None = None

    def __post_init__(self):
        if not self.messages or self.messages[-1].role != "user":
            raise ValueError("a context must end with a user message")
        if self.prompt is not None and self.prompt_key is None:
            digest = hashlib.sha256(self.prompt.encode()).hexdigest()[:16]
            object.__setattr__(self, "prompt_key", f"sha256:{digest}")


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.8  # 0 means greedy
    top_p: float = 0.95
    max_new_tokens: int = 160
    stop: tuple[str, ...] = (HUMAN_TURN, "\nHuman:")  # cut a response where one begins
    seed: int | None = None

    def __post_init__(self):
        if self.temperature < 0:
            raise ValueError("temperature must be >= 0")
        if not 0 < self.top_p <= 1:
            raise ValueError("top_p must be in (0, 1]")
        if self.max_new_tokens < 1:
            raise ValueError("max_new_tokens must be >= 1")


@dataclass
class Sample:
    text: str
    prompt_tokens: int  # tokens of prompt + conversation actually fed to the model
    completion_tokens: int
    logprob: float  # summed log-probability of the completion tokens under the sampler's model
    finish_reason: FinishReason
    latency_s: float  # wall time of the whole call that produced this sample
    first_token_s: float | None = None  # time to first token of that call
    dropped_turns: int = 0  # oldest conversation messages dropped to fit the context window
    extra: dict = field(default_factory=dict)


@dataclass(frozen=True)
class StreamEvent:
    """One piece of streamed output: `index` says which of the n samples it belongs to.

    The last event of each sample carries `sample` (the finished Sample) and `delta == ""`.
    """

    index: int
    delta: str
    sample: Sample | None = None


class Backend(ABC):
    """A language model that can sample, stream and score."""

    kind: str  # the value stored on ModelVersion.backend

    @abstractmethod
    def generate(self, context: Context, n: int, params: SamplingParams) -> list[Sample]:
        """Sample `n` responses to `context` in one batched call."""

    @abstractmethod
    def stream(self, context: Context, n: int, params: SamplingParams) -> Iterator[StreamEvent]:
        """Like `generate`, yielding text as it is produced."""

    @abstractmethod
    def logprob(self, context: Context, continuation: str) -> float:
        """Summed log-probability of `continuation` as the assistant's reply to `context`."""
