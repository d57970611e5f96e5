import copy

import pytest
import torch
from transformers import AutoModelForCausalLM

from assistant.backends import backend_class, shared_prefix
from assistant.backends.base import BackendError, Context, Message, SamplingParams
from assistant.backends.hf import TransformersBackend, set_distinct_pad_token
from assistant.hardware import native_bf16
from assistant.prompting import split_prefix

PROMPT = "Below are a series of dialogues between various people and an AI assistant. " * 4
QUESTION = Context(
    prompt=PROMPT,
    messages=(
        Message("user", "Can you help me write a poem about the sea?"),
        Message("assistant", "Of course."),
        Message("user", "What is the capital of France?"),
    ),
)
GREEDY = SamplingParams(temperature=0, max_new_tokens=16, stop=())


@pytest.fixture(scope="module")
def backend(tiny_lm_path):
    return TransformersBackend(tiny_lm_path, dtype="float32")


@pytest.fixture(scope="module")
def uncached(tiny_lm_path):
    return TransformersBackend(tiny_lm_path, dtype="float32", prefix_cache=False)


@pytest.fixture(scope="module")
def plain_model(tiny_lm_path):
    return AutoModelForCausalLM.from_pretrained(tiny_lm_path, dtype=torch.float32).eval()


def full_forward_logprobs(model, ids: list[int]) -> torch.Tensor:
    """Log-probabilities of each next token from one plain forward pass, no cache."""
    with torch.no_grad():
        logits = model(input_ids=torch.tensor([ids]), use_cache=False).logits[0]
    return torch.log_softmax(logits.float(), dim=-1)


def context_ids(backend, context) -> list[int]:
    rendered = split_prefix(context, mode=backend.mode, tokenizer=backend.tokenizer)
    encode = backend.tokenizer
    return encode(rendered.prefix).input_ids + encode(rendered.suffix).input_ids


def test_it_is_registered_under_its_kind():
    assert backend_class("transformers") is TransformersBackend


def test_it_defaults_to_chat_with_a_chat_template_and_bf16_where_supported(tiny_lm_path):
    backend = TransformersBackend(tiny_lm_path)

    assert backend.mode == "chat"
    assert backend.max_context == 512
    # bf16 where native (assistant.hardware, ALIGNLAB_BF16 included), else float32.
    assert backend.model.dtype == (torch.bfloat16 if native_bf16("cpu") else torch.float32)
    [sample] = backend.generate(QUESTION, 1, GREEDY)
    assert sample.completion_tokens > 0


def test_it_samples_k_responses_in_one_batched_call(backend, monkeypatch):
    backend.generate(QUESTION, 1, GREEDY)  # computes the prompt's prefix cache
    calls = []
    forward = backend.model.forward
    monkeypatch.setattr(
        backend.model, "forward", lambda **kw: calls.append(kw["input_ids"].shape) or forward(**kw)
    )
    params = SamplingParams(max_new_tokens=12, stop=(), seed=0)

    samples = backend.generate(QUESTION, 3, params, ignore_eos=True)

    assert len(samples) == 3
    # One prefill of the conversation, then one step per new token for the whole batch.
    assert len(calls) == 1 + 11
    assert all(shape[0] == 3 for shape in calls[1:])
    for sample in samples:
        assert sample.completion_tokens == 12 == len(sample.extra["token_ids"])
        assert sample.finish_reason == "length"
        assert sample.prompt_tokens == len(context_ids(backend, QUESTION))
        assert sample.latency_s >= sample.first_token_s > 0
    assert len({sample.text for sample in samples}) == 3


def test_it_reproduces_a_seed_and_varies_with_another(backend):
    def texts(seed):
        params = SamplingParams(max_new_tokens=12, stop=(), seed=seed)
        return [sample.text for sample in backend.generate(QUESTION, 2, params)]

    assert texts(7) == texts(7)
    assert texts(7) != texts(8)


def test_it_cuts_the_text_at_the_earliest_stop_sequence(backend):
    # The random model's greedy output repeats one token; a seeded sample is as reproducible.
    params = SamplingParams(max_new_tokens=16, stop=(), seed=5)
    [full] = backend.generate(QUESTION, 1, params, ignore_eos=True)
    late, early = full.text[10:13], full.text[5:7]
    assert full.text.find(early) < full.text.find(late), full.text

    params = SamplingParams(max_new_tokens=16, stop=(late, early), seed=5)
    [cut] = backend.generate(QUESTION, 1, params, ignore_eos=True)

    assert cut.finish_reason == "stop"
    assert cut.text == full.text[: full.text.find(early)].strip()
    assert cut.completion_tokens < full.completion_tokens
    assert cut.extra["token_ids"] == full.extra["token_ids"][: cut.completion_tokens]


def test_it_stops_at_max_new_tokens(backend):
    params = SamplingParams(temperature=0, max_new_tokens=5, stop=())

    [sample] = backend.generate(QUESTION, 1, params, ignore_eos=True)

    assert sample.finish_reason == "length"
    assert sample.completion_tokens == 5


