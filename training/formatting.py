"""How training metrics are written for people: in the run's log lines and on its page.

A learning rate is always in scientific notation (5.45e-06, never 0.0000); other small or large
floats too; the rest with four decimals. Plain Python, no Django.
"""

from __future__ import annotations

import math

# Metrics whose values are learning rates (the schedule's lr of each step).
SCIENTIFIC = {"lr"}


def format_metric(name: str, value) -> str:
    """`value` of the metric `name` as text: "5.45e-06" for an lr, "0.6931" for a loss, "12"."""
    if value is None:
        return "—"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if not math.isfinite(value):
        return str(value)
    if name in SCIENTIFIC or (value != 0 and not 1e-3 <= abs(value) < 1e5):
        return f"{value:.2e}"
    return f"{value:.4f}"


def format_log_line(step: int, total: int, metrics: dict) -> str:
    """One progress line of a run's log: "step 3/12 loss=0.6931 lr=5.45e-06 …"."""
    return f"step {step}/{total} " + " ".join(
        f"{key}={format_metric(key, value)}" for key, value in metrics.items() if key != "step"
    )
