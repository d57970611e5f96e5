"""Models load once per process; the management commands work on registered versions."""

import io
import os
import subprocess
import sys

import pytest
from django.core.management import CommandError, call_command
from django.db import connection

from assistant import runtime, services
from assistant.backends import Message
from assistant.selectors import prompt_latest
from tests.conftest import ROOT, database_url

pytestmark = pytest.mark.django_db


@pytest.fixture
def tiny_version(tiny_lm_path):
    version = services.model_version_register(
        kind="lm",
        name="tiny",
        path=str(tiny_lm_path),
        activate=True,
        generation_defaults={"temperature": 0.7, "max_new_tokens": 8},
    )
    yield version
    runtime.unload_all()


def test_a_model_is_loaded_once_per_process(tiny_version):
    backend = runtime.lm_backend(tiny_version)
    assert runtime.lm_backend(tiny_version) is backend
    tiny_version.backend_options = {"dtype": "float32"}
    assert runtime.lm_backend(tiny_version) is not backend  # other options, another model


def test_a_context_carries_the_prompt_version():
    prompt = prompt_latest(name="hhh")
    context = runtime.build_context([{"role": "user", "content": "Hi"}], prompt)
    assert context.prompt == prompt.text and context.prompt_key.startswith("hhh@1#")
    assert runtime.build_context([Message("user", "Hi")], None).prompt is None


def test_sampling_params_start_from_the_version_defaults(tiny_version):
    params = runtime.sampling_params(tiny_version, temperature=None, seed=3)
    assert (params.temperature, params.max_new_tokens, params.seed) == (0.7, 8, 3)


def test_register_model_and_models_commands(tiny_lm_path):
    out = io.StringIO()
    call_command(
        "register_model", "--name", "tiny", "--path", str(tiny_lm_path), "--activate", stdout=out
    )
    assert "(active)" in out.getvalue()
    call_command(
        "register_model",
        "--name",
        "vllm",
        "--url",
        "http://gpu1:8000/v1",
        "--remote-model",
        "meta-llama/Llama-3.1-8B-Instruct",
        stdout=out,
    )
    listing = io.StringIO()
    call_command("models", stdout=listing)
    assert "tiny" in listing.getvalue() and "http://gpu1:8000/v1" in listing.getvalue()
    with pytest.raises(CommandError, match="no model folder"):
        call_command("register_model", "--name", "x", "--path", "/nonexistent")
    with pytest.raises(CommandError, match="remote-model"):
        call_command("register_model", "--name", "x", "--url", "http://gpu1:8000/v1")


def test_chat_answers_each_line_with_the_tiny_model(tiny_version, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\nAnd again?\n\n"))
    out = io.StringIO()
    call_command(
        "chat", "--prompt", "none", "--seed", "1", "--k", "2", stdout=out, stderr=io.StringIO()
    )
    lines = out.getvalue().splitlines()
    assert [line.split("]")[0] for line in lines] == ["Assistant [1", "Assistant [2"] * 2


@pytest.mark.real_model
@pytest.mark.django_db(transaction=True, serialized_rollback=True)
def test_chat_answers_with_the_hhh_prompted_default_model():
    """`python manage.py chat` on the default model from PyPI, converted on first use."""
    env = dict(os.environ, DATABASE_URL=database_url(connection.settings_dict))
    result = subprocess.run(
        [sys.executable, "manage.py", "chat", "--temperature", "0"],
        input="What is the capital of France?\n",
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=600,
        env=env,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "with prompt hhh@1" in result.stderr
    assert "Paris" in result.stdout


def test_chat_says_clearly_when_the_prompt_does_not_fit(tiny_version, monkeypatch):
    monkeypatch.setattr(sys, "stdin", io.StringIO("Hello there\n"))
    with pytest.raises(CommandError, match="does not fit"):  # the tiny model's window is 512
        call_command("chat", stdout=io.StringIO(), stderr=io.StringIO())
