"""Fixtures of the eval tests: a tiny PM registered, and a data root of its own."""

import pytest


@pytest.fixture
def data_root(tmp_path, settings):
    root = tmp_path / "data"
    root.mkdir()
    settings.ALIGNLAB_DATA_ROOTS = [root]
    settings.COLLECTION_UPLOADS_DIR = tmp_path / "uploads"
    return root


@pytest.fixture(scope="session")
def tiny_pm_folder(tmp_path_factory):
    from assistant.pm import save_pm  # torch: loaded only by the tests that ask for a PM
    from tests.training.toy_pm import tiny_pm

    model, tokenizer = tiny_pm(max_length=128)
    folder = tmp_path_factory.mktemp("pm") / "pm"
    save_pm(model, tokenizer, folder, {})
    return folder


@pytest.fixture
def pm_version(db, tiny_pm_folder):
    from assistant import runtime
    from assistant.services import model_version_register

    yield model_version_register(kind="pm", name="tiny pm", path=str(tiny_pm_folder))
    runtime.unload_all()
