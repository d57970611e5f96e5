import pytest

from assistant.backends.base import Context, Message, SamplingParams
from assistant.backends.hf import TransformersBackend
from assistant.default_model import PAD_TOKEN, ensure_default_model


@pytest.fixture(scope="session")
def default_model_path(tmp_path_factory):
    """The default model converted once per test session."""
    return ensure_default_model(tmp_path_factory.mktemp("models"))


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
