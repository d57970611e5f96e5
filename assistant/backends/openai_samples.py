"""The choices of an OpenAI-format answer as `Sample`s: text, log-probability, token counts.

Token counts come from the response's `usage`. Servers report one total for all n choices, so
with n > 1 each sample gets the number of log-probability entries of its choice (one per token,
exact) when the server returned them, else the total split in proportion to text length
(`extra["completion_tokens_estimated"] = True`). `prompt_tokens` is the shared prompt's count.
"""

from __future__ import annotations

from dataclasses import dataclass

from .base import Sample


@dataclass
class Choice:
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


def samples_of(
    choices: list[Choice], usage: dict | None, *, latency_s: float, first_token_s: float | None
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
