"""The model registry and versioned prompts (assistant services, admin, signal)."""

import pytest
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from assistant import services
from assistant.models import ModelVersion, PromptTemplate
from assistant.selectors import active_model, prompt_latest
from assistant.signals import model_version_registered

pytestmark = pytest.mark.django_db


@pytest.fixture
def heard():
    """Versions the registration signal announced."""
    versions = []

    def listener(sender, version, **kwargs):
        versions.append(version)

    model_version_registered.connect(listener)
    yield versions
    model_version_registered.disconnect(listener)


def register_tiny(path, **kwargs):
    return services.model_version_register(kind="lm", name="tiny", path=str(path), **kwargs)


def test_it_announces_a_registered_version_after_commit(
    tiny_lm_path, heard, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        version = register_tiny(tiny_lm_path)
        assert heard == []  # listeners must not see a row that may still roll back
    for callback in callbacks:
        callback()
    assert heard == [version]


def test_it_rejects_a_local_model_that_is_not_there(tmp_path):
    with pytest.raises(ValidationError, match="no model folder"):
        register_tiny(tmp_path / "missing")
    assert not ModelVersion.objects.exists()


def test_it_needs_a_url_for_a_model_server():
    with pytest.raises(ValidationError, match="URL"):
        services.model_version_register(kind="lm", name="x", backend="openai")
    version = services.model_version_register(
        kind="lm", name="vllm", backend="openai", url="http://gpu1:8000/v1", remote_model="m"
    )
    assert version.path == ""


def test_it_rejects_bad_generation_defaults(tiny_lm_path):
    with pytest.raises(ValidationError, match="top_p"):
        register_tiny(tiny_lm_path, generation_defaults={"top_p": 2})
    with pytest.raises(ValidationError, match="unexpected keyword"):
        register_tiny(tiny_lm_path, generation_defaults={"temprature": 0.5})


def test_one_version_per_kind_is_active(tiny_lm_path):
    first = register_tiny(tiny_lm_path, activate=True)
    second = register_tiny(tiny_lm_path)
    pm = services.model_version_register(
        kind="pm", name="pm", path=str(tiny_lm_path), activate=True
    )
    assert active_model(kind="lm") == first
    services.model_version_activate(version=second)
    assert active_model(kind="lm") == second
    assert list(ModelVersion.objects.filter(is_active=True).order_by("kind")) == [second, pm]
    with pytest.raises(IntegrityError), transaction.atomic():
        ModelVersion.objects.filter(pk=first.pk).update(is_active=True)  # the database says no too


def test_editing_a_prompt_makes_a_new_version():
    v2 = services.prompt_template_create(name="hhh", text="Be helpful, honest and harmless.")
    assert v2.version == 2  # version 1 is the HHH prompt the migration stores
    assert (
        services.prompt_template_create(name="hhh", text=v2.text) == v2
    )  # same text, same version
    v3 = services.prompt_template_create(name="hhh", text="Be kind.")
    assert (v3.version, prompt_latest(name="hhh")) == (3, v3)
    v2.text = "changed in place"
    with pytest.raises(ValidationError, match="never changes"):
        v2.save()


def test_the_hhh_prompt_is_stored_in_the_papers_format():
    prompt = PromptTemplate.objects.get(name="hhh", version=1)
    preamble, *dialogues = prompt.text.split("\n\n-----\n\n")
    assert all(word in preamble for word in ("helpful", "honest", "harmless", "polite", "humble"))
    assert len(dialogues) >= 10
    for dialogue in dialogues:
        turns = dialogue.strip().split("\n\n")
        speakers = [t.split(":", 1)[0] for t in turns if t.startswith(("Human:", "Assistant:"))]
        assert speakers[0] == "Human" and speakers[-1] == "Assistant"
        assert all(a != b for a, b in zip(speakers, speakers[1:], strict=False))
    assert len(prompt.text.split()) > 2500


def test_an_admin_edit_of_a_prompt_saves_a_new_version(client, adam):
    client.force_login(adam)
    original = PromptTemplate.objects.get(name="hhh", version=1)
    text_before = original.text
    response = client.post(
        f"/admin/assistant/prompttemplate/{original.pk}/change/",
        {
            "name": "hhh",
            "text": original.text + "\n\nHuman: Hi\n\nAssistant: Hello!",
            "notes": "greeting",
        },
    )
    assert response.status_code == 302
    original.refresh_from_db()
    assert original.text == text_before  # samples made with version 1 still say what it was
    latest = prompt_latest(name="hhh")
    assert latest.version == 2 and latest.text.endswith("Hello!") and latest.created_by == adam


def test_an_admin_adds_a_model_through_the_service(
    client, adam, tiny_lm_path, heard, django_capture_on_commit_callbacks, settings
):
    settings.ALIGNLAB_MODEL_ROOTS = [tiny_lm_path]  # the admin registers inside the roots only
    client.force_login(adam)
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(
            "/admin/assistant/modelversion/add/",
            {
                "kind": "lm",
                "name": "tiny",
                "backend": "transformers",
                "path": str(tiny_lm_path),
                "url": "",
                "remote_model": "",
                "backend_options": "{}",
                "generation_defaults": "{}",
                "metadata": "{}",
            },
        )
    assert response.status_code == 302, response.content.decode()[:2000]
    assert [v.name for v in heard] == ["tiny"]


def test_researchers_read_models_but_do_not_change_them(client, rita):
    client.force_login(rita)
    rita.is_staff = True
    rita.save()
    assert client.get("/admin/assistant/modelversion/").status_code == 200
    assert client.get("/admin/assistant/modelversion/add/").status_code == 403
