"""An experiment's numbers: every cell's accuracies (as counts with 95 % Wilson intervals),
calibration, run times and links; the curves, bars and verdicts drawn from them; the JSON and
CSV forms of all of it. Read-only.

Several seeds of one (condition, size) are pooled (their counts summed) for the curves and the
verdicts; each seed's own numbers stay in the cell table, the JSON and the CSV.
"""

from __future__ import annotations

import csv
import io

from django.urls import reverse

from evals.models import EvalRun
from evals.stats import binomial_ci

from .models import Experiment, ExperimentCell
from .spec import CONDITION_KINDS, PRETRAIN
from .verdicts import verdict

METRIC_LABELS = {
    "held_out": "held-out accuracy",
    "hhh": "HHH accuracy (with the HHH prompt, for LMs)",
    "hhh_unprompted": "HHH accuracy, no prompt",
}


def _counts(cell: dict | None, items: list | None = None) -> dict | None:
    """{"accuracy", "correct", "n", "low", "high"(, "items")} of a results cell."""
    if not cell or not cell.get("n") or cell.get("correct") is None:
        return None
    low, high = binomial_ci(int(cell["correct"]), int(cell["n"]))
    counts = {
        "accuracy": cell["correct"] / cell["n"],
        "correct": int(cell["correct"]),
        "n": int(cell["n"]),
        "low": low,
        "high": high,
    }
    if items:
        counts["items"] = {f"{r['category']}/{r['index']}": bool(r["correct"]) for r in items}
    return counts


def _training_held_out(run) -> dict | None:
    """The run's last held-out evaluation (every kind makes one: a PM's reward, an imitation
    LM's log-likelihood), as counts: the final one is in its version's metadata (the history
    has the evaluations made between steps)."""
    final = (run.result_version.metadata.get("metrics") or {}) if run.result_version else {}
    for metrics in [final, *reversed(run.metrics or [])]:
        if metrics.get("eval_accuracy") is not None and metrics.get("eval_pairs"):
            n = int(metrics["eval_pairs"])
            return _counts({"correct": round(metrics["eval_accuracy"] * n), "n": n})
    return None


def _seconds(job) -> float | None:
    if job is None or not (job.started_at and job.finished_at):
        return None
    return (job.finished_at - job.started_at).total_seconds()


def cell_numbers(cell: ExperimentCell) -> dict:
    """Everything measured on one cell, with links to its runs and model version."""
    run = cell.training_run
    row = {
        "id": cell.pk,
        "condition": cell.condition,
        "kind": cell.kind,
        "size": cell.size,
        "size_label": cell.size_label,
        "seed": cell.seed,
        "status": cell.status,
        "error": cell.error,
        "reused": cell.reused,
        "training_run": run.pk if run else None,
        "training_url": reverse("training:run", args=[run.pk]) if run else None,
        "model_version": cell.model_version_id,
        "model_url": reverse("evals:model", args=[cell.model_version_id])
        if cell.model_version_id
        else None,
        "train_seconds": _seconds(run),
        "eval_seconds": {},
        "eval_runs": {},
        "metrics": {},
        "categories": {},
        "calibration": None,
    }
    for wanted in cell.evals.all():
        eval_run = wanted.eval_run
        if eval_run is None:
            continue
        row["eval_runs"][wanted.suite] = eval_run.pk
        row["eval_seconds"][wanted.suite] = _seconds(eval_run)
        if eval_run.status != EvalRun.Status.SUCCEEDED:
            continue
        results = eval_run.results
        row["metrics"][wanted.suite] = _counts(results.get("overall"), results.get("items"))
        row["categories"][wanted.suite] = {
            name: _counts(value) for name, value in results.get("categories", {}).items()
        }
        if results.get("calibration"):
            row["calibration"] = results["calibration"]
    if row["metrics"].get("held_out") is None and run is not None:
        row["metrics"]["held_out"] = _training_held_out(run)
    return row


def _pooled(rows: list[dict], metric: str) -> dict | None:
    """The counts of `metric` summed over rows (seeds); items only when there is one row."""
    found = [r["metrics"].get(metric) for r in rows]
    if not found or any(f is None for f in found):
        return None
    if len(found) == 1:
        return found[0]
    return _counts({"correct": sum(f["correct"] for f in found), "n": sum(f["n"] for f in found)})


def _x(size, train_rankings: int) -> int:
    return train_rankings if size is None else size


def curves(rows: list[dict], metric: str, train_rankings: int) -> dict[str, list[tuple]]:
    """{condition: [(training comparisons, accuracy, low, high), …]} of sized conditions."""
    series: dict[str, list[tuple]] = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == condition]
        if mine[0]["kind"] == "pmp" or not CONDITION_KINDS[mine[0]["kind"]][2]:
            continue
        points = []
        for size in dict.fromkeys(r["size"] for r in mine):
            pooled = _pooled([r for r in mine if r["size"] == size], metric)
            if pooled:
                points.append(
                    (_x(size, train_rankings), pooled["accuracy"], pooled["low"], pooled["high"])
                )
        if points:
            series[condition] = sorted(points)
    return series


def category_groups(rows: list[dict], train_rankings: int) -> dict[str, dict[str, dict]]:
    """{category: {"condition (suite)": counts}} at each condition's largest size, for the HHH
    bars; categories summed over seeds."""
    groups: dict[str, dict[str, dict]] = {}
    for condition in dict.fromkeys(r["condition"] for r in rows):
        mine = [r for r in rows if r["condition"] == condition]
        largest = max(mine, key=lambda r: _x(r["size"], train_rankings))["size"]
        at = [r for r in mine if r["size"] == largest]
        for suite in ("hhh", "hhh_unprompted"):
            cats = [r["categories"].get(suite) for r in at]
            if not cats or any(c is None for c in cats):
                continue
            for category in cats[0]:
                values = [c.get(category) for c in cats]
                if any(v is None for v in values):
                    continue
                pooled = _pooled([{"metrics": {"m": v}} for v in values], "m")
                label = condition if suite == "hhh" else f"{condition}, no prompt"
                groups.setdefault(category, {})[label] = pooled
    return groups


