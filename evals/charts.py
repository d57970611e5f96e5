"""Server-rendered charts for the eval reports: plain data for CSS bars, and small SVGs.

Every number that goes into an SVG is formatted as a float here, and every label is escaped,
so the templates may mark the SVG safe.
"""

from __future__ import annotations

from django.utils.html import escape

from assistant.models import ModelVersion
from training.models import TrainingRun

from .models import EvalRun


def category_bars(results: dict) -> list[dict]:
    """One bar per category (and overall): accuracy and its confidence interval, in percent."""
    bars = []
    categories = dict(results.get("categories", {}))
    if "overall" in results and "accuracy" in results["overall"]:
        categories["overall"] = results["overall"]
    for name, cell in categories.items():
        if cell.get("accuracy") is None:
            continue
        bars.append(
            {
                "label": name,
                "n": cell.get("n"),
                "accuracy": 100 * cell["accuracy"],
                "low": 100 * cell.get("low", cell["accuracy"]),
                "high": 100 * cell.get("high", cell["accuracy"]),
            }
        )
    return bars


def reliability_svg(bins: list[dict], size: int = 260) -> str:
    """A reliability diagram: observed frequency against mean predicted probability per bin."""
    pad = 30
    span = size - 2 * pad

    def x(p):
        return pad + float(p) * span

    def y(p):
        return size - pad - float(p) * span

    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {size} {size}" width="{size}" '
        f'height="{size}" role="img" aria-label="reliability diagram">',
        f'<rect x="{pad}" y="{pad}" width="{span}" height="{span}" fill="none" stroke="#bbb"/>',
        f'<line x1="{x(0):.1f}" y1="{y(0):.1f}" x2="{x(1):.1f}" y2="{y(1):.1f}" '
        'stroke="#999" stroke-dasharray="4 3"/>',
    ]
    width = span / max(1, len(bins))
    for i, b in enumerate(bins):
        if not b.get("count"):
            continue
        observed = float(b["observed"])
        parts.append(
            f'<rect x="{pad + i * width + 1:.1f}" y="{y(observed):.1f}" width="{width - 2:.1f}" '
            f'height="{observed * span:.1f}" fill="#2457c5" fill-opacity="0.55">'
            f"<title>bin {i + 1}: predicted {float(b['mean_predicted']):.2f}, "
            f"observed {observed:.2f}, "
            f"{int(b['count'])} pairs</title></rect>"
        )
    parts += [
        f'<text x="{size / 2:.0f}" y="{size - 6}" text-anchor="middle" font-size="11">'
        "predicted</text>",
        f'<text x="10" y="{size / 2:.0f}" font-size="11" transform="rotate(-90 10 {size / 2:.0f})" '
        'text-anchor="middle">observed</text>',
        "</svg>",
    ]
    return "".join(parts)


def _latest(version: ModelVersion) -> dict[str, EvalRun]:
    latest = {}
    runs = EvalRun.objects.filter(model_version=version, status=EvalRun.Status.SUCCEEDED)
    for run in runs.order_by("-finished_at"):
        latest.setdefault(run.suite, run)
    return latest


def comparison(a: ModelVersion, b: ModelVersion) -> list[dict]:
    """Suite by suite and category by category: the accuracy of a and of b, and the difference."""
    runs_a, runs_b = _latest(a), _latest(b)
    rows = []
    for suite in [s for s in EvalRun.Suite.values if s in runs_a or s in runs_b]:
        bars_a = (
            {bar["label"]: bar for bar in category_bars(runs_a[suite].results)}
            if suite in runs_a
            else {}
        )
        bars_b = (
            {bar["label"]: bar for bar in category_bars(runs_b[suite].results)}
            if suite in runs_b
            else {}
        )
        for label in dict.fromkeys([*bars_a, *bars_b]):
            va, vb = bars_a.get(label), bars_b.get(label)
            rows.append(
                {
                    "suite": EvalRun.Suite(suite).label,
                    "label": label,
                    "a": va,
                    "b": vb,
                    "diff": vb["accuracy"] - va["accuracy"] if va and vb else None,
                }
            )
    return rows


def data_efficiency_series() -> dict[str, list[tuple[int, float, int]]]:
    """(training comparisons, held-out accuracy, run id) per finished PM run, split by whether
    the run started from a PMP'd preference model."""
    series = {"with PMP": [], "without PMP": []}
    runs = TrainingRun.objects.filter(
        kind=TrainingRun.Kind.PM, status=TrainingRun.Status.SUCCEEDED, snapshot__isnull=False
    ).select_related("snapshot", "base_model")
    pmp_versions = set(
        TrainingRun.objects.filter(
            kind=TrainingRun.Kind.PMP, result_version__isnull=False
        ).values_list("result_version_id", flat=True)
    )
    for run in runs:
        accuracy = next(
            (
                m["eval_accuracy"]
                for m in reversed(run.metrics)
                if m.get("eval_accuracy") is not None
            ),
            None,
        )
        size = run.snapshot.counts.get("train_pairs") or run.snapshot.counts.get("pairs")
        if accuracy is None or not size:
            continue
        key = "with PMP" if run.base_model_id in pmp_versions else "without PMP"
        series[key].append((int(size), float(accuracy), run.pk))
    return {key: sorted(points) for key, points in series.items()}


def data_efficiency_svg(series: dict, width: int = 520, height: int = 300) -> str:
    """Held-out accuracy (0.4–1.0) against training comparisons on a log scale, one line per
    series."""
    import math

    points = [p for values in series.values() for p in values]
    if not points:
        return ""
    pad = 40
    lo, hi = math.log10(min(p[0] for p in points)), math.log10(max(p[0] for p in points))
    hi = hi if hi > lo else lo + 1

    def x(n):
        return pad + (math.log10(n) - lo) / (hi - lo) * (width - 2 * pad)

    def y(acc):
        return height - pad - (min(max(acc, 0.4), 1.0) - 0.4) / 0.6 * (height - 2 * pad)

    colours = {"with PMP": "#2457c5", "without PMP": "#c55a24"}
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {width} {height}" '
        f'width="{width}" height="{height}" role="img" aria-label="data efficiency">',
        f'<line x1="{pad}" y1="{y(0.5):.1f}" x2="{width - pad}" y2="{y(0.5):.1f}" '
        'stroke="#ccc" stroke-dasharray="3 3"/>',
    ]
    for name, values in series.items():
        if not values:
            continue
        path = " ".join(f"{x(n):.1f},{y(acc):.1f}" for n, acc, _ in values)
        parts.append(
            f'<polyline points="{path}" fill="none" stroke="{colours[name]}" stroke-width="2"/>'
        )
        for n, acc, run_id in values:
            parts.append(
                f'<circle cx="{x(n):.1f}" cy="{y(acc):.1f}" r="3.5" fill="{colours[name]}">'
                f"<title>run {int(run_id)}: {int(n)} comparisons, accuracy {acc:.3f}</title>"
                "</circle>"
            )
    for i, name in enumerate(series):
        parts.append(
            f'<text x="{pad + 5}" y="{pad - 20 + 14 * i}" font-size="12" '
            f'fill="{colours[name]}">{escape(name)}</text>'
        )
    parts.append(
        f'<text x="{width / 2:.0f}" y="{height - 8}" text-anchor="middle" font-size="11">'
        "training comparisons (log scale)</text></svg>"
    )
    return "".join(parts)