def test_it_stops_at_the_end_of_turn_token(backend, monkeypatch):
    params = SamplingParams(max_new_tokens=16, stop=(), seed=5)
    [free] = backend.generate(QUESTION, 1, params, ignore_eos=True)
    first, second = free.extra["token_ids"][:2]
    assert first != second
    # Make the second token the random model samples the end of its turn.
    monkeypatch.setattr(backend, "_end_ids", {second})

    [sample] = backend.generate(QUESTION, 1, params)

    assert sample.finish_reason == "eos"
    assert sample.extra["token_ids"] == [first]
    assert sample.completion_tokens == 1


def test_its_logprob_matches_a_plain_forward_pass(backend, plain_model):
    reply = "The capital of France is Paris."
    ids = context_ids(backend, QUESTION)
    reply_ids = backend.tokenizer(reply).input_ids
    logprobs = full_forward_logprobs(plain_model, ids + reply_ids)
    expected = sum(float(logprobs[len(ids) - 1 + i, t]) for i, t in enumerate(reply_ids))

    assert backend.logprob(QUESTION, reply) == pytest.approx(expected, abs=1e-3)


def test_a_samples_logprob_is_that_of_its_tokens(backend, plain_model):
    [sample] = backend.generate(QUESTION, 1, SamplingParams(max_new_tokens=10, stop=(), seed=3))
    ids = context_ids(backend, QUESTION)
    tokens = sample.extra["token_ids"]
    logprobs = full_forward_logprobs(plain_model, ids + tokens)

    expected = sum(float(logprobs[len(ids) - 1 + i, t]) for i, t in enumerate(tokens))
    assert sample.logprob == pytest.approx(expected, abs=1e-3)


def test_the_prefix_cache_changes_nothing_but_speed(backend, uncached):
    params = SamplingParams(max_new_tokens=16, stop=(), seed=11)
    first = backend.generate(QUESTION, 2, params)
    prefix = backend._prefixes[QUESTION.prompt_key].cache
    keys_before = prefix.layers[0].keys.clone()
    second = backend.generate(QUESTION, 2, params)
    without = uncached.generate(QUESTION, 2, params)
    backend.shared_prefix = False  # what architectures without the shared attention do
    try:
        copied = backend.generate(QUESTION, 2, params)
    finally:
        backend.shared_prefix = True

    def tokens(samples):
        return [sample.extra["token_ids"] for sample in samples]

    assert tokens(first) == tokens(second) == tokens(without) == tokens(copied)
    assert [s.logprob for s in first] == pytest.approx([s.logprob for s in without], abs=1e-4)
    assert torch.equal(prefix.layers[0].keys, keys_before)  # copied per call, never written
    assert backend.logprob(QUESTION, "Paris.") == pytest.approx(
        uncached.logprob(QUESTION, "Paris."), abs=1e-4
    )


def test_its_stream_reassembles_to_the_samples(backend):
    params = SamplingParams(max_new_tokens=16, stop=("e",), seed=1)

    events = list(backend.stream(QUESTION, 3, params))

    finals = [event for event in events if event.sample is not None]
    assert sorted(event.index for event in finals) == [0, 1, 2]
    for final in finals:
        deltas = [e.delta for e in events if e.index == final.index and e.sample is None]
        assert final.delta == ""
        assert "".join(deltas) == final.sample.text
        assert [e for e in events if e.index == final.index][-1] is final


def test_it_drops_old_turns_to_fit_the_window(tiny_lm_path):
    backend = TransformersBackend(tiny_lm_path, dtype="float32", max_context=120)
    turns = ["Can you help me write a poem about the sea?", "Of course, here it is."] * 4
    context = Context(
        prompt="Be helpful.",
        messages=tuple(
            Message("user" if i % 2 == 0 else "assistant", text) for i, text in enumerate(turns)
        )
        + (Message("user", "Thanks!"),),
    )
    params = SamplingParams(max_new_tokens=20, stop=(), seed=0)

    [sample] = backend.generate(context, 1, params)

    assert sample.dropped_turns > 0 and sample.dropped_turns % 2 == 0
    assert sample.prompt_tokens + params.max_new_tokens <= 120
    with pytest.raises(BackendError, match="does not fit"):
        backend.generate(context, 1, SamplingParams(max_new_tokens=119))


def test_it_renders_raw_transcripts_in_completion_mode(tiny_lm_path):
    backend = TransformersBackend(tiny_lm_path, dtype="float32", mode="completion")

    [sample] = backend.generate(QUESTION, 1, GREEDY)

    rendered = split_prefix(QUESTION, mode="completion", tokenizer=None)
    assert rendered.text.endswith("\n\nAssistant:")
    assert sample.prompt_tokens == len(backend.tokenizer(rendered.text).input_ids)


