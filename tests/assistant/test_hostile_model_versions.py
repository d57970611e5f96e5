"""Hostile model versions (issue 18), as an admin's stolen session would send them: paths outside
the model roots and cloud-metadata URLs are refused with a 400 naming the field, never a 500."""

from __future__ import annotations

import pytest

from assistant.models import ModelVersion
from assistant.services import model_version_register

pytestmark = pytest.mark.django_db


@pytest.fixture
def roots(settings, tmp_path):
    """A model root holding one model folder, and a symlink in it that leads out."""
    root = tmp_path / "models"
    (root / "tiny").mkdir(parents=True)
    (root / "tiny" / "config.json").write_text("{}")
    (root / "escape").symlink_to("/etc")
    settings.ALIGNLAB_MODEL_ROOTS = [root]
    return root


def register(api, **fields):
    return api.post("/api/model-versions/", {"kind": "lm", "name": "x", **fields}, format="json")


def test_paths_outside_the_model_roots_are_refused_alike(api, roots):
    answers = []
    for path in [
        "../../../../etc/passwd",
        "/",
        "/etc/passwd",
        "/nonexistent/x",
        str(roots / ".." / ".." / ".."),
        str(roots / "escape"),  # inside the root by name, /etc after the symlink
        str(roots / "escape" / "passwd"),
        "/" + "a" * 299,  # one name longer than the file system allows
        str(roots / ("b" * 300)),
    ]:
        response = register(api, path=path)
        assert response.status_code == 400, (path, response.content[:300])
        [message] = response.json()["path"]
        assert message.startswith(f"no model folder or file at {path!r} inside the model roots")
        answers.append(message.replace(repr(path), "PATH"))
    # Whether a path outside the roots exists or not, the answer is the same.
    assert len(set(answers)) == 1
    nul = register(api, path="/etc\x00/passwd")  # DRF refuses NUL in any CharField
    assert nul.status_code == 400 and "path" in nul.json()
    assert not ModelVersion.objects.exists()


def test_a_folder_inside_the_roots_is_registered_resolved(api, roots):
    response = register(api, path=str(roots / "tiny" / ".." / "tiny"))
    assert response.status_code == 201, response.json()
    assert response.json()["path"] == str((roots / "tiny").resolve())


def test_a_path_over_500_characters_is_a_400(api, roots):
    response = register(api, path="/" + "a/" * 300)
    assert response.status_code == 400 and "path" in response.json()


@pytest.mark.parametrize(
    "url",
    [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://METADATA.GOOGLE.INTERNAL./computeMetadata/v1/",
        "http://[fd00:ec2::254]/latest/meta-data/",
        "http://2852039166/latest/",  # 169.254.169.254 as one number
        "http://0xa9fea9fe/latest/",  # …in hex
        "http://169.254.1.1:8000/v1",
        "http://[fe80::1]:8000/v1",
        "http://[::ffff:169.254.169.254]/",
        "http://224.0.0.1/v1",
        "file:///etc/passwd",
        "gopher://gpu1:70/",
        "http:///v1",
        "http://gpu1:99999/v1",
        "http://gpu 1/v1",
        "http://[zz]/v1",  # not an IPv6 address: urlsplit raises
    ],
)
def test_model_server_urls_are_checked(api, url):
    response = register(api, backend="openai", url=url, remote_model="m")
    assert response.status_code == 400, (url, response.content[:300])
    assert "url" in response.json()
    assert not ModelVersion.objects.exists()


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8000/v1", "http://localhost:8000/v1", "http://10.0.0.5:8000/v1"]
)
def test_private_model_servers_are_allowed_unless_the_setting_says_no(api, settings, url):
    assert register(api, backend="openai", url=url, remote_model="m").status_code == 201
    settings.ALIGNLAB_ALLOW_PRIVATE_MODEL_HOSTS = False
    refused = register(api, backend="openai", url=url, remote_model="m")
    assert refused.status_code == 400 and "private" in str(refused.json()["url"])
    public = register(api, backend="openai", url="https://api.example.org/v1", remote_model="m")
    assert public.status_code == 201


def test_an_unused_path_on_a_server_backend_stays_inside_the_roots(api, roots):
    response = register(
        api, backend="openai", url="http://gpu1:8000/v1", remote_model="m", path="/etc/passwd"
    )
    assert response.status_code == 400 and "path" in response.json()


@pytest.mark.parametrize("field", ["generation_defaults", "backend_options", "metadata"])
def test_json_fields_that_are_not_objects_are_a_400(api, roots, field):
    response = register(api, path=str(roots / "tiny"), **{field: "x"})
    assert response.status_code == 400 and field in response.json()


def test_the_admin_form_refuses_what_the_api_refuses(client, adam, roots):
    client.force_login(adam)
    form = {
        "kind": "lm",
        "name": "x",
        "backend": "transformers",
        "path": "/etc",
        "url": "",
        "remote_model": "",
        "backend_options": "{}",
        "generation_defaults": "{}",
        "metadata": "{}",
    }
    refused = client.post("/admin/assistant/modelversion/add/", form)
    assert refused.status_code == 200 and "no model folder or file at" in refused.content.decode()
    metadata = {**form, "backend": "openai", "path": "", "url": "http://169.254.169.254/"}
    refused = client.post("/admin/assistant/modelversion/add/", metadata)
    assert refused.status_code == 200 and "cloud metadata service" in refused.content.decode()
    assert not ModelVersion.objects.exists()
    made = client.post("/admin/assistant/modelversion/add/", {**form, "path": str(roots / "tiny")})
    assert made.status_code == 302
    version = ModelVersion.objects.get()
    edit = client.post(
        f"/admin/assistant/modelversion/{version.pk}/change/", {**form, "path": "/etc"}
    )
    assert edit.status_code == 200 and "no model folder or file at" in edit.content.decode()


def test_trusted_code_registers_any_folder(tmp_path):
    """The register_model command, training and tests call the service unconfined."""
    version = model_version_register(kind="lm", name="anywhere", path=str(tmp_path))
    assert version.path == str(tmp_path.resolve())
