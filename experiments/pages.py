"""What the report page and its self-contained download draw: the report's numbers as SVG
charts (evals.charts: the curves with interval whiskers, grouped bars, reliability diagrams)."""

from __future__ import annotations

import math

from evals.charts import grouped_bars_svg, line_chart_svg, reliability_svg

from .models import Experiment
from .report import METRIC_LABELS, experiment_report


def _y_range(series: dict) -> tuple[float, float]:
    """An accuracy axis to the nearest 0.1 around every interval (chance, 0.5, always in)."""
    lows = [p[2] for points in series.values() for p in points] + [0.5]
    highs = [p[3] for points in series.values() for p in points] + [0.5]
    return math.floor(min(lows) * 10) / 10, math.ceil(max(highs) * 10) / 10


def curve_svg(series: dict, metric: str, title: str) -> str:
    """Accuracy against training comparisons (log scale), one line per condition, each point
    with its 95 % interval."""
    if not series:
        return ""
    return line_chart_svg(
        {name: [(x, acc) for x, acc, _, _ in points] for name, points in series.items()},
        intervals={
            name: [(low, high) for *_, low, high in points] for name, points in series.items()
        },
        title=title,
        x_label="training comparisons (log scale)",
        y_label=METRIC_LABELS[metric],
        y_range=_y_range(series),
        log_x=True,
    )


def curves_svg(experiment: Experiment) -> str:
    """The held-out curve of an experiment ("" when it has no sized condition measured)."""
    report = experiment_report(experiment)
    return curve_svg(
        report["curves"]["held_out"], "held_out", f"{experiment.name}: held-out accuracy"
    )


def _calibration(report: dict) -> list[dict]:
    """A reliability diagram per condition that has one, at its largest size (first seed)."""
    shown, diagrams = set(), []
    cells = sorted(report["cells"], key=lambda r: -(r["size"] or 10**12))
    for row in cells:
        if row["calibration"] and row["condition"] not in shown:
            shown.add(row["condition"])
            diagrams.append(
                {
                    "condition": row["condition"],
                    "size": row["size_label"],
                    "ece": row["calibration"].get("ece"),
                    "svg": reliability_svg(row["calibration"]["bins"]),
                }
            )
    return diagrams


def report_context(experiment: Experiment) -> dict:
    """The template context of the report page and of its download."""
    report = experiment_report(experiment)
    charts = [
        {
            "metric": metric,
            "svg": curve_svg(series, metric, f"{METRIC_LABELS[metric]} vs comparisons"),
        }
        for metric, series in report["curves"].items()
        if series
    ]
    bars = grouped_bars_svg(
        report["hhh_categories"],
        title="HHH evaluation by category (largest size of each condition)",
        y_label="accuracy",
    )
    return {
        "experiment": experiment,
        "report": report,
        "curve_charts": charts,
        "hhh_bars": bars,
        "calibration": _calibration(report),
    }