def test_it_sets_a_pad_token_distinct_from_eos(tokenizer, tiny_lm_model):
    tokenizer, model = copy.deepcopy(tokenizer), copy.deepcopy(tiny_lm_model)
    tokenizer.pad_token = tokenizer.eos_token

    set_distinct_pad_token(tokenizer, model)

    assert tokenizer.pad_token_id not in (None, tokenizer.eos_token_id)
    assert tokenizer.pad_token_id < model.get_input_embeddings().num_embeddings
    assert model.config.pad_token_id == tokenizer.pad_token_id


def test_float32_linears_through_onednn_change_nothing_but_speed(
    backend, tiny_lm_path, monkeypatch
):
    # The backend packs float32 linears on a CPU (packed_linear.py); F.linear is the reference.
    # The test's prompt is short: reorder its keys as a long prompt's would be.
    monkeypatch.setattr(shared_prefix, "PACKED_KEYS_MIN_TOKENS", 0)
    backend._prefixes.clear()
    plain = TransformersBackend(tiny_lm_path, dtype="float32", packed_linears=False)
    linears = sum(isinstance(m, torch.nn.Linear) for m in backend.model.modules())
    assert (backend.packed_linears, plain.packed_linears) == (linears, 0) and linears > 0
    params = SamplingParams(max_new_tokens=16, stop=(), seed=5)
    packed_samples, plain_samples = (
        backend.generate(QUESTION, 3, params),
        plain.generate(QUESTION, 3, params),
    )
    assert [s.extra["token_ids"] for s in packed_samples] == [
        s.extra["token_ids"] for s in plain_samples
    ]
    assert [s.logprob for s in packed_samples] == pytest.approx(
        [s.logprob for s in plain_samples], abs=1e-4
    )
    # The shared prefix's keys went through oneDNN too, one reordered matrix per key/value head.
    layers = backend._prefixes[QUESTION.prompt_key].shared
    heads = backend.model.config.num_key_value_heads
    assert layers and all(len(layer.packed_keys) == heads for layer in layers)
    assert all(layer.packed_keys is None for layer in plain._prefixes[QUESTION.prompt_key].shared)
    # With gradients on, a packed layer computes through F.linear (the reordered copy is a
    # constant), so gradients still reach the weights.
    layer = next(m for m in backend.model.modules() if isinstance(m, torch.nn.Linear))
    x = torch.randn(3, layer.in_features)
    with torch.enable_grad():
        layer(x).sum().backward()
    assert layer.weight.grad is not None
    layer.weight.grad = None
    with torch.no_grad():
        assert torch.allclose(layer(x), torch.nn.functional.linear(x, layer.weight), atol=1e-5)


def test_packed_linears_are_refused_where_they_do_not_apply(tiny_lm_path):
    with pytest.raises(BackendError, match="float32 on a CPU"):
        TransformersBackend(tiny_lm_path, dtype="bfloat16", packed_linears=True)
    assert TransformersBackend(tiny_lm_path, dtype="bfloat16").packed_linears == 0


def test_a_short_prefix_keeps_the_batched_matmul_for_its_keys(tiny_lm_path):
    backend = TransformersBackend(tiny_lm_path, dtype="float32")
    assert backend.packed_linears > 0
    backend.generate(QUESTION, 2, GREEDY)
    layers = backend._prefixes[QUESTION.prompt_key].shared
    assert layers[0].keys.shape[2] < shared_prefix.PACKED_KEYS_MIN_TOKENS
    assert all(layer.packed_keys is None for layer in layers)


def test_prefix_keys_onednn_cannot_reorder_take_the_batched_matmul(tiny_lm_path, monkeypatch):
    monkeypatch.setattr(shared_prefix, "PACKED_KEYS_MIN_TOKENS", 0)
    backend = TransformersBackend(tiny_lm_path, dtype="float32")
    assert backend.packed_linears > 0
    params = SamplingParams(max_new_tokens=12, stop=(), seed=2)
    expected = TransformersBackend(tiny_lm_path, dtype="float32").generate(QUESTION, 2, params)

    def refuses(weight, rows):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuses)
    samples = backend.generate(QUESTION, 2, params)
    layers = backend._prefixes[QUESTION.prompt_key].shared
    assert layers and all(layer.packed_keys is None for layer in layers)
    assert [s.extra["token_ids"] for s in samples] == [s.extra["token_ids"] for s in expected]
    assert [s.logprob for s in samples] == pytest.approx([s.logprob for s in expected], abs=1e-4)


def test_a_onednn_that_cannot_reorder_leaves_every_linear_as_it_was(tiny_lm_path, monkeypatch):
    def refuses(weight, rows):
        raise RuntimeError("could not create a primitive descriptor")

    monkeypatch.setattr(torch.ops.mkldnn, "_reorder_linear_weight", refuses)
    backend = TransformersBackend(tiny_lm_path, dtype="float32")
    assert backend.packed_linears == 0
    assert not any(hasattr(m, "alignlab_packed") for m in backend.model.modules())
    [sample] = backend.generate(QUESTION, 1, GREEDY)
    assert sample.completion_tokens > 0