def _side_rows(rows, condition, size_rule, train_rankings, other):
    """The rows of `condition` at the size a finding asks for (a condition without sizes: its
    only cell); `other` is the other side's condition, whose sizes "largest" is shared with."""
    mine = [r for r in rows if r["condition"] == condition]
    if not mine:
        return []
    sizes = {r["size"] for r in mine}
    if len(sizes) == 1:
        return mine
    theirs = {r["size"] for r in rows if r["condition"] == other}
    common = sizes & theirs if len(theirs) > 1 else sizes
    ordered = sorted(common or sizes, key=lambda s: _x(s, train_rankings))
    if size_rule == "largest":
        size = ordered[-1]
    elif size_rule == "smallest":
        size = ordered[0]
    elif size_rule == "all":
        size = None
    else:
        size = int(size_rule)
    return [r for r in mine if r["size"] == size]


def findings(spec: dict, rows: list[dict]) -> list[dict]:
    """The verdict on each finding of the spec, from the cells' numbers."""
    n = spec["train_rankings"]
    verdicts = []
    for finding in spec.get("findings", []):
        a, b = finding["a"], finding["b"]

        def side(which, rule, finding=finding):
            mine, other = finding[which], finding["b" if which == "a" else "a"]
            picked = _side_rows(rows, mine["condition"], rule, n, other["condition"])
            return _pooled(picked, mine["eval"]) if picked else None

        if finding["test"] == "gain_shrinks":
            sides = {
                "a_small": side("a", "smallest"),
                "b_small": side("b", "smallest"),
                "a_large": side("a", "largest"),
                "b_large": side("b", "largest"),
            }
        else:
            sides = {"a": side("a", finding["size"]), "b": side("b", finding["size"])}
        verdicts.append(verdict({**finding, "a": a, "b": b}, sides))
    return verdicts


def experiment_report(experiment: Experiment) -> dict:
    """Every number of the experiment, as the page, the JSON and the CSV show them."""
    cells = experiment.cells.select_related("training_run__result_version").prefetch_related(
        "evals__eval_run"
    )
    rows = [cell_numbers(cell) for cell in cells]
    spec = experiment.spec
    n = spec["train_rankings"]
    return {
        "experiment": {
            "id": experiment.pk,
            "name": experiment.name,
            "status": experiment.status,
            "error": experiment.error,
            "snapshot": experiment.snapshot_id,
            "snapshot_hash": experiment.snapshot.content_hash,
            "cells_done": experiment.cells_done,
            "cells_total": experiment.cells_total,
            "created_at": experiment.created_at.isoformat(),
            "started_at": experiment.started_at.isoformat() if experiment.started_at else None,
            "finished_at": experiment.finished_at.isoformat() if experiment.finished_at else None,
        },
        "setup": setup(spec),
        "cells": rows,
        "curves": {metric: curves(rows, metric, n) for metric in METRIC_LABELS},
        "hhh_categories": category_groups([r for r in rows if r["condition"] != PRETRAIN], n),
        "findings": findings(spec, rows),
    }


def setup(spec: dict) -> dict:
    """What was trained and how: the report prints it next to the numbers."""
    return {
        "backbone": spec["backbone"],
        "sizes": ["all" if s is None else s for s in spec["sizes"]],
        "train_rankings": spec["train_rankings"],
        "seeds": spec["seeds"],
        "config": spec["config"],
        "eval_options": spec.get("eval_options", {}),
        "conditions": [
            {
                "name": c["name"],
                "kind": c["kind"],
                "evals": c["evals"],
                "config": c["config"],
                "backbone": c.get("backbone") or spec["backbone"],
            }
            for c in spec["conditions"]
        ],
        "pmp": spec.get("pmp"),
        "notes": spec.get("notes", ""),
    }


CSV_COLUMNS = [
    "cell",
    "condition",
    "kind",
    "size",
    "seed",
    "status",
    "reused",
    "training_run",
    "model_version",
    "train_seconds",
    "metric",
    "category",
    "accuracy",
    "correct",
    "n",
    "low",
    "high",
]


def report_csv(report: dict) -> str:
    """One line per cell, metric and category (overall included) with its counts."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(CSV_COLUMNS)
    for row in report["cells"]:
        head = [
            row["id"],
            row["condition"],
            row["kind"],
            row["size_label"],
            row["seed"],
            row["status"],
            row["reused"],
            row["training_run"],
            row["model_version"],
            row["train_seconds"],
        ]
        for metric, counts in row["metrics"].items():
            entries = [("overall", counts), *row["categories"].get(metric, {}).items()]
            for category, value in entries:
                if value is None:
                    writer.writerow([*head, metric, category, "", "", "", "", ""])
                    continue
                writer.writerow(
                    [
                        *head,
                        metric,
                        category,
                        value["accuracy"],
                        value["correct"],
                        value["n"],
                        value["low"],
                        value["high"],
                    ]
                )
    return out.getvalue()


def report_json(report: dict) -> dict:
    """The report without per-item outcomes (kept in the eval runs themselves)."""
    cells = []
    for row in report["cells"]:
        metrics = {
            metric: ({k: v for k, v in counts.items() if k != "items"} if counts else None)
            for metric, counts in row["metrics"].items()
        }
        cells.append({**row, "metrics": metrics})
    return {**report, "cells": cells}
