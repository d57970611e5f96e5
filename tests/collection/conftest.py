import pytest

from assistant import runtime
from assistant.services import model_version_register
from collection.models import Campaign
from tests.tinymodels import save_tiny_lm


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    """A tiny random causal LM saved as a Hugging Face folder (context window: 512 tokens)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tiny_lm(db, tiny_lm_path):
    """The tiny LM registered as a model version."""
    version = model_version_register(
        kind="lm", name="tiny", path=str(tiny_lm_path), generation_defaults={"max_new_tokens": 12}
    )
    yield version
    runtime.unload_all()


@pytest.fixture
def tiny(db, tiny_lm_path):
    """The tiny LM as a seeded model version that writes at most 6 tokens (quick, repeatable)."""
    version = model_version_register(
        kind="lm",
        name="tiny",
        path=str(tiny_lm_path),
        generation_defaults={"max_new_tokens": 6, "seed": 0},
    )
    yield version
    runtime.unload_all()


@pytest.fixture
def make_campaign(tiny_lm):
    """Campaigns on the tiny LM with no prompt (the HHH prompt does not fit its context)."""

    def make(**fields):
        defaults = {"name": "Be helpful", "lm_version": tiny_lm, "prompt": None, "max_turns": 3}
        return Campaign.objects.create(**{**defaults, **fields})

    return make
