"""bf16 only where the device computes it natively, the ALIGNLAB_BF16 override, and the warning."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from assistant import hardware
from assistant.backends.hf import _resolve_dtype
from assistant.hardware import (
    bf16_autocast,
    bf16_path,
    bf16_warning,
    check_bf16_request,
    native_bf16,
    resolve_bf16,
)

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def emulated(monkeypatch, settings):
    """A CPU (and GPU) without native bf16, such as the AVX2-only EPYC of issue 12."""
    settings.ALIGNLAB_BF16 = "auto"  # the probe decides, whatever the environment says
    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)


@pytest.fixture
def native(monkeypatch, settings):
    settings.ALIGNLAB_BF16 = "auto"
    monkeypatch.setattr(hardware, "_probe", lambda device_type: True)


def test_auto_is_bf16_only_where_native_and_explicit_requests_are_obeyed(emulated):
    assert native_bf16("cpu") is False
    assert resolve_bf16("auto", "cpu") is False and resolve_bf16(None, "cpu") is False
    assert resolve_bf16(True, "cpu") is True and resolve_bf16(False, "cpu") is False
    assert _resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert _resolve_dtype("auto", torch.device("cuda")) == torch.float16
    with bf16_autocast("auto", "cpu"):
        assert not torch.is_autocast_enabled("cpu")
    with bf16_autocast(True, "cpu"):
        assert torch.is_autocast_enabled("cpu")
        assert torch.get_autocast_dtype("cpu") == torch.bfloat16


def test_auto_takes_bf16_where_native(native):
    assert resolve_bf16("auto", "cpu") is True
    assert _resolve_dtype("auto", torch.device("cpu")) == torch.bfloat16
    assert resolve_bf16(False, "cpu") is False
    assert bf16_warning(True, "cpu") == ""
    assert bf16_path(True, "cpu") == "bf16 (native)" and bf16_path(False, "cpu") == "float32"


def test_the_setting_overrides_the_probe(native, settings, monkeypatch):
    settings.ALIGNLAB_BF16 = "off"  # CI standing in for an AVX2-only CPU
    assert native_bf16("cpu") is False and native_bf16("cuda") is False
    assert resolve_bf16("auto", "cpu") is False
    assert _resolve_dtype("auto", torch.device("cpu")) == torch.float32
    assert resolve_bf16(True, "cpu") is True  # an explicit request still wins...
    assert "far slower" in bf16_warning(True, "cpu")  # ...with the warning
    assert bf16_path(False, "cpu") == "float32 (ALIGNLAB_BF16=off)"

    monkeypatch.setattr(hardware, "_probe", lambda device_type: False)
    settings.ALIGNLAB_BF16 = "on"
    assert resolve_bf16("auto", "cpu") is True and bf16_warning(True, "cpu") == ""


def test_the_warning_is_for_explicit_requests_on_emulating_devices_only(emulated):
    warning = bf16_warning(True, "cpu")
    assert "no native bfloat16" in warning and "far slower" in warning and "'auto'" in warning
    assert bf16_warning("auto", "cpu") == "" and bf16_warning(False, "cpu") == ""
    assert bf16_path(True, "cpu") == "bf16 (emulated: far slower)"
    assert bf16_path(False, "cpu") == "float32 (no native bf16)"


@pytest.mark.parametrize("value", [1, 0, "yes", "on", None, "bf16"])
def test_only_true_false_and_auto_are_bf16_requests(value):
    with pytest.raises(ValueError, match="bf16 must be"):
        check_bf16_request(value)
    if value is not None:  # None means "auto" to resolve_bf16 (a caller that passed nothing)
        with pytest.raises(ValueError, match="bf16 must be"):
            resolve_bf16(value, "cpu")


def test_the_environment_variable_outside_django_and_in_settings():
    env = {k: v for k, v in os.environ.items() if k != "DJANGO_SETTINGS_MODULE"}
    script = (
        "from assistant.hardware import native_bf16, resolve_bf16; "
        "print(native_bf16('cpu'), resolve_bf16('auto', 'cpu'), resolve_bf16(True, 'cpu'))"
    )
    plain = subprocess.run(
        [sys.executable, "-c", script],
        cwd=ROOT,
        env={**env, "ALIGNLAB_BF16": "off"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert plain.stdout.split() == ["False", "False", "True"], plain.stderr

    refused = subprocess.run(
        [sys.executable, "-c", "import config.settings"],
        cwd=ROOT,
        env={**env, "ALIGNLAB_BF16": "maybe"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode != 0 and "ALIGNLAB_BF16='maybe' is not auto, off or on" in (
        refused.stderr
    )
