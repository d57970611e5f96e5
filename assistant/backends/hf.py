"""A local Hugging Face causal LM (a model folder or a .gguf file) run in-process with torch.

One hand-written decode loop over `model.forward()` serves `generate`, `stream` and the
timings. The prompt prefix's key/values are computed once per prompt and kept read-only; a
call prefills its conversation once, repeats that small cache to its n samples and decodes
them as one batch, with an attention function that reads the shared prefix once for all rows
(architectures it does not cover get a per-call copy of the prefix instead).
"""

from __future__ import annotations

import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, DynamicCache

from assistant.backends.base import (
    Backend,
    BackendError,
    Context,
    FinishReason,
    Sample,
    SamplingParams,
    StreamEvent,
)
from assistant.hardware import native_bf16
from assistant.prompting import RenderedContext, RenderMode, fit_to_window, split_prefix

from .packed_linear import pack_linears, packed_linear_available
from .shared_prefix import SHARED_PREFIX_ATTENTION, PrefixLayer, can_share_prefix, prefix_layers

# Prompt prefixes kept per backend; each costs ~23 KB per token for SmolLM2-135M in bf16, 46 KB
# in float32 and 23 KB more for a long one's reordered keys where the linears are packed
# (_shared_layers).
PREFIX_CACHE_SIZE = 4

# The pretraining document separator of the GPT-2, SmolLM and Qwen families: in completion
# mode a model may end its reply with it rather than with the tokenizer's EOS.
DOCUMENT_SEPARATOR = "<|endoftext|>"

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}

# Candidates sorted for top-p sampling before falling back to sorting the whole vocabulary.
TOP_P_HEAD = 256


@dataclass
class _Prefix:
    text: str
    ids: list[int]
    cache: DynamicCache  # after the prefix; shared or copied by every call, never written to
    shared: list[PrefixLayer] | None = None  # `cache` per layer for the shared attention, kept


@dataclass
class _Decoding:
    """The key/value state of one call: a shared prompt prefix (read-only) + the rows' own."""

    cache: DynamicCache  # each row's keys/values after the shared prefix
    shared: list[PrefixLayer] | None = None  # per layer, batch of 1
    offset: int = 0  # tokens in `shared`, so positions continue after them


@dataclass
class _Prepared:
    prompt_key: str | None
    rendered: RenderedContext
    prefix_ids: list[int]
    suffix_ids: list[int]

    @property
    def tokens(self) -> int:
        return len(self.prefix_ids) + len(self.suffix_ids)


@dataclass
class _Row:
    """One of the n samples being decoded."""

    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    text: str = ""  # decoded tokens, before the stop cut and the whitespace strip
    emitted: str = ""  # streamed so far; always a prefix of the final text
    finish_reason: FinishReason | None = None
    kept_tokens: int = 0  # tokens making up the returned text (fewer when a stop string cut it)

    @property
    def final_text(self) -> str:
        return self.text.strip()


