"""What every bench script reports about the machine it ran on, and how it saves its figures."""

from __future__ import annotations

import json
import platform
import subprocess
from pathlib import Path


def cpu_model() -> str:
    """lscpu's "Model name" (e.g. "AMD EPYC"), else what platform knows, else "unknown"."""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return platform.processor() or "unknown"
    names = [line.split(":", 1)[1].strip() for line in out.splitlines() if "Model name" in line]
    return names[0] if names else "unknown"


def write_json(path: Path | None, report: dict) -> None:
    """Save a script's report as indented JSON (parents made), when a path was given."""
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))


def run_header(threads: int) -> dict:
    """The keys every report starts with: the command line, the CPU, cores, threads, torch, and
    whether this CPU computes bf16 natively (ALIGNLAB_BF16 taken into account)."""
    import os
    import sys

    import torch

    from assistant.hardware import native_bf16

    return {
        "command": " ".join(sys.argv),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "threads": threads,
        "torch": torch.__version__,
        "native_bf16": native_bf16("cpu"),
    }
