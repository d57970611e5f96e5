"""compose.yaml can't run here (no Docker): check that every service points at real code."""

import importlib
import re
import shlex

import pytest
import yaml
from django.conf import settings
from django.core.management import get_commands

from tests.conftest import ROOT

COMPOSE = yaml.safe_load((ROOT / "compose.yaml").read_text())
SERVICES = COMPOSE["services"]
APP_SERVICES = [name for name, service in SERVICES.items() if "build" in service]


def argv(service) -> list[str]:
    command = service["command"]
    if isinstance(command, list):
        return command
    # `sh -c "a && b"`: check every command of the chain
    return shlex.split(command)


def commands_of(service) -> list[list[str]]:
    words = argv(service)
    if words[:2] == ["sh", "-c"]:
        return [shlex.split(part) for part in re.split(r"&&|;", words[2])]
    return [words]


def test_it_has_the_production_services():
    assert {"postgres", "redis", "web", "worker-default", "worker-training", "beat"} <= set(
        SERVICES
    )
    for name in ("postgres", "redis", "web", "worker-default", "worker-training"):
        assert "healthcheck" in SERVICES[name], name
    assert (ROOT / "Dockerfile").exists()


@pytest.mark.parametrize("name", APP_SERVICES)
def test_each_command_refers_to_real_code(name):
    known_commands = get_commands()
    queues = {queue.name for queue in settings.CELERY_TASK_QUEUES}
    for words in commands_of(SERVICES[name]):
        program = words[0]
        if program == "python" and words[1] == "manage.py":
            assert words[2] in known_commands, f"{name}: no management command {words[2]!r}"
        elif program == "granian":
            assert words[words.index("--interface") + 1] == "wsgi", name
            targets = [word for word in words[1:] if ":" in word and not word.startswith("-")]
            module, attribute = targets[0].split(":")
            assert callable(getattr(importlib.import_module(module), attribute))
            assert "--respawn-failed-workers" in words, name
        elif program == "celery":
            assert words[1:3] == ["-A", "config"]
            importlib.import_module("config.celery")
            if words[3] == "worker":
                served = set(words[words.index("-Q") + 1].split(","))
                assert served <= queues, f"{name}: unknown queues {served - queues}"
            elif words[3] == "beat":
                scheduler = words[words.index("--scheduler") + 1]
                module, _, cls = scheduler.partition(":")
                assert getattr(importlib.import_module(module), cls)
                assert scheduler == settings.CELERY_BEAT_SCHEDULER
            else:
                pytest.fail(f"{name}: unexpected celery command {words[3]}")
        else:
            pytest.fail(f"{name}: unexpected program {program!r}")


def test_every_queue_has_a_worker():
    served = set()
    for name in APP_SERVICES:
        words = argv(SERVICES[name])
        if "worker" in words:
            served |= set(words[words.index("-Q") + 1].split(","))
    assert served == {queue.name for queue in settings.CELERY_TASK_QUEUES}


def test_app_environment_names_settings_that_exist():
    source = (ROOT / "config" / "settings.py").read_text()
    for name in APP_SERVICES:
        for variable in SERVICES[name]["environment"]:
            assert f'"{variable}"' in source, f"{name}: settings never read {variable}"
    assert SERVICES["web"]["environment"]["DEBUG"] == "0"
