"""Whether a device computes bfloat16 natively, and what a bf16 request resolves to there.

Every bf16 choice asks here: training autocast, PM scoring (and so evals), the LM backend's
dtype "auto", the bench scripts. Without native support (a CPU without AVX-512/AMX, such as
an AVX2-only EPYC) torch emulates bfloat16: a 1024² matmul ran ~80x slower than in float32.

The ALIGNLAB_BF16 setting overrides the probe for every "auto": "off" behaves as if no device
had native bf16 (CI stands in for an AVX2-only CPU on one that has it), "on" as if every device
had it. An explicit True / False is always obeyed.
"""

from __future__ import annotations

import contextlib
import functools
import os
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

BF16_SETTINGS = ("auto", "off", "on")


def bf16_setting() -> str:
    """ALIGNLAB_BF16: Django's setting where settings are configured, else the environment."""
    from django.conf import settings

    if settings.configured:
        value = getattr(settings, "ALIGNLAB_BF16", "auto")
    else:  # bench scripts and plain-torch callers outside Django
        value = os.environ.get("ALIGNLAB_BF16") or "auto"
    value = value.lower()
    if value not in BF16_SETTINGS:
        raise ValueError(f"ALIGNLAB_BF16={value!r} is not one of {', '.join(BF16_SETTINGS)}")
    return value


def _device(device: str | torch.device | None) -> torch.device:
    import torch  # here, not at the top: the web process validates configs without torch

    # None: where training and the backends put a model by default.
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


@functools.cache
def _probe(device_type: str) -> bool:
    import torch

    if device_type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device_type == "cpu":
        try:
            return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
        except (AttributeError, RuntimeError):
            return False
    return False


def native_bf16(device: str | torch.device | None = None) -> bool:
    """Whether `device` computes bfloat16 natively (ALIGNLAB_BF16 "off"/"on" override the probe)."""
    setting = bf16_setting()
    if setting != "auto":
        return setting == "on"
    return _probe(_device(device).type)


def check_bf16_request(requested: bool | str) -> None:
    """Raise ValueError unless `requested` is True, False or "auto" (not 1, "yes", None)."""
    if not (requested is True or requested is False or requested == "auto"):
        raise ValueError(f"bf16 must be true, false or 'auto', not {requested!r}")


def resolve_bf16(requested: bool | str | None, device: str | torch.device | None = None) -> bool:
    """Whether to compute in bf16: True / False as asked, "auto" (or None) where it is native."""
    check_bf16_request("auto" if requested is None else requested)
    if requested is True or requested is False:
        return requested
    return native_bf16(device)


def bf16_autocast(requested: bool | str | None, device: str | torch.device | None = None):
    """torch.autocast to bfloat16 where `requested` resolves to bf16 on `device`, else a no-op."""
    import torch

    device = _device(device)
    if resolve_bf16(requested, device):
        return torch.autocast(device.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def bf16_warning(requested: bool | str | None, device: str | torch.device | None = None) -> str:
    """The warning for an explicit bf16 request on a device that only emulates it, else ""."""
    if requested is not True or native_bf16(device):
        return ""
    lacks = "has no native bfloat16 (AVX-512/AMX on a CPU)"
    if bf16_setting() == "off":
        lacks = "is treated as having no native bfloat16 (ALIGNLAB_BF16=off)"
    return (
        f"warning: bf16 was requested, but this {_device(device).type} {lacks}: torch emulates "
        "it, far slower than float32 (~80x for a matmul on an AVX2-only CPU). Leave bf16 "
        "'auto' to compute in float32 here."
    )


def bf16_path(enabled: bool, device: str | torch.device | None = None) -> str:
    """Which path a computation takes, for bench output: "bf16 (native)", "float32 (no native
    bf16)", …"""
    native = native_bf16(device)
    if enabled:
        return "bf16 (native)" if native else "bf16 (emulated: far slower)"
    if native:
        return "float32"
    reason = "ALIGNLAB_BF16=off" if bf16_setting() == "off" else "no native bf16"
    return f"float32 ({reason})"