class TransformersBackend(Backend):
    """Sample, stream and score with a local causal LM; one instance per model per process."""

    kind = "transformers"

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        dtype: str | torch.dtype = "auto",
        mode: RenderMode | None = None,
        max_context: int | None = None,
        prefix_cache: bool = True,
        packed_linears: bool | None = None,
    ):
        """Load a model folder, or a .gguf file (transformers keeps it packed), onto `device`.

        dtype "auto" is bfloat16 where the device computes it natively (float32 for .gguf); `mode`
        defaults to "chat" when the tokenizer has a chat template; `max_context` overrides the
        model's window; `prefix_cache=False` recomputes the prompt every call (for benchmarks).
        `packed_linears` (None: where it applies, float32 on a CPU) computes the linear layers
        through oneDNN on reordered weights (packed_linear.py: batched decoding pays in float32),
        and the query-key products over a shared prompt prefix too (on its reordered keys).
        """
        path = Path(path)
        folder, extra = path, {}
        if path.suffix == ".gguf":
            folder, extra = path.parent, {"gguf_file": path.name}
        self.path = path
        self.device = torch.device(_auto_device() if device == "auto" else device)
        if dtype == "auto" and extra:
            # transformers keeps GGUF weights packed and its kernels compute in float32.
            dtype = "float32"
        self.dtype = _resolve_dtype(dtype, self.device)
        self.tokenizer = AutoTokenizer.from_pretrained(folder, **extra)
        self.model = AutoModelForCausalLM.from_pretrained(folder, dtype=self.dtype, **extra)
        self.model.to(self.device).eval()
        usable = packed_linear_available(self.device, self.dtype) and not extra
        if packed_linears and not usable:
            raise BackendError("packed linears need float32 on a CPU with oneDNN")
        self.packed_linears = (
            pack_linears(self.model) if usable and packed_linears is not False else 0
        )
        self.shared_prefix = can_share_prefix(self.model.config)
        if self.shared_prefix:
            self.model.set_attn_implementation(SHARED_PREFIX_ATTENTION)
        set_distinct_pad_token(self.tokenizer, self.model)
        self.mode: RenderMode = mode or ("chat" if self.tokenizer.chat_template else "completion")
        self._max_context = max_context
        self.prefix_cache = prefix_cache
        self._prefixes: OrderedDict[str | None, _Prefix] = OrderedDict()
        self._end_ids = _end_token_ids(self.tokenizer, self.model, self.mode)
        self._lock = threading.Lock()

    @property
    def max_context(self) -> int:
        """The context window in tokens: prompt + conversation + reply must fit in it."""
        if self._max_context is not None:
            return self._max_context
        config = self.model.config.get_text_config()
        return int(getattr(config, "max_position_embeddings", None) or 2048)

    def generate(
        self, context: Context, n: int, params: SamplingParams, *, ignore_eos: bool = False
    ) -> list[Sample]:
        """Sample `n` responses in one batched call; `ignore_eos` keeps going (benchmarks)."""
        events = self.stream(context, n, params, ignore_eos=ignore_eos)
        samples = {event.index: event.sample for event in events if event.sample is not None}
        return [samples[i] for i in range(n)]

    def stream(
        self, context: Context, n: int, params: SamplingParams, *, ignore_eos: bool = False
    ) -> Iterator[StreamEvent]:
        """Like `generate`, yielding text per sample as it is decoded, then each Sample."""
        if n < 1:
            raise ValueError("n must be >= 1")
        with self._lock:
            yield from self._decode(context, n, params, ignore_eos=ignore_eos)

    def logprob(self, context: Context, continuation: str) -> float:
        """Summed log-probability of `continuation` as the assistant's reply to `context`."""
        # Score the reply exactly as a later render of the conversation would contain it.
        reply = " " + continuation.strip() if self.mode == "completion" else continuation
        reply_ids = self._encode(reply)
        if not reply_ids:
            return 0.0
        with self._lock:
            prepared = self._prepare(context, reserve=len(reply_ids))
            ids = prepared.suffix_ids + reply_ids
            logits, _ = self._start(prepared, ids, logits_to_keep=len(reply_ids) + 1, share=False)
        logprobs = torch.log_softmax(logits[0, :-1].float(), dim=-1)
        target = torch.tensor(reply_ids, device=logprobs.device)
        return float(logprobs.gather(1, target[:, None]).sum())

    # -- internals ---------------------------------------------------------------------------

    def _decode(
        self, context: Context, n: int, params: SamplingParams, *, ignore_eos: bool
    ) -> Iterator[StreamEvent]:
        started = time.perf_counter()
        prepared = self._prepare(context, reserve=params.max_new_tokens)
        logits, state = self._start(prepared, prepared.suffix_ids, logits_to_keep=1)
        # The conversation is shared too: prefilled once, then each sample gets its own copy.
        state.cache.batch_repeat_interleave(n)
        logits = logits[:, -1].expand(n, -1)
        generator = None
        if params.seed is not None:
            generator = torch.Generator(device=self.device).manual_seed(params.seed)
        end_ids = set() if ignore_eos else self._end_ids
        rows = [_Row() for _ in range(n)]
        active = list(range(n))  # row index of each batch position still decoding
        first_token_s = None
        for step in range(params.max_new_tokens):
            chosen, chosen_logprobs = _choose(logits, params, generator)
            if first_token_s is None:
                first_token_s = time.perf_counter() - started
            for position, index in enumerate(active):
                row, token = rows[index], chosen[position]
                if token in end_ids:
                    row.finish_reason, row.kept_tokens = "eos", len(row.tokens)
                    continue
                row.tokens.append(token)
                row.logprobs.append(chosen_logprobs[position])
                row.text = self.tokenizer.decode(row.tokens, skip_special_tokens=True)
                cut = _earliest_stop(row.text, params.stop)
                if cut is not None:
                    row.text = row.text[:cut]
                    row.finish_reason = "stop"
                    row.kept_tokens = self._tokens_within(row.tokens, cut)
                elif step + 1 == params.max_new_tokens:
                    row.finish_reason, row.kept_tokens = "length", len(row.tokens)
            for index in active:
                delta = _next_delta(rows[index], params.stop)
                if delta:
                    yield StreamEvent(index=index, delta=delta)
            still = [p for p, index in enumerate(active) if rows[index].finish_reason is None]
            if not still:
                break
            if len(still) < len(active):
                # Finished samples leave the batch: no compute is spent on them.
                keep = torch.tensor(still, device=self.device)
                state.cache.batch_select_indices(keep)
                chosen = [chosen[p] for p in still]
                active = [active[p] for p in still]
            feed = torch.tensor(chosen, device=self.device)[:, None]
            logits = self._forward(feed, state, logits_to_keep=1)[:, -1]
        latency_s = time.perf_counter() - started
        for index, row in enumerate(rows):
            sample = Sample(
                text=row.final_text,
                prompt_tokens=prepared.tokens,
                completion_tokens=row.kept_tokens,
                logprob=sum(row.logprobs[: row.kept_tokens]),
                finish_reason=row.finish_reason or "length",
                latency_s=latency_s,
                first_token_s=first_token_s,
                dropped_turns=prepared.rendered.dropped_turns,
                extra={"token_ids": row.tokens[: row.kept_tokens], "render_mode": self.mode},
            )
            rest = row.final_text[len(row.emitted) :]
            if rest:
                yield StreamEvent(index=index, delta=rest)
            yield StreamEvent(index=index, delta="", sample=sample)

    def _prepare(self, context: Context, *, reserve: int) -> _Prepared:
        """Render `context` to fit the window with `reserve` tokens left, and tokenize it."""
        # The prefix depends on the prompt alone; a cached one is not tokenized again.
        last = replace(context, messages=context.messages[-1:])
        prefix = split_prefix(last, mode=self.mode, tokenizer=self.tokenizer).prefix
        cached = self._prefixes.get(context.prompt_key)
        prefix_ids = cached.ids if cached and cached.text == prefix else self._encode_prefix(prefix)
        try:
            rendered = fit_to_window(
                context,
                mode=self.mode,
                tokenizer=self.tokenizer,
                max_tokens=self.max_context - reserve,
                count_tokens=lambda text: len(self._encode(text)),
                prefix_tokens=len(prefix_ids),
            )
        except ValueError as error:
            raise BackendError(f"context does not fit the model: {error}") from error
        return _Prepared(
            prompt_key=context.prompt_key,
            rendered=rendered,
            prefix_ids=prefix_ids,
            suffix_ids=self._encode(rendered.suffix),
        )

    def _start(
        self, prepared: _Prepared, ids: list[int], *, logits_to_keep: int, share: bool = True
    ) -> tuple[torch.Tensor, _Decoding]:
        """Run `ids` after the prompt prefix (cached when enabled); logits of the last positions.

        `share=False` copies the prefix cache instead of sharing it: the shared-prefix attention
        pays off for decode steps of a batch (one query token a row), but prefilling hundreds
        of tokens through it is ~9x slower than standard attention over a copy (measured on
        the HHH eval: 11 s vs 1.2 s an item), so scoring uses the copy.
        """
        if self.prefix_cache and prepared.prefix_ids:
            entry = self._prefix_state(prepared)
            if self.shared_prefix and share:
                state = _Decoding(
                    DynamicCache(config=self.model.config),
                    self._shared_layers(entry),
                    len(prepared.prefix_ids),
                )
            else:
                state = _Decoding(copy.deepcopy(entry.cache))
        else:
            ids = prepared.prefix_ids + ids
            state = _Decoding(DynamicCache(config=self.model.config))
        input_ids = torch.tensor([ids], device=self.device)
        return self._forward(input_ids, state, logits_to_keep=logits_to_keep), state

    def _forward(self, input_ids: torch.Tensor, state: _Decoding, *, logits_to_keep: int):
        """One forward pass extending `state`; the logits of its last `logits_to_keep` positions."""
        extra = {}
        if state.shared is not None:
            start = state.offset + state.cache.get_seq_length()
            positions = torch.arange(start, start + input_ids.shape[1], device=self.device)
            extra = {"position_ids": positions[None], "shared_prefix": state.shared}
        with torch.no_grad():
            out = self.model(
                input_ids=input_ids,
                cache=state.cache,
                use_cache=True,
                logits_to_keep=logits_to_keep,
                **extra,
            )
        return out.logits

    def _shared_layers(self, entry: _Prefix) -> list[PrefixLayer]:
        """The prefix's keys/values per layer for the shared attention, built on first use.

        Where the linear layers compute through oneDNN and the prefix is long (4,096+ tokens,
        shared_prefix.PACKED_KEYS_MIN_TOKENS), each key/value head's keys are reordered for it
        too (once per prefix, held beside the cache: another ~23 KB per token in float32 for
        SmolLM2-135M): on an AVX2-only CPU the HHH prompt's query-key products of a step then
        cost 1.15x at 2 samples what they cost at one, against 1.55x through torch's batched
        matmul (bench/attention_rows.py)."""
        if entry.shared is None:
            entry.shared = prefix_layers(
                [(layer.keys, layer.values) for layer in entry.cache.layers],
                reorder_keys=bool(self.packed_linears),
            )
        return entry.shared

    def _prefix_state(self, prepared: _Prepared) -> _Prefix:
        """The cached key/values of the prompt prefix, computed on first use."""
        text = prepared.rendered.prefix
        key = prepared.prompt_key
        entry = self._prefixes.get(key)
        if entry is None or entry.text != text:
            cache = DynamicCache(config=self.model.config)
            input_ids = torch.tensor([prepared.prefix_ids], device=self.device)
            with torch.no_grad():
                self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
            entry = _Prefix(text=text, ids=prepared.prefix_ids, cache=cache)
            self._prefixes[key] = entry
            while len(self._prefixes) > PREFIX_CACHE_SIZE:
                self._prefixes.popitem(last=False)
        self._prefixes.move_to_end(key)
        return entry

    def _encode(self, text: str) -> list[int]:
        return self.tokenizer(text, add_special_tokens=False).input_ids

    def _encode_prefix(self, text: str) -> list[int]:
        # A raw transcript starts like any document (BOS where the tokenizer adds one); a chat
        # template writes its own special tokens into the text.
        return self.tokenizer(text, add_special_tokens=self.mode == "completion").input_ids

    def _tokens_within(self, tokens: list[int], length: int) -> int:
        """How many leading tokens decode to at most `length` characters."""
        kept = len(tokens)
        while kept and len(self.tokenizer.decode(tokens[:kept], skip_special_tokens=True)) > length:
            kept -= 1
        return kept


