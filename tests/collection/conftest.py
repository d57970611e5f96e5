import copy

import pytest

from assistant import runtime
from assistant.pm import PreferenceModel, save_pm
from assistant.services import model_version_activate, model_version_register
from collection.models import Campaign
from tests.tinymodels import save_tiny_lm, tiny_causal_lm, tiny_tokenizer


@pytest.fixture(scope="session")
def tiny_lm_path(tmp_path_factory):
    """A tiny random causal LM saved as a Hugging Face folder (context window: 512 tokens)."""
    return save_tiny_lm(tmp_path_factory.mktemp("tiny-lm"))


@pytest.fixture
def tiny_lm_version(db, tiny_lm_path):
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
def make_campaign(tiny_lm_version):
    """Campaigns on the tiny LM with no prompt (the HHH prompt does not fit its context)."""

    def make(**fields):
        defaults = {
            "name": "Be helpful",
            "lm_version": tiny_lm_version,
            "prompt": None,
            "max_turns": 3,
        }
        return Campaign.objects.create(**{**defaults, **fields})

    return make


def save_tiny_pm(path, *, seed: int = 0):
    tokenizer = copy.deepcopy(tiny_tokenizer())
    pm = PreferenceModel.from_backbone(
        tiny_causal_lm(tokenizer, seed=seed).model, tokenizer, max_length=128
    )
    save_pm(pm, tokenizer, path, {})
    return path


@pytest.fixture(scope="session")
def tiny_pm_path(tmp_path_factory):
    """A tiny random preference model (causal backbone, untrained head) saved as a PM folder."""
    return save_tiny_pm(tmp_path_factory.mktemp("tiny-pm") / "pm")


@pytest.fixture
def active_pm(db, tiny_pm_path):
    """The tiny PM registered and active (it scores every generated turn)."""
    version = model_version_register(kind="pm", name="tiny pm", path=str(tiny_pm_path))
    model_version_activate(version=version)
    yield version
    runtime.unload_all()


@pytest.fixture
def media_root(settings, tmp_path):
    """Snapshots write their frozen id lists under MEDIA_ROOT: keep them in the test's folder.

    Not autouse: the dataset and judging tests ask for it with
    `pytest.mark.usefixtures("media_root")`."""
    settings.MEDIA_ROOT = tmp_path / "media"


@pytest.fixture
def pairwise():
    """A pairwise campaign on no model (its data is written directly or imported)."""
    return Campaign.objects.create(name="pairs", k=2)


@pytest.fixture
def ranking_campaign():
    """A ranking campaign of 3 responses in the honest mode, on no model."""
    return Campaign.objects.create(name="ranks", k=3, judgement_type="ranking", mode="honest")


@pytest.fixture
def active_lm(db, tmp_path):
    """An LM registered (on an empty folder: nothing generates) and made the active one."""
    return model_version_register(kind="lm", name="chat-lm", path=str(tmp_path), activate=True)


@pytest.fixture
def lm(db):
    """An LM model version as a row, not a registration: nothing generates with it."""
    from assistant.models import ModelVersion

    return ModelVersion.objects.create(kind="lm", name="lm", path="/models/none")


@pytest.fixture
def conversation(lm, alice):
    """alice's conversation in a campaign on `lm` (tests/collection/turn_builders.py)."""
    from collection.conversations import conversation_start
    from tests.collection.turn_builders import make_campaign

    return conversation_start(campaign=make_campaign(lm), contractor=alice)
