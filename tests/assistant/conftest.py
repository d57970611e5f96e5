import pytest

from tests.tinymodels import save_tiny_lm, tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def tiny_lm_model(tokenizer):
    return tiny_causal_lm(tokenizer)


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    """A tiny random causal LM saved as a Hugging Face folder."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def server():
    """The fake OpenAI-compatible model server of openai_server.py, running for the test."""
    from tests.assistant.openai_server import FakeModelServer

    fake = FakeModelServer()
    fake.thread.start()
    yield fake
    fake.stopping.set()
    fake.httpd.shutdown()
    fake.httpd.server_close()
