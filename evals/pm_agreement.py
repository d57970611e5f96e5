"""The PM agreement report (issue 14): how often human judgements agree with the PM's blind
prediction (collection.pm_loop records one `PMAgreement` row per judgement), by PM version,
campaign, mode and contractor, next to each PM's held-out accuracy from its evals, and the
drift alarm of the active PM. It lives in evals because it reads eval runs and training runs;
collection records the agreement and never imports either."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from assistant.models import ModelVersion
from assistant.selectors import active_model
from collection.models import LoopSettings, PMAgreement
from collection.pm_loop import GROUPINGS, Agreement, AgreementRow, agreement_rows
from training.models import TrainingRun

from .models import EvalRun

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Drift(Agreement):
    pm_version: ModelVersion
    window: int
    held_out_accuracy: float | None
    margin: float

    @property
    def alarm(self) -> bool:
        """The last `window` judgements agree with the PM less than its held-out accuracy by
        more than `margin` (only once the window is full: a few judgements decide nothing)."""
        return (
            self.n >= self.window
            and self.held_out_accuracy is not None
            and self.rate is not None
            and self.rate < self.held_out_accuracy - self.margin
        )


def held_out_accuracy(pm: ModelVersion) -> float | None:
    """The PM's held-out accuracy: its latest succeeded held-out eval, else its training run's."""
    run = (
        EvalRun.objects.filter(
            model_version=pm, suite=EvalRun.Suite.HELD_OUT, status=EvalRun.Status.SUCCEEDED
        )
        .order_by("-finished_at")
        .only("results")
        .first()
    )
    cell = run.results.get("accuracy") if run is not None else None
    if isinstance(cell, dict):  # the suite's {"accuracy", "n", "low", "high", ...} cell
        cell = cell.get("accuracy")
    if isinstance(cell, int | float):
        return float(cell)
    if pm.training_run_id:
        training = TrainingRun.objects.filter(pk=pm.training_run_id).only("metrics").first()
        for entry in reversed((training.metrics if training else None) or []):
            if isinstance(entry, dict) and isinstance(entry.get("eval_accuracy"), int | float):
                return float(entry["eval_accuracy"])
    return None


def drift(pm: ModelVersion | None = None) -> Drift | None:
    """Agreement of the last N judgements with `pm` (default: the active PM) against its
    held-out accuracy; logs a warning when the alarm is on. None without a PM."""
    pm = pm or active_model(kind=ModelVersion.Kind.PM)
    if pm is None:
        return None
    loop = LoopSettings.current()
    recent = list(
        PMAgreement.objects.filter(pm_version=pm)
        .order_by("-created_at")
        .values_list("agrees", flat=True)[: loop.drift_window]
    )
    state = Drift(
        pm_version=pm,
        window=loop.drift_window,
        n=len(recent),
        agree=sum(recent),
        held_out_accuracy=held_out_accuracy(pm),
        margin=loop.drift_margin,
    )
    if state.alarm:
        logger.warning(
            "PM drift: %s agrees with %.3f of the last %d judgements, held-out accuracy %.3f "
            "(margin %.3f)",
            pm,
            state.rate,
            state.n,
            state.held_out_accuracy,
            state.margin,
        )
    return state


def _row(row: AgreementRow, by: str) -> dict:
    label = {
        "pm_version": row.key.get("pm_version__name"),
        "campaign": row.key.get("campaign__name"),
        "mode": row.key.get("mode"),
        "contractor": row.key.get("contractor__username"),
    }[by]
    ident = row.key.get(f"{by}_id", row.key.get(by))
    return {"id": ident, "label": label, **row.as_dict()}


def _drift(state: Drift | None) -> dict | None:
    if state is None:
        return None
    return {
        "pm_version": state.pm_version.pk,
        "pm_name": state.pm_version.name,
        "window": state.window,
        **state.as_dict(),
        "held_out_accuracy": state.held_out_accuracy,
        "margin": state.margin,
        "alarm": state.alarm,
    }


def agreement_report(*, campaign_id: int | None = None) -> dict:
    """Everything the page and the API show, as plain data (rows of one campaign when given;
    the drift state is the active PM's, whatever the campaign)."""
    by = {
        group: [_row(row, group) for row in agreement_rows(group, campaign_id=campaign_id)]
        for group in GROUPINGS
    }
    versions = ModelVersion.objects.in_bulk([row["id"] for row in by["pm_version"]])
    for row in by["pm_version"]:
        version = versions.get(row["id"])
        row["held_out_accuracy"] = held_out_accuracy(version) if version else None
    return {"groups": by, "drift": _drift(drift())}