def set_distinct_pad_token(tokenizer, model=None, *, candidate: str | None = None) -> None:
    """Give `tokenizer` (and `model`'s configs) a pad token that is not EOS, if it lacks one.

    Prefers `candidate`, then the unknown token, and adds "<|pad|>" (growing the embeddings)
    only when neither exists: a reused token keeps the vocabulary the weights were trained on.
    """
    pad_id = tokenizer.pad_token_id
    if pad_id is None or pad_id == tokenizer.eos_token_id:
        unk = tokenizer.unk_token
        if candidate is not None and candidate in tokenizer.get_vocab():
            tokenizer.pad_token = candidate
        elif unk is not None and tokenizer.unk_token_id != tokenizer.eos_token_id:
            tokenizer.pad_token = unk
        else:
            tokenizer.add_special_tokens({"pad_token": "<|pad|>"})
    if model is None:
        return
    if len(tokenizer) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tokenizer))
    model.config.pad_token_id = tokenizer.pad_token_id
    if model.generation_config is not None:
        model.generation_config.pad_token_id = tokenizer.pad_token_id


def _auto_device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _resolve_dtype(dtype: str | torch.dtype, device: torch.device) -> torch.dtype:
    if isinstance(dtype, torch.dtype):
        return dtype
    if dtype != "auto":
        try:
            return _DTYPES[dtype]
        except KeyError:
            raise ValueError(
                f"unknown dtype {dtype!r}; known: auto, {', '.join(_DTYPES)}"
            ) from None
    # bf16 is fast only with native support (AVX-512/AMX on a CPU); emulated it is far slower.
    if native_bf16(device):
        return torch.bfloat16
    return torch.float16 if device.type == "cuda" else torch.float32


