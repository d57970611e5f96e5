from concurrent.futures import ThreadPoolExecutor
from unittest import mock

import pytest

from assistant import default_model
from assistant.backends.base import Context, Message, SamplingParams
from assistant.backends.hf import TransformersBackend
from assistant.default_model import PAD_TOKEN, convert_gguf, ensure_default_model


@pytest.fixture(scope="session")
def conversion(tmp_path_factory):
    """The default model converted once per test session, asked for by two threads at once (as
    the web server and a worker, or two test workers, do): (their two answers, conversions)."""
    models = tmp_path_factory.mktemp("models")
    conversions = []

    def counted(*args):
        conversions.append(args)
        convert_gguf(*args)

    with mock.patch.object(default_model, "convert_gguf", counted):
        with ThreadPoolExecutor(2) as pool:
            answers = list(pool.map(lambda _: ensure_default_model(models), range(2)))
    return answers, len(conversions)


@pytest.fixture(scope="session")
def default_model_path(conversion):
    return conversion[0][0]


@pytest.mark.real_model
def test_two_callers_at_once_get_one_conversion(conversion):
    (first, second), conversions = conversion
    assert first == second and (first / "model.safetensors").exists()
    assert conversions == 1  # the second waited for the first's lock, then found its folder


@pytest.mark.real_model
def test_it_converts_the_gguf_once_into_a_trainable_folder(default_model_path):
    weights = default_model_path / "model.safetensors"
    written = weights.stat().st_mtime_ns

    assert ensure_default_model(default_model_path.parent) == default_model_path
    assert weights.stat().st_mtime_ns == written  # not converted again
    assert not [p for p in default_model_path.parent.iterdir() if p.name.startswith(".")]
    assert (default_model_path / "chat_template.jinja").exists()
    assert "quantization_config" not in (default_model_path / "config.json").read_text()


@pytest.mark.real_model
def test_it_answers_a_simple_question(default_model_path):
    backend = TransformersBackend(default_model_path)
    context = Context(messages=(Message("user", "What is the capital of France?"),))

    [answer] = backend.generate(context, 1, SamplingParams(temperature=0, max_new_tokens=24))

    assert backend.mode == "chat"
    assert backend.tokenizer.pad_token == PAD_TOKEN != backend.tokenizer.eos_token
    assert "Paris" in answer.text  # greedy says "The capital of France is Paris."
    assert answer.finish_reason == "eos"