def _end_token_ids(tokenizer, model, mode: RenderMode) -> set[int]:
    """Tokens that end a reply: EOS, the chat template's end of turn, the document separator."""
    ids = {tokenizer.eos_token_id}
    configured = getattr(model.generation_config, "eos_token_id", None)
    ids.update(configured if isinstance(configured, list) else [configured])
    added = tokenizer.get_added_vocab()
    if DOCUMENT_SEPARATOR in added:
        ids.add(added[DOCUMENT_SEPARATOR])
    if mode == "chat":
        # The token the template writes right after a message's content ends the turn.
        marker = "\x1fend-of-turn\x1f"
        turn = tokenizer.apply_chat_template([{"role": "user", "content": marker}], tokenize=False)
        after = tokenizer(turn.split(marker, 1)[1], add_special_tokens=False).input_ids
        if after and after[0] in added.values():
            ids.add(after[0])
    ids.discard(None)
    return ids


def _choose(
    logits: torch.Tensor, params: SamplingParams, generator: torch.Generator | None
) -> tuple[list[int], list[float]]:
    """Pick the next token per row; also its log-probability under the unmodified model."""
    logits = logits.float()
    if params.temperature == 0:
        chosen = logits.argmax(dim=-1)
    else:
        probs = torch.softmax(logits / params.temperature, dim=-1)
        if params.top_p < 1:
            # Sorting a 49k vocabulary costs more than the rest of sampling; the nucleus almost
            # always lies in the top few hundred tokens, so sort all only when it does not.
            head, order = probs.topk(min(TOP_P_HEAD, probs.shape[-1]), dim=-1)
            if bool((head.sum(dim=-1) < params.top_p).any()):
                head, order = probs.sort(dim=-1, descending=True)
            # Keep the smallest head of the distribution whose mass reaches top_p.
            head = head.masked_fill(head.cumsum(dim=-1) - head >= params.top_p, 0.0)
            picked = torch.multinomial(head, 1, generator=generator)
            chosen = order.gather(1, picked)[:, 0]
        else:
            chosen = torch.multinomial(probs, 1, generator=generator)[:, 0]
    logprobs = torch.log_softmax(logits, dim=-1).gather(1, chosen[:, None])[:, 0]
    return chosen.tolist(), logprobs.tolist()


def _earliest_stop(text: str, stops: tuple[str, ...]) -> int | None:
    found = [i for i in (text.find(stop) for stop in stops if stop) if i >= 0]
    return min(found) if found else None


def _next_delta(row: _Row, stops: tuple[str, ...]) -> str:
    """The text a row can show now without ever taking it back.

    Held back until the row finishes: leading/trailing whitespace (the final text is stripped),
    a tail that may be the start of a stop string, and a half-decoded character.
    """
    if row.finish_reason is not None:
        shown = row.final_text
    else:
        shown = row.text.lstrip()
        for stop in stops:
            for size in range(min(len(stop), len(shown)), 0, -1):
                if shown.endswith(stop[:size]):
                    shown = shown[:-size]
                    break
        shown = shown.rstrip().rstrip("\ufffd")
    if len(shown) <= len(row.emitted) or not shown.startswith(row.emitted):
        return ""
    delta = shown[len(row.emitted) :]
    row.emitted = shown
    return delta
